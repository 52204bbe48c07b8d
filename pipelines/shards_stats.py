"""`keyseg shards stats DIR`: counts, sizes, targets per image, keyword coverage, and a
histogram picture (stats.png) of image sizes and mask areas. Writes DIR/stats.json.

Shards come from elsewhere: a sample whose json breaks the format (`check_sample_json`),
a truncated or corrupt tar, a missing shard or a shard path in index.json that leaves DIR
is counted per split (`bad_samples`, `bad_shards`, with the reasons in `problems`), the
good samples are still summarised, and the command exits 1."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape

from keyseg.errors import DataError
from keyseg.images import image_pixel_bound
from keyseg.io import atomic_write_bytes, atomic_write_json
from keyseg.runner import StageResult, print_problems, progress_bar, summary_table
from keyseg.shards.index import ShardSet
from keyseg.shards.samples import BadSampleError, read_sample, rle_runs
from keyseg.shards.tario import TAR_ERRORS, iter_samples, problem_line



@dataclass
class StatsConfig:
    shards: Path  # a shard set folder with index.json
    picture: bool = True  # write stats.png
    max_image_pixels: int | None = None  # samples claiming more pixels are bad; None: the process's bound
    show_progress: bool = True


@dataclass
class StatsResult(StageResult):
    splits: dict  # what stats.json holds, per split
    bad: list[dict] = field(default_factory=list)  # bad shards and samples: {split, shard, key, problem}


def _area(rle: dict) -> int:
    # Odd runs are foreground; the RLE was checked by read_sample.
    return int(rle_runs(rle["counts"])[1::2].sum())


def _read_shard(shard_set: ShardSet, entry: dict) -> tuple[list[dict], int, list[tuple[str | None, str]]]:
    """(checked sample jsons, file bytes, problems as (key or None for the shard, reason))."""
    try:
        path = shard_set.shard_path(entry)  # an index naming ../.., /abs or pipe:cmd is reported, not read
    except DataError as error:
        return [], 0, [(None, f"refused shard path: {error.reason}")]
    if not path.is_file():
        return [], 0, [(None, "missing shard")]
    samples, problems, count = [], [], 0
    try:
        with open(path, "rb") as handle:
            for key, members in iter_samples(handle):
                count += 1
                try:
                    samples.append(read_sample(key, members))
                except BadSampleError as error:
                    problems.append((key, str(error)))
    except TAR_ERRORS as error:
        problems.append((None, f"unreadable tar after {count} samples ({error})"))
    expected = entry.get("samples")
    if isinstance(expected, int) and not isinstance(expected, bool) and count != expected:
        problems.append((None, f"{count} samples, index says {expected}"))
    return samples, path.stat().st_size, problems


def collect(shard_set: ShardSet, on_shard: Callable[[], None] = lambda: None) -> tuple[dict, list[dict]]:
    """Per split: image sizes, targets per image, mask area fractions, keyword coverage,
    bad samples and shards; and every problem found ({split, shard, key, problem}).
    `on_shard` is called after each shard (progress)."""
    per_split, problems = {}, []
    for name in shard_set.splits:
        entries = shard_set.entries(name)
        sizes, targets_per_image, area_fractions, split_problems = [], Counter(), [], []
        with_keyword = targets = texts = size = 0
        for entry in entries:
            samples, shard_bytes, shard_problems = _read_shard(shard_set, entry)
            on_shard()
            size += shard_bytes
            split_problems += [{"split": name, "shard": entry["path"], "key": key, "problem": reason}
                               for key, reason in shard_problems]
            for sample in samples:
                pixels = sample["width"] * sample["height"]
                sizes.append((sample["width"], sample["height"]))
                targets_per_image[len(sample["targets"])] += 1
                for target in sample["targets"]:
                    targets += 1
                    texts += len(target["texts"])
                    with_keyword += target["keyword"] is not None
                    area_fractions.append(_area(target["mask"]["target"]) / pixels)
        problems += split_problems
        per_split[name] = {
            "samples": len(sizes), "targets": targets, "texts": texts, "bytes": size,
            "shards": len(entries),
            "bad_samples": sum(problem["key"] is not None for problem in split_problems),
            "bad_shards": len({problem["shard"] for problem in split_problems if problem["key"] is None}),
            "problems": split_problems,
            "targets_per_image": {str(k): v for k, v in sorted(targets_per_image.items())},
            "keyword_coverage": round(with_keyword / targets, 4) if targets else None,
            "width": _summary([w for w, _ in sizes]), "height": _summary([h for _, h in sizes]),
            "mask_area_fraction": _summary(area_fractions),
            "_sizes": sizes, "_areas": area_fractions,
        }
    return per_split, problems


def _summary(values: list[float]) -> dict | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {"min": float(array.min()), "median": float(np.median(array)), "max": float(array.max())}


def _picture(per_split: dict) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    # Percent of the image, stacked per split: small targets are the hard ones.
    areas = [100 * np.asarray(stats["_areas"]) for stats in per_split.values()]
    names = list(per_split)
    if any(len(values) for values in areas):
        right.hist(areas, bins=30, stacked=True, label=names)
    for name, stats in per_split.items():
        if stats["_sizes"]:
            widths, heights = zip(*stats["_sizes"])
            left.scatter(widths, heights, s=12, alpha=0.6, label=name)
    left.set(title="image size", xlabel="width (px)", ylabel="height (px)")
    right.set(title="target mask area", xlabel="% of the image", ylabel="targets")
    for axis in (left, right):
        axis.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def run(config: StatsConfig, console: Console | None = None) -> StatsResult:
    console = console or Console(stderr=True)
    with image_pixel_bound(config.max_image_pixels):
        return _run(config, console)


def _run(config: StatsConfig, console: Console) -> StatsResult:
    shard_set = ShardSet.open(config.shards)
    folder = shard_set.folder
    with progress_bar(console, config.show_progress) as progress:
        bar = progress.add_task("stats", total=sum(len(shard_set.entries(name)) for name in shard_set.splits))
        per_split, problems = collect(shard_set, on_shard=lambda: progress.advance(bar))
    if config.picture:
        atomic_write_bytes(folder / "stats.png", _picture(per_split))
    public = {name: {k: v for k, v in stats.items() if not k.startswith("_")} for name, stats in per_split.items()}
    atomic_write_json(folder / "stats.json", public)

    # Split names, shard paths, keys and reasons are data: escaped, so "[/]" prints as itself.
    columns = ("images", "targets", "per img", "kw", "MB", "size", "area") + (("bad",) if problems else ())
    table = summary_table(f"keyseg shards stats {folder}", "source:split", columns)
    if problems:
        table.caption = "bad: samples/shards that could not be used"
    for name, stats in public.items():
        coverage = stats["keyword_coverage"]
        median_size = (f"{stats['width']['median']:.0f}x{stats['height']['median']:.0f}"
                       if stats["width"] else "-")
        area = stats["mask_area_fraction"]
        bad = f"[red]{stats['bad_samples']}/{stats['bad_shards']}[/]" if stats["problems"] else "0"
        table.add_row(escape(name), str(stats["samples"]), str(stats["targets"]),
                      f"{stats['targets'] / stats['samples']:.2f}" if stats["samples"] else "-",
                      f"{100 * coverage:.0f}%" if coverage is not None else "-", f"{stats['bytes'] / 1e6:.1f}",
                      median_size, f"{100 * area['median']:.1f}%" if area else "-", *((bad,) if problems else ()))
    console.print(table)
    result = StatsResult(splits=public, bad=problems, failed=len(problems), report=folder / "stats.json",
                         problems=[problem_line(problem) for problem in problems])
    print_problems(console, result.problems, result.failed, result.report)
    if problems:
        console.print("the statistics cover the good samples only")
    if config.picture:
        console.print(f"histograms: {escape(str(folder / 'stats.png'))}", soft_wrap=True)
    return result

