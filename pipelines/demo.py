"""Helpers of `make demo`: time each stage, then print and save the final summary.

    python -m pipelines.demo time STAGE TIMES_DIR -- command ...   run a stage, record its seconds
    python -m pipelines.demo summary DEMO_DIR                       the final table + summary.json
    python -m pipelines.demo pictures DEMO_DIR SHARDS_DIR OUT_DIR   the README's pictures from a demo run
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from keyseg.io import atomic_write_json

STAGE_ORDER = ("demo-data", "prepare", "mine-keywords", "shard", "verify", "evaluate-before", "train",
               "evaluate-after")


def time_stage(stage: str, times_dir: Path, command: list[str]) -> int:
    started = time.perf_counter()
    status = subprocess.call(command)
    if status == 0:  # a failed stage keeps no time: make runs it again
        atomic_write_json(Path(times_dir) / f"{stage}.json", {"stage": stage,
                                                            "seconds": round(time.perf_counter() - started, 2)})
    return status


@dataclass
class SummaryConfig:
    demo_dir: Path  # runs/demo: times/, eval_before/, eval_after/, train/
    splits: tuple[str, ...] = ("reasonseg:val", "reasonseg:test")


def _scores(metrics_file: Path, splits) -> dict:
    if not metrics_file.is_file():
        return {}
    metrics = json.loads(metrics_file.read_text())
    return {split: {"giou": metrics[split]["giou"], "ciou": metrics[split]["ciou"]} for split in splits
            if split in metrics}


def run(config: SummaryConfig, console: Console | None = None) -> dict:
    console = console or Console()
    demo = Path(config.demo_dir)
    stages = {}
    for path in sorted((demo / "times").glob("*.json")):
        record = json.loads(path.read_text())
        stages[record["stage"]] = record["seconds"]
    stages = {name: stages[name] for name in STAGE_ORDER if name in stages} | stages
    before = _scores(demo / "eval_before" / "metrics.json", config.splits)
    after = _scores(demo / "eval_after" / "metrics.json", config.splits)
    keyword_match = None
    if (demo / "eval_after" / "metrics.json").is_file():
        metrics = json.loads((demo / "eval_after" / "metrics.json").read_text())
        rates = {split: (metrics[split].get("keywords") or {}).get("match_rate") for split in metrics}
        keyword_match = {split: rate for split, rate in rates.items() if rate is not None} or None
    train_summary = demo / "train" / "train_summary.json"
    training = json.loads(train_summary.read_text()) if train_summary.is_file() else {}
    summary = {"stages": stages, "before": before, "after": after, "keyword_match": keyword_match,
               "training": {key: training.get(key) for key in ("steps", "samples_per_second", "data_wait_fraction",
                                                               "best_giou")},
               "outputs": {"data": str(demo / "data"), "prepared": str(demo / "prepared"),
                           "train": str(demo / "train"), "model": str(demo / "train" / "export"),
                           "gallery": str(demo / "eval_after" / "gallery" / "index.html")}}
    atomic_write_json(demo / "summary.json", summary)

    scores = Table(title="keyseg demo: before and after training", box=box.SIMPLE_HEAD)
    for column in ("split", "gIoU before", "gIoU after", "cIoU before", "cIoU after"):
        scores.add_column(column, justify="left" if column == "split" else "right")
    for split in config.splits:
        b, a = before.get(split, {}), after.get(split, {})
        scores.add_row(split, *(f"{100 * d[m]:.1f}" if m in d else "-" for m, d in
                                (("giou", b), ("giou", a), ("ciou", b), ("ciou", a))))
    console.print(scores)
    times = Table(title="wall time per stage", box=box.SIMPLE_HEAD)
    times.add_column("stage")
    times.add_column("seconds", justify="right")
    for stage, seconds in stages.items():
        times.add_row(stage, f"{seconds:.1f}")
    times.add_row("total", f"{sum(stages.values()):.1f}")
    console.print(times)
    if keyword_match:
        console.print("keyword match after training: " + ", ".join(f"{s} {100 * r:.0f}%" for s, r in
                                                                     keyword_match.items()))
    for name, path in summary["outputs"].items():
        console.print(f"{name:>9}: {path}")
    console.print(f"  summary: {demo / 'summary.json'}")
    return summary


def _stack(paths: list[Path], width: int):
    """The images one above the other, each scaled to `width` (PIL, RGB)."""
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        images.append(rgb.resize((width, round(rgb.height * width / rgb.width)), Image.Resampling.LANCZOS))
    canvas = Image.new("RGB", (width, sum(image.height for image in images)), "white")
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height
    return canvas


def gallery_picks(gallery_dir: Path, rows: int) -> list[Path]:
    """`rows` pictures of an evaluation gallery: the `rows - 1` best, then the worst.

    Reads the gallery's `gallery.json`; a folder without one gives no pictures.
    """
    listing_path = Path(gallery_dir) / "gallery.json"
    if not listing_path.is_file():
        return []
    listing = json.loads(listing_path.read_text(encoding="utf-8"))
    entries = listing["best"][:max(rows - 1, 0)] + listing["worst"][:1]
    return [Path(gallery_dir) / entry["image"] for entry in entries[:rows]]


def pictures(demo_dir: Path, shards_dir: Path, out_dir: Path, gallery_rows: int = 3) -> list[Path]:
    """Copy the pictures the README shows out of a finished demo run (deterministic picks:
    the first overlays of `prepare --visualize`, the shard statistics, and gallery rows: the
    best ones, then the worst one)."""
    from keyseg.io import atomic_write_bytes

    overlays = sorted((Path(demo_dir) / "prepared").glob("*/train/overlays/*.png"))[:2]
    gallery = gallery_picks(Path(demo_dir) / "eval_after" / "gallery", gallery_rows)
    stats = Path(shards_dir) / "stats.png"
    missing = [name for name, found in (("prepare overlays", overlays), ("evaluation gallery", gallery),
                                        ("shard stats", stats.is_file())) if not found]
    if missing:
        raise FileNotFoundError(f"run `make demo` first: no {', '.join(missing)} under {demo_dir} / {shards_dir}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image in (("prepare_overlays.png", _stack(overlays, 480)), ("gallery.png", _stack(gallery, 900))):
        buffer = io.BytesIO()
        # 256 colours: a third of the bytes for the repository, no visible loss on these scenes.
        image.quantize(256).save(buffer, format="PNG", optimize=True)
        atomic_write_bytes(out_dir / name, buffer.getvalue())
        written.append(out_dir / name)
    atomic_write_bytes(out_dir / "shard_stats.png", stats.read_bytes())
    written.append(out_dir / "shard_stats.png")
    return written


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "time" and "--" in argv:
        split = argv.index("--")
        return time_stage(argv[1], Path(argv[2]), argv[split + 1:])
    if len(argv) == 2 and argv[0] == "summary":
        run(SummaryConfig(demo_dir=Path(argv[1])))
        return 0
    if len(argv) == 4 and argv[0] == "pictures":
        for path in pictures(Path(argv[1]), Path(argv[2]), Path(argv[3])):
            print(path)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
