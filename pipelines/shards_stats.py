"""`keyseg shards stats DIR`: counts, sizes, targets per image, keyword coverage, and a
histogram picture (stats.png) of image sizes and mask areas. Writes DIR/stats.json."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask
from rich import box
from rich.console import Console
from rich.table import Table

from keyseg.io import atomic_write_bytes, atomic_write_json
from keyseg.shards.tario import iter_samples
from pipelines.shards_verify import load_index


@dataclass
class StatsConfig:
    shards: Path  # a shard set folder with index.json
    picture: bool = True  # write stats.png


def _area(rle: dict) -> int:
    return int(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def collect(folder: Path, index: dict) -> dict:
    """Per split: image sizes, targets per image, mask area fractions, keyword coverage."""
    per_split = {}
    for name, split in index["splits"].items():
        sizes, targets_per_image, area_fractions = [], Counter(), []
        with_keyword = targets = texts = 0
        for shard in split["shards"]:
            with open(folder / shard["path"], "rb") as handle:
                for _, members in iter_samples(handle):
                    sample = json.loads(members["json"])
                    pixels = sample["width"] * sample["height"]
                    sizes.append((sample["width"], sample["height"]))
                    targets_per_image[len(sample["targets"])] += 1
                    for target in sample["targets"]:
                        targets += 1
                        texts += len(target["texts"])
                        with_keyword += target["keyword"] is not None
                        area_fractions.append(_area(target["mask"]["target"]) / pixels)
        per_split[name] = {
            "samples": len(sizes), "targets": targets, "texts": texts, "bytes": split["bytes"],
            "shards": len(split["shards"]),
            "targets_per_image": {str(k): v for k, v in sorted(targets_per_image.items())},
            "keyword_coverage": round(with_keyword / targets, 4) if targets else None,
            "width": _summary([w for w, _ in sizes]), "height": _summary([h for _, h in sizes]),
            "mask_area_fraction": _summary(area_fractions),
            "_sizes": sizes, "_areas": area_fractions,
        }
    return per_split


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


def run(config: StatsConfig, console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    folder = Path(config.shards)
    per_split = collect(folder, load_index(folder))
    if config.picture:
        atomic_write_bytes(folder / "stats.png", _picture(per_split))
    public = {name: {k: v for k, v in stats.items() if not k.startswith("_")} for name, stats in per_split.items()}
    atomic_write_json(folder / "stats.json", public)

    table = Table(title=f"keyseg shards stats {folder}", box=box.SIMPLE_HEAD)
    table.add_column("source:split", no_wrap=True)
    for column in ("images", "targets", "per img", "kw", "MB", "size", "area"):
        table.add_column(column, justify="right")
    for name, stats in public.items():
        coverage = stats["keyword_coverage"]
        median_size = (f"{stats['width']['median']:.0f}x{stats['height']['median']:.0f}"
                       if stats["width"] else "-")
        area = stats["mask_area_fraction"]
        table.add_row(name, str(stats["samples"]), str(stats["targets"]),
                      f"{stats['targets'] / stats['samples']:.2f}" if stats["samples"] else "-",
                      f"{100 * coverage:.0f}%" if coverage is not None else "-", f"{stats['bytes'] / 1e6:.1f}",
                      median_size, f"{100 * area['median']:.1f}%" if area else "-")
    console.print(table)
    if config.picture:
        console.print(f"histograms: {folder / 'stats.png'}")
    return public
