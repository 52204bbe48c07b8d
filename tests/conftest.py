import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Test helpers (independent reference implementations, fixture builders) live in
# tests/helpers and are imported by module name.
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

import pytest


def keyseg(*args) -> subprocess.CompletedProcess:
    """Run the `keyseg` command (`python -m cli` is what its console script runs)."""
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})


@dataclass
class DemoChain:
    """The folders of one run of the demo data chain, and what each command printed."""

    root: Path
    data: Path  # `keyseg demo-data` output, with the mined keywords in explanatory_key/
    prepared: Path
    shards: Path
    runs: dict[str, subprocess.CompletedProcess]  # step name -> its finished command


@pytest.fixture(scope="session")
def demo_chain(tmp_path_factory) -> DemoChain:
    """The demo data chain, run once per session through the `keyseg` command.

    demo-data -> prepare -> heuristic keywords -> shard (3 samples a shard, so splits have
    several shards of uneven size) -> verify -> stats. Every test that needs demo data or
    shards reads these folders; a test that changes them works on a copy.
    """
    root = tmp_path_factory.mktemp("demo_chain")
    data, prepared, shards = root / "data", root / "prepared", root / "shards"
    steps = {
        "demo-data": ["demo-data", "--out", str(data), "--images", "16"],
        "prepare": ["prepare", "--data-dir", str(data), "--out", str(prepared), "--visualize", "2",
                    "--workers", "2"],
        "mine-keywords": ["mine-keywords", "generate", "--input", str(data / "reason_seg/ReasonSeg/explanatory/train.json"),
                          "--backend", "heuristic", "--no-progress"],
        "shard": ["shard", "--prepared", str(prepared), "--out", str(shards), "--maxcount", "3", "--workers", "2"],
        "verify": ["shards", "verify", "--shards", str(shards), "--no-progress"],
        "stats": ["shards", "stats", "--shards", str(shards)],
    }
    runs = {}
    for name, args in steps.items():
        runs[name] = keyseg(*args)
        assert runs[name].returncode == 0, f"keyseg {name} failed:\n{runs[name].stderr[-3000:]}"
    return DemoChain(root=root, data=data, prepared=prepared, shards=shards, runs=runs)


@pytest.fixture(scope="session")
def demo_shards(demo_chain) -> Path:
    """The demo chain's shard set folder; its parent holds data/ and prepared/."""
    return demo_chain.shards
