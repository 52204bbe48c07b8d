"""Paths that come from data files, confined to the folder they belong to.

A manifest, an `instances.json` or a shard set's `index.json` is written by someone else.
A path read from it is accepted only as a relative path that stays inside its root once
resolved (symbolic links included); anything else is a `DataError` for that record.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from keyseg.errors import DataError

# Keys and ids that become file names: no separators, no leading dot, bounded length.
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,199}$")


def confined_path(root: str | os.PathLike, relative: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    """`root / relative`, refused unless it stays inside `root`.

    `source` names the data file the path came from, for the error message."""
    text = str(relative)
    where = source if source is not None else root
    if not text or "\x00" in text:
        raise DataError(where, f"path {text!r} is empty or has a NUL byte")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise DataError(where, f"path {text!r} is absolute; only paths inside {root} are read")
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        raise DataError(where, f"path {text!r} leaves {root}")
    root_path = Path(root)
    candidate = root_path / text
    resolved_root = root_path.resolve()
    resolved = candidate.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise DataError(where, f"path {text!r} resolves outside {root} (a symbolic link?)")
    return candidate


def is_plain_name(name: str) -> bool:
    """True for a name that is safe as one file name component (sample keys, prediction ids)."""
    return isinstance(name, str) and bool(PLAIN_NAME.match(name)) and name not in (".", "..")
