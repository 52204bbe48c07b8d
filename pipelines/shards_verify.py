"""`keyseg shards verify DIR`: re-hash every shard and decode every sample.

Reports truncated or corrupt shards (hash, size or tar structure), unsafe member names,
shard paths in index.json that leave DIR, and bad samples (missing members, JSON that
breaks the sample format, an image over the pixel bound or undecodable, RLE of the wrong
size), each with shard and key; the other samples are still verified. An image is checked
against the pixel bound (`--max-image-pixels`) from its header, before any decoding.
Writes DIR/verify_report.json; exit code 1 on any problem.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
from rich.console import Console
from rich.markup import escape

from keyseg.errors import DataError
from keyseg.images import ImageError, image_info, image_pixel_bound
from keyseg.io import atomic_write_json
from keyseg.runner import StageResult, print_problems, progress_bar, summary_table
from keyseg.shards.index import ShardSet
from keyseg.shards.samples import BadSampleError, decode_mask, read_sample
from keyseg.shards.tario import TAR_ERRORS, iter_samples, problem_line



@dataclass
class VerifyConfig:
    shards: Path  # a shard set folder with index.json
    decode_images: bool = True  # full OpenCV decode of every image (else header only)
    show_progress: bool = True
    max_image_pixels: int | None = None  # refuse larger images unread; None: the process's bound


@dataclass
class VerifyResult(StageResult):
    shards: int
    samples: int
    bad: list[dict]  # {"split", "shard", "key" (None: the whole shard), "problem"}


def check_sample(key: str, members: dict[str, bytes], decode_images: bool) -> str | None:
    """Why a sample is bad, or None."""
    try:
        sample = read_sample(key, members)
    except BadSampleError as error:
        return str(error)
    width, height = sample["width"], sample["height"]
    try:
        info = image_info(members["jpg"], decode=decode_images)  # the header's size is checked first
    except (ImageError, cv2.error) as error:
        return f"undecodable jpg: {error}"
    if (info.width, info.height) != (width, height):
        return f"image size mismatch: image is {info.width}x{info.height}, json says {width}x{height}"
    for index, target in enumerate(sample["targets"]):
        try:
            mask = decode_mask(target["mask"])
        except ValueError as error:
            return f"undecodable mask: target {index} ({error})"
        if mask.shape != (height, width):
            return f"mask size mismatch: target {index} is {mask.shape[1]}x{mask.shape[0]}, image {width}x{height}"
    return None


def _expected(entry: dict, field: str, kind: type):
    value = entry.get(field)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _verify_shard(shard_set: ShardSet, entry: dict, name: str, decode_images: bool, problems: list[dict]) -> int:
    where = {"split": name, "shard": entry["path"]}
    try:
        path = shard_set.shard_path(entry)  # an index naming ../.., /abs or pipe:cmd is reported, not read
    except DataError as error:
        problems.append({**where, "key": None, "problem": f"refused shard path: {error.reason}"})
        return 0
    if not path.is_file():
        problems.append({**where, "key": None, "problem": "missing shard"})
        return 0
    try:
        data = path.read_bytes()
    except OSError as error:
        problems.append({**where, "key": None, "problem": f"unreadable shard: {error.strerror or error}"})
        return 0
    size, sha256 = _expected(entry, "bytes", int), _expected(entry, "sha256", str)
    if size is not None and len(data) != size:
        problems.append({**where, "key": None, "problem": f"size {len(data)} bytes, index says {size} "
                                                         "(truncated or rewritten)"})
    elif sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        problems.append({**where, "key": None, "problem": "sha256 differs from the index (corrupt)"})
    elif size is None or sha256 is None:
        problems.append({**where, "key": None, "problem": "index entry has no bytes/sha256 to check against"})
    count = 0
    try:
        for key, members in iter_samples(io.BytesIO(data)):
            count += 1
            reason = check_sample(key, members, decode_images)
            if reason:
                problems.append({**where, "key": key, "problem": reason})
    except TAR_ERRORS as error:
        problems.append({**where, "key": None, "problem": f"unreadable tar after {count} samples ({error})"})
    expected = _expected(entry, "samples", int)
    if expected is not None and count != expected:
        problems.append({**where, "key": None, "problem": f"{count} samples, index says {expected}"})
    return count


def run(config: VerifyConfig, console: Console | None = None) -> VerifyResult:
    console = console or Console(stderr=True)
    with image_pixel_bound(config.max_image_pixels):
        return _run(config, console)


def _run(config: VerifyConfig, console: Console) -> VerifyResult:
    shard_set = ShardSet.open(config.shards)
    folder = shard_set.folder
    shards = [(name, entry) for name in shard_set.splits for entry in shard_set.entries(name)]
    problems: list[dict] = []
    samples = 0
    with progress_bar(console, config.show_progress) as progress:
        bar = progress.add_task("verify", total=len(shards))
        for name, entry in shards:
            samples += _verify_shard(shard_set, entry, name, config.decode_images, problems)
            progress.advance(bar)
    indexed = {entry["path"] for _, entry in shards}
    for path in sorted(folder.glob("*/*/*.tar")):
        if path.relative_to(folder).as_posix() not in indexed:
            problems.append({"split": None, "shard": path.relative_to(folder).as_posix(), "key": None,
                             "problem": "shard not listed in index.json"})
    report = folder / "verify_report.json"
    result = VerifyResult(shards=len(shards), samples=samples, bad=problems, failed=len(problems),
                          problems=[problem_line(problem) for problem in problems], report=report)
    atomic_write_json(report, {"shards": len(shards), "samples": samples, "ok": not problems, "problems": problems})
    table = summary_table(f"keyseg shards verify {folder}", "shard set", ("shards", "samples", "problems"))
    table.add_row(escape(folder.name), str(len(shards)), str(samples),
                  f"[red]{len(problems)}[/]" if problems else "[green]0")
    console.print(table)
    print_problems(console, result.problems, result.failed, report)
    return result

