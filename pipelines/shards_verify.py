"""`keyseg shards verify DIR`: re-hash every shard and decode every sample.

Reports truncated or corrupt shards (hash, size or tar structure), unsafe member names,
and bad samples (missing members, unreadable JSON, undecodable image, RLE of the wrong
size), each with shard and key. Writes DIR/verify_report.json; exit code 1 on any problem.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keyseg.images import ImageError, image_info
from keyseg.io import atomic_write_json
from keyseg.shards.samples import decode_mask
from keyseg.shards.tario import UnsafeMemberError, iter_samples


@dataclass
class VerifyConfig:
    shards: Path  # a shard set folder with index.json
    decode_images: bool = True  # full OpenCV decode of every image (else header only)
    show_progress: bool = True


@dataclass
class VerifyResult:
    shards: int
    samples: int
    problems: list[dict]


def load_index(folder: Path) -> dict:
    path = Path(folder) / "index.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found (is {folder} a shard set written by keyseg shard?)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from None


def check_sample(key: str, members: dict[str, bytes], decode_images: bool) -> str | None:
    """Why a sample is bad, or None."""
    if set(members) != {"jpg", "json"}:
        return f"members {sorted(members)} (expected jpg and json)"
    try:
        sample = json.loads(members["json"].decode("utf-8"))
        width, height, targets = sample["width"], sample["height"], sample["targets"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        return f"unreadable json ({type(error).__name__}: {error})"
    if sample.get("id") != key:
        return f"json id {sample.get('id')!r} differs from the key"
    try:
        info = image_info(members["jpg"], decode=decode_images)
    except ImageError as error:
        return f"image: {error}"
    if (info.width, info.height) != (width, height):
        return f"image is {info.width}x{info.height}, json says {width}x{height}"
    for index, target in enumerate(targets):
        try:
            mask = decode_mask(target["mask"])
        except Exception as error:  # pycocotools raises assorted types on bad RLE
            return f"target {index}: undecodable mask ({type(error).__name__}: {error})"
        if mask.shape != (height, width):
            return f"target {index}: mask is {mask.shape[1]}x{mask.shape[0]}, image {width}x{height}"
    return None


def _verify_shard(folder: Path, shard: dict, name: str, decode_images: bool, problems: list[dict]) -> int:
    path = folder / shard["path"]
    where = {"split": name, "shard": shard["path"]}
    if not path.is_file():
        problems.append({**where, "key": None, "problem": "missing shard"})
        return 0
    data = path.read_bytes()
    if len(data) != shard["bytes"]:
        problems.append({**where, "key": None, "problem": f"size {len(data)} bytes, index says {shard['bytes']} "
                                                         "(truncated or rewritten)"})
    elif hashlib.sha256(data).hexdigest() != shard["sha256"]:
        problems.append({**where, "key": None, "problem": "sha256 differs from the index (corrupt)"})
    count = 0
    import io

    try:
        for key, members in iter_samples(io.BytesIO(data)):
            count += 1
            reason = check_sample(key, members, decode_images)
            if reason:
                problems.append({**where, "key": key, "problem": reason})
    except (tarfile.TarError, UnsafeMemberError, EOFError, OSError) as error:
        problems.append({**where, "key": None, "problem": f"unreadable tar after {count} samples ({error})"})
    if count != shard["samples"]:
        problems.append({**where, "key": None, "problem": f"{count} samples, index says {shard['samples']}"})
    return count


def run(config: VerifyConfig, console: Console | None = None) -> VerifyResult:
    console = console or Console(stderr=True)
    folder = Path(config.shards)
    index = load_index(folder)
    shards = [(name, shard) for name, split in index["splits"].items() for shard in split["shards"]]
    problems: list[dict] = []
    samples = 0
    columns = (TextColumn("[bold]verify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not config.show_progress) as progress:
        bar = progress.add_task("verify", total=len(shards))
        for name, shard in shards:
            samples += _verify_shard(folder, shard, name, config.decode_images, problems)
            progress.advance(bar)
    indexed = {shard["path"] for _, shard in shards}
    for path in sorted(folder.glob("*/*/*.tar")):
        if path.relative_to(folder).as_posix() not in indexed:
            problems.append({"split": None, "shard": path.relative_to(folder).as_posix(), "key": None,
                             "problem": "shard not listed in index.json"})
    result = VerifyResult(shards=len(shards), samples=samples, problems=problems)
    atomic_write_json(folder / "verify_report.json",
                      {"shards": len(shards), "samples": samples, "ok": not problems, "problems": problems})
    table = Table(title=f"keyseg shards verify {folder}", box=box.SIMPLE_HEAD)
    for column in ("shards", "samples", "problems"):
        table.add_column(column, justify="right")
    table.add_row(str(len(shards)), str(samples), f"[red]{len(problems)}[/]" if problems else "[green]0")
    console.print(table)
    for problem in problems[:30]:
        console.print(f"[red]{problem['shard']}[/] {problem['key'] or ''}: {problem['problem']}")
    return result
