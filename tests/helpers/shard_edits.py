"""Hostile edits of a copied shard set: raw tar members (any name), truncation, edited json.

Tests copy the session's demo shard set (`copy_shard_set`) and break the copy in exactly
the way they need; the originals stay untouched for the other tests.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path


def copy_shard_set(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def read_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(info.name, tar.extractfile(info).read()) for info in tar.getmembers() if info.isfile()]


def write_members(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A tar holding exactly `members`, names taken as they are (`../x.jpg` included)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def edit_sample_json(path: Path, key: str, edit) -> None:
    """Rewrite sample `key`'s json in shard `path` with `edit(document)` (edits in place)."""
    members = []
    for name, data in read_members(path):
        if name == f"{key}.json":
            document = json.loads(data)
            edit(document)
            data = json.dumps(document).encode()
        members.append((name, data))
    write_members(path, members)


def truncate_inside_second_sample(path: Path) -> None:
    """Cut the shard inside its second sample's image: the first sample stays readable."""
    data = path.read_bytes()
    members = read_members(path)
    # USTAR: a 512-byte header per member, data padded to 512; members jpg, json per sample.
    offset = 0
    for _, member in members[:2]:
        offset += 512 + -(-len(member) // 512) * 512
    path.write_bytes(data[: offset + 512 + 100])


def keys_of(path: Path) -> list[str]:
    return sorted({name.split(".", 1)[0] for name, _ in read_members(path)})


def shard_files(shards: Path, split: str) -> list[Path]:
    index = json.loads((shards / "index.json").read_text())
    return [shards / entry["path"] for entry in index["splits"][split]["shards"]]


def poison_index_path(shards: Path, split: str, marker: Path) -> None:
    """Make the split's first shard path in index.json a `pipe:` command that would create `marker`."""
    index = json.loads((shards / "index.json").read_text())
    first = index["splits"][split]["shards"][0]
    first["path"] = f"pipe:touch {marker}; cat {first['path']}"
    (shards / "index.json").write_text(json.dumps(index))
