"""The shard set's `index.json`: the one reader (the writer is `keyseg shard`).

Shard paths in an index are plain relative files inside the shard set folder. An index
comes with a downloaded shard set, so a `pipe:` command, a URL or an absolute path in it
is refused: those are accepted only when a user types them on the command line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from keyseg.errors import DataError, UsageError
from keyseg.paths import confined_path

INDEX_NAME = "index.json"
# "pipe:", "http:", "s3:", "file:" ...: a scheme, however the rest is spelled.
URL_OR_COMMAND = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def read_index(folder: str | Path) -> dict:
    """The parsed index of a shard set folder (or of an index.json path), checked for shape."""
    folder = Path(folder)
    path = folder if folder.name == INDEX_NAME and folder.is_file() else folder / INDEX_NAME
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, f"not found (is {path.parent} a shard set written by keyseg shard?)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(path, f"not valid JSON ({error})") from None
    if not isinstance(index, dict) or not isinstance(index.get("splits"), dict):
        raise DataError(path, "no 'splits' object")
    for name, split in index["splits"].items():
        shards = split.get("shards") if isinstance(split, dict) else None
        if not isinstance(shards, list) or not all(isinstance(s, dict) and isinstance(s.get("path"), str)
                                                   for s in shards):
            raise DataError(path, f"split {name!r}: 'shards' must be a list of objects with a 'path' string")
    return index


def index_path(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder if folder.name == INDEX_NAME and folder.is_file() else folder / INDEX_NAME


def shard_path(folder: str | Path, entry: dict) -> Path:
    """The local file of one index entry, confined to the shard set folder.

    Absolute, so that no reader can take a relative name such as `pipe:cmd` for a URL."""
    path = index_path(folder)
    if URL_OR_COMMAND.match(entry["path"]):
        raise DataError(path, f"shard path {entry['path']!r} is a URL or command; an index names plain "
                              "files inside its folder (give URLs and pipe: on the command line)")
    return confined_path(path.parent, entry["path"], source=path).absolute()


def split_shard_paths(folder: str | Path, names: str | list[str], index: dict | None = None) -> dict[str, list[Path]]:
    """Shard files per split name; an unknown split is a usage error naming the ones there are."""
    index = read_index(folder) if index is None else index
    names = [names] if isinstance(names, str) else list(names)
    found = {}
    for name in names:
        if name not in index["splits"]:
            raise UsageError(f"{index_path(folder)} has no split {name!r} "
                             f"(has: {', '.join(sorted(index['splits'])) or 'none'})")
        found[name] = [shard_path(folder, entry) for entry in index["splits"][name]["shards"]]
    return found


def split_sample_count(index: dict, name: str) -> int | None:
    """Samples the index records for a split (None for an index without counts)."""
    shards = index["splits"][name]["shards"]
    counts = [entry.get("samples") for entry in shards]
    return sum(counts) if all(isinstance(c, int) for c in counts) else None
