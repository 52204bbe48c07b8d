"""Shard URLs: folders with index.json + split names, brace patterns, local paths,
`pipe:` commands, http(s):// and s3://. Commands, URLs and absolute paths are taken only
as typed by the user: paths inside an index.json are confined to its folder (streamed with `aws s3 cp URL -`; the AWS CLI must
be on PATH and configured; with any other tool pass `pipe:your-command URL`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import braceexpand
from webdataset.gopen import Pipe, gopen_schemes


def gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_):
    """Stream an s3:// object through `aws s3 cp` (read) or upload from stdin (write)."""
    if mode[0] == "r":
        args = ["aws", "s3", "cp", url, "-"]
    elif mode[0] == "w":
        args = ["aws", "s3", "cp", "-", url]
    else:
        raise ValueError(f"{mode}: unknown mode")
    # 141 = SIGPIPE: the reader stopped early (end of an epoch), not a failure.
    return Pipe(args, mode=mode, bufsize=bufsize, ignore_status=[141])


def register_url_schemes() -> None:
    """Add our s3 handler to webdataset's opener table; idempotent, keeps a user's own."""
    gopen_schemes.setdefault("s3", gopen_s3)


def _with_url_schemes(source):
    # Runs where the shards are opened (a worker may be a fresh process), before any URL.
    register_url_schemes()
    yield from source


def _is_local(url: str) -> bool:
    scheme = urlparse(url).scheme
    return scheme in ("", "file") or len(scheme) == 1  # one letter: a Windows drive


def _local_path(url: str) -> Path:
    return Path(urlparse(url).path if url.startswith("file:") else url)


def _index_shards(folder: Path, split: str | list[str] | None) -> list[str]:
    # Paths inside an index are confined to the shard set folder (a downloaded index must
    # not name a command, a URL or a file elsewhere); see keyseg.shards.index.
    from keyseg.shards.index import ShardSet

    shard_set = ShardSet.open(folder)
    if split is None:
        raise ValueError(f"{shard_set.index_file}: name a split, one of {sorted(shard_set.splits)}")
    found = shard_set.shard_paths(split)
    return [str(path) for name in found for path in found[name]]


def resolve_shards(spec, split: str | list[str] | None = None) -> list[str]:
    """Shard URLs from a folder/index.json + split name(s), a brace pattern ("a-{000..009}.tar",
    also "a.tar::b.tar"), a list of any of these, local paths, pipe:, http(s)://, s3://, gs://.
    Raises FileNotFoundError naming the first missing local shard."""
    register_url_schemes()
    if isinstance(spec, (list, tuple)):
        urls = [url for item in spec for url in resolve_shards(item, split)]
    else:
        spec = str(spec)
        if _is_local(spec) and "{" not in spec and (Path(spec).is_dir() or spec.endswith("index.json")):
            urls = _index_shards(Path(spec), split)
        else:
            urls = [url for part in spec.split("::") for url in braceexpand.braceexpand(part)]
    for url in urls:
        scheme = urlparse(url).scheme
        if _is_local(url):
            if not _local_path(url).is_file():
                raise FileNotFoundError(f"shard not found: {url}")
        elif scheme not in gopen_schemes:
            raise ValueError(f"no opener for URL scheme {scheme!r}: {url}")
    if not urls:
        raise ValueError(f"no shards in {spec!r}")
    return urls
