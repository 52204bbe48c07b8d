"""A shard set folder: `index.json` (the one reader and writer) and its dataset card.

    <folder>/index.json                       every split, its shards (path, samples, bytes,
                                              sha256), the inputs and config that made them
    <folder>/README.md                        Hugging Face dataset card (keyseg.shards.card)
    <folder>/<source>/<split>/*.tar           WebDataset shards (keyseg.shards.samples)

Shard paths in an index are plain relative files inside the shard set folder. An index
comes with a downloaded shard set, so a `pipe:` command, a URL or an absolute path in it
is refused: those are accepted only when a user types them on the command line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from keyseg.errors import DataError, UsageError
from keyseg.io import atomic_write_json, atomic_write_text
from keyseg.paths import confined_path

INDEX_NAME = "index.json"
CARD_NAME = "README.md"
# "pipe:", "http:", "s3:", "file:" ...: a scheme, however the rest is spelled.
URL_OR_COMMAND = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def read_index(folder: str | Path) -> dict:
    """The parsed index of a shard set folder (or of an index.json path), checked for shape."""
    path = index_path(folder)
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


def split_sample_count(index: dict, name: str) -> int | None:
    """Samples the index records for a split (None for an index without counts)."""
    shards = index["splits"][name]["shards"]
    counts = [entry.get("samples") for entry in shards]
    return sum(counts) if all(isinstance(c, int) for c in counts) else None


def split_parts(index: dict, name: str) -> tuple[str, str]:
    """(source, split) of a "source:split" name: as recorded, else from the name."""
    split = index["splits"][name]
    source, _, part = name.partition(":")
    recorded = split.get("source"), split.get("split")
    return (recorded[0], recorded[1]) if all(isinstance(v, str) and v for v in recorded) else (source, part)


class ShardSet:
    """A shard set folder as every stage sees it: its splits and sources, each split's
    shard files (confined to the folder) and sample counts. Open one with `ShardSet.open`."""

    def __init__(self, folder: Path, index: dict):
        self.folder = folder  # the folder holding index.json
        self.index = index

    @classmethod
    def open(cls, folder: str | Path) -> ShardSet:
        """The shard set in `folder` (or at an index.json path); DataError if its index is bad."""
        index = read_index(folder)
        return cls(index_path(folder).parent, index)

    @property
    def index_file(self) -> Path:
        return self.folder / INDEX_NAME

    @property
    def splits(self) -> list[str]:
        """"source:split" names, in index order."""
        return list(self.index["splits"])

    @property
    def sources(self) -> list[str]:
        """Source names, in the order their first split appears."""
        return list(dict.fromkeys(self.source_and_split(name)[0] for name in self.splits))

    def source_and_split(self, name: str) -> tuple[str, str]:
        return split_parts(self.index, name)

    def entries(self, name: str) -> list[dict]:
        """The index entries (path, samples, bytes, sha256) of one split's shards."""
        return self.index["splits"][name]["shards"]

    def shard_path(self, entry: dict) -> Path:
        """The file of one entry; DataError for a URL, a command or a path leaving the folder."""
        return shard_path(self.folder, entry)

    def shard_paths(self, names: str | list[str], must_exist: bool = False) -> dict[str, list[Path]]:
        """Shard files per split. An unknown split is a UsageError naming the ones there are;
        with `must_exist`, a missing shard is a DataError before any work starts."""
        names = [names] if isinstance(names, str) else list(names)
        found = {}
        for name in names:
            if name not in self.index["splits"]:
                raise UsageError(f"{self.index_file} has no split {name!r} "
                                 f"(has: {', '.join(sorted(self.index['splits'])) or 'none'})")
            found[name] = [self.shard_path(entry) for entry in self.entries(name)]
        if must_exist:
            for name, paths in found.items():
                for path in paths:
                    if not path.is_file():
                        raise DataError(self.index_file, f"split {name}: shard {path} not found")
        return found

    def sample_count(self, name: str) -> int | None:
        """Samples the index records for a split (None when some shard has no count)."""
        return split_sample_count(self.index, name)


def write_shard_set(folder: str | Path, splits: dict[str, dict], config: dict | None = None,
                    inputs: dict | None = None) -> dict:
    """Write `folder`/index.json and its dataset card from each split's record (source, split,
    counts, and `shards`: [{path relative to the folder, samples, bytes, sha256}]).

    Returns the index. Both files are rewritten together, so a card always matches its index."""
    from keyseg.shards.card import dataset_card
    from keyseg.shards.samples import SAMPLE_FORMAT_VERSION

    folder = Path(folder)
    index = {"format_version": SAMPLE_FORMAT_VERSION, "config": config or {}, "inputs": inputs or {},
             "splits": splits}
    index["totals"] = {key: sum(split.get(key, 0) for split in splits.values())
                       for key in ("samples", "targets", "bytes")}
    index["totals"]["shards"] = sum(len(split["shards"]) for split in splits.values())
    atomic_write_json(folder / INDEX_NAME, index)
    atomic_write_text(folder / CARD_NAME, dataset_card(index))
    return index
