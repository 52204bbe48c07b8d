"""`keyseg shards unpack --shard FILE --out DIR`: a shard's members as files, for inspection.

Member names that could leave DIR (absolute, `..`, links, devices) are refused before
anything is written (`keyseg.shards.tario.unpack_shard`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from keyseg.runner import StageResult, activity
from keyseg.shards.tario import unpack_shard


@dataclass
class UnpackConfig:
    shard: Path  # one .tar shard
    out: Path
    show_progress: bool = True


@dataclass
class UnpackResult(StageResult):
    written: list[Path]


def run(config: UnpackConfig, console: Console | None = None) -> UnpackResult:
    console = console or Console(stderr=True)
    with activity(console, config.show_progress, f"unpacking {config.shard}"):
        written = unpack_shard(config.shard, config.out)
    console.print(f"{len(written)} files written to {escape(str(config.out))}", soft_wrap=True)
    return UnpackResult(written=written)
