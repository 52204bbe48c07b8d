"""A read-only folder, a full disk and a folder we may not write to: one line naming the
path and the reason, exit 1, never a traceback.

The hostile environments are real: a read-only or 16 KiB tmpfs mounted in a private
mount namespace (`unshare -rm`), and a process that dropped root (`setpriv`). Where the
machine does not allow them the test is skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

KEYSEG = str(Path(sys.executable).with_name("keyseg"))


def _can(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def world():
    """A world-readable folder holding a small demo data set (a dropped-root process must read it)."""
    root = Path(tempfile.mkdtemp(prefix="keyseg-env-"))
    root.chmod(0o755)
    done = subprocess.run([KEYSEG, "demo-data", "--out", str(root / "data"), "--images", "8"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _in_tmpfs(options: str, mountpoint: Path, command: list[str]) -> subprocess.CompletedProcess:
    if not _can(["unshare", "-rm", "true"]):
        pytest.skip("no private mount namespace here (unshare -rm refused)")
    mountpoint.mkdir(parents=True, exist_ok=True)
    script = f'mount -t tmpfs -o {options} tmpfs "$1" && shift && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(mountpoint), *command],
                          capture_output=True, text=True, timeout=300)


def _as_nobody(command: list[str]) -> subprocess.CompletedProcess:
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    if os.geteuid() != 0 or not _can(drop + ["true"]):
        pytest.skip("cannot drop to an unprivileged user here")
    if not _can(drop + [KEYSEG, "--help"]):
        pytest.skip("an unprivileged user cannot run this checkout (a private folder above it)")
    return subprocess.run(drop + command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": "/nonexistent"})


def _one_error_line(done: subprocess.CompletedProcess, path: Path, reason: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(path) in lines[0] and reason in lines[0], done.stderr[-2000:]


def commands(world: Path, out: Path) -> dict[str, list[str]]:
    train_json = world / "data/reason_seg/ReasonSeg/explanatory/train.json"
    return {
        "prepare": [KEYSEG, "prepare", "--data-dir", str(world / "data"), "--out", str(out / "prepared"),
                    "--workers", "1", "--no-progress"],
        "mine-keywords": [KEYSEG, "mine-keywords", "generate", "--input", str(train_json), "--backend", "heuristic",
                          "--out", str(out / "keywords.json"), "--no-cache", "--no-progress"],
        "demo-data": [KEYSEG, "demo-data", "--out", str(out / "data"), "--images", "8"],
    }


@pytest.mark.parametrize("stage", ["prepare", "mine-keywords", "demo-data"])
def test_a_read_only_output_folder(world, tmp_path, stage):
    out = world / f"ro-{stage}"
    done = _in_tmpfs("ro", out, commands(world, out)[stage])
    _one_error_line(done, out, "Read-only file system")


@pytest.mark.parametrize("stage", ["prepare", "mine-keywords", "demo-data"])
def test_a_full_disk(world, stage):
    out = world / f"full-{stage}"
    done = _in_tmpfs("size=4k", out, commands(world, out)[stage])
    _one_error_line(done, out, "No space left on device")


@pytest.mark.parametrize("stage", ["prepare", "mine-keywords", "demo-data"])
def test_a_folder_we_may_not_write(world, stage):
    out = world / f"denied-{stage}"
    out.mkdir()  # root's, 0755: the unprivileged process may read it, not write it
    done = _as_nobody(commands(world, out)[stage])
    _one_error_line(done, out, "Permission denied")
