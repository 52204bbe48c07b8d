"""Deterministic tar shards in, safe tar members out.

Writing: members in a fixed order with fixed metadata (mtime 0, uid/gid 0, no user
names, mode 0444), so the same samples give byte-identical shards; each shard is written
under a temporary name and renamed when complete, so a shard that exists is whole.

Reading: member names come from files we may not have written. A name is accepted
only if it is a plain `<key>.<ext>` file name: no folder, no `..`, not absolute, no
links or devices. Nothing read from a shard can reach outside the folder it is
unpacked into.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from keyseg.errors import DataError

MEMBER_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_+-]*\.[A-Za-z0-9_.]+$")


class UnsafeMemberError(DataError):
    """A tar member whose name or type could escape the folder it is unpacked into (a bad
    input file: exit 1). `shard` names the file when known."""

    def __init__(self, reason: str, shard: str | os.PathLike | None = None):
        super().__init__(shard, reason)


# What reading a damaged tar can raise (tarfile's own errors, a short read, a refused name).
TAR_ERRORS = (tarfile.TarError, UnsafeMemberError, EOFError, OSError)


def problem_line(problem: dict) -> str:
    """One line for a bad shard or sample found by verify or stats: "shard key: problem"."""
    key = f" {problem['key']}" if problem["key"] else ""
    return f"{problem['shard']}{key}: {problem['problem']}"


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    samples: int
    bytes: int
    sha256: str


class _HashingWriter:
    """A write-only file that hashes and counts what passes through."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def _member(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardWriter:
    """Writes samples into `pattern % index` tar files of at most `maxcount` samples and
    about `maxsize` bytes (a shard closes once it reaches either)."""

    def __init__(self, pattern: str | Path, maxcount: int, maxsize: int):
        if maxcount < 1 or maxsize < 1:
            raise ValueError("maxcount and maxsize must be positive")
        self.pattern = str(pattern)
        self.maxcount, self.maxsize = maxcount, maxsize
        self.shards: list[ShardInfo] = []
        self._tar = self._file = self._writer = None
        self._count = 0
        self._path: Path | None = None

    def _open(self) -> None:
        self._path = Path(self.pattern % len(self.shards))
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._temp_path(self._path), "wb")
        self._writer = _HashingWriter(self._file)
        self._tar = tarfile.open(fileobj=self._writer, mode="w|", format=tarfile.USTAR_FORMAT)
        self._count = 0

    @staticmethod
    def _temp_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.tmp")

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """One sample: `members` maps extension -> bytes, written in sorted extension order."""
        if "." in key or "/" in key or not MEMBER_NAME.match(f"{key}.x"):
            raise ValueError(f"sample key {key!r} must be a plain name without dots")
        if self._tar is None:
            self._open()
        for extension in sorted(members):
            data = members[extension]
            self._tar.addfile(_member(f"{key}.{extension}", data), io.BytesIO(data))
        self._count += 1
        if self._count >= self.maxcount or self._writer.size >= self.maxsize:
            self._finish()

    def _finish(self) -> None:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp_path(self._path), self._path)
        self.shards.append(ShardInfo(self._path, self._count, self._writer.size, self._writer.digest.hexdigest()))
        self._tar = self._file = self._writer = None

    def close(self) -> list[ShardInfo]:
        if self._tar is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the shard being written (on error or Ctrl-C): no partial file remains."""
        if self._file is not None:
            self._file.close()
            self._temp_path(self._path).unlink(missing_ok=True)
            self._tar = self._file = self._writer = None


def check_member(info: tarfile.TarInfo) -> str:
    """The member's name if it is a plain file named `<key>.<ext>`, else UnsafeMemberError."""
    name = info.name
    if not info.isfile():
        raise UnsafeMemberError(f"member {name!r} is not a regular file (type {info.type!r})")
    if "/" in name or "\\" in name or name.startswith(".") or ".." in name.split("/") or not MEMBER_NAME.match(name):
        raise UnsafeMemberError(f"member name {name!r} is not a plain <key>.<ext> file name")
    return name


def iter_members(fileobj: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each member of a tar stream, names checked by `check_member`."""
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for info in tar:
            name = check_member(info)
            handle = tar.extractfile(info)
            yield name, handle.read() if handle else b""


def iter_samples(fileobj: BinaryIO) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample; members of one sample are adjacent.

    When the tar breaks, the sample read completely before the break is still yielded,
    then the error is raised."""
    key, members = None, {}
    try:
        for name, data in iter_members(fileobj):
            member_key, extension = name.split(".", 1)
            if member_key != key and key is not None:
                yield key, members
                members = {}
            key = member_key
            members[extension] = data
    except (tarfile.TarError, EOFError, OSError):
        if key is not None:
            yield key, members
        raise
    if key is not None:
        yield key, members


def _checked_names(shard: Path) -> list[str]:
    """Every member name of a shard, each checked; raises before anything is written."""
    names = []
    try:
        with open(shard, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            for info in tar:
                names.append(check_member(info))
    except tarfile.TarError as error:
        raise UnsafeMemberError(f"not a readable tar ({error})") from None
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UnsafeMemberError(f"member {duplicates[0]!r} appears more than once")
    return names


def unpack_shard(shard: Path, out: Path) -> list[Path]:
    """Extract a shard's members into `out`. Every name is checked first: if any member is
    refused (or the tar is unreadable), nothing is written."""
    from keyseg.io import atomic_write_bytes

    try:
        names = _checked_names(Path(shard))
    except UnsafeMemberError as error:
        raise UnsafeMemberError(error.reason, shard) from None
    out = Path(out).resolve()
    for name in names:
        if (out / name).resolve().parent != out:  # belt and braces: check_member refused this
            raise UnsafeMemberError(f"member {name!r} would land outside {out}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with open(shard, "rb") as handle:
        for name, data in iter_members(handle):
            written.append(atomic_write_bytes(out / name, data))
    return written
