"""A persistent answer cache: one small JSON file per request, written atomically.

Keyed by (backend, model, prompt version, record text, retry feedback), so a re-run or a
run resumed after a crash never pays for the same answer twice. One file per entry makes
every write atomic on its own and lets concurrent workers write without a lock.
Entries hold the model's reply and token usage; never a key or header.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from keyseg.io import atomic_write_json


def cache_key(*parts: str | None) -> str:
    text = json.dumps(list(parts), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_KEY = re.compile(r"[0-9a-f]{64}")


def is_cache_key(key) -> bool:
    """A key `cache_key` could have made: the only names an entry's file may get."""
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


class AnswerCache:
    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None  # None: caching off

    def _path(self, key: str) -> Path:
        # Keys also come from files (Batch API results): only a hex digest names a file,
        # so no key reaches outside the folder.
        if not is_cache_key(key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.folder is None or not is_cache_key(key):
            return None
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None  # absent, or damaged by something outside us: ask again
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict) -> None:
        if self.folder is not None:
            atomic_write_json(self._path(key), entry)


def default_cache_dir() -> Path:
    """The user cache directory (XDG_CACHE_HOME or ~/.cache) / keyseg / keywords."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "keyseg" / "keywords"
