"""Masks per second of `keyseg prepare` against a plain single-process baseline.

The baseline is what a LISA-style loader does for every sample: read the JSON
(UTF-8, else cp1252), decode the image with `cv2.imread` for its size, rasterise the
polygons per docs/fidelity.md M3 on full-image canvases. It writes nothing.
`prepare` does more (hashes inputs, validates geometry, writes PNG masks and manifests)
with `--workers` processes. Both must produce identical masks; the benchmark checks it.

    python benchmarks/bench_prepare.py [--images 1000] [--workers 2] [--data runs/bench/data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keyseg.demo import write_reasonseg  # noqa: E402
from pipelines import prepare  # noqa: E402


def baseline_mask(json_path: Path, image_path: Path) -> np.ndarray:
    try:
        annotation = json.loads(json_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        annotation = json.loads(json_path.read_text(encoding="cp1252"))
    height, width = cv2.imread(str(image_path)).shape[:2]
    shapes = [shape for shape in annotation["shapes"] if shape["label"].lower() != "flag"]
    areas = []
    for shape in shapes:
        canvas = np.zeros((height, width), dtype=np.uint8)
        points = np.array([shape["points"]], dtype=np.int32)
        cv2.polylines(canvas, points, True, 1, 1)
        cv2.fillPoly(canvas, points, 1)
        areas.append(canvas.sum())
    mask = np.zeros((height, width), dtype=np.uint8)
    for index in np.argsort(areas)[::-1]:
        value = 255 if "ignore" in shapes[index]["label"].lower() else 1
        points = np.array([shapes[index]["points"]], dtype=np.int32)
        cv2.polylines(mask, points, True, value, 1)
        cv2.fillPoly(mask, points, value)
    return mask


def digest(mask: np.ndarray) -> str:
    return hashlib.sha256(mask.tobytes() + str(mask.shape).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="ReasonSeg images (train/val/test 50/25/25)")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=750)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "bench" / "data")
    args = parser.parse_args()

    stamp = args.data / f".bench-{args.images}-{args.width}x{args.height}"
    if not stamp.exists():
        print(f"writing {args.images} demo images of {args.width}x{args.height} to {args.data} (once)...")
        shutil.rmtree(args.data, ignore_errors=True)
        # ReasonSeg only: the benchmark measures polygon rasterisation.
        write_reasonseg(args.data / "reason_seg", 0, args.images, args.width, args.height)
        stamp.touch()

    pairs = sorted((path, path.with_suffix(".jpg"))
                   for split in ("train", "val", "test")
                   for path in (args.data / "reason_seg" / "ReasonSeg" / split).glob("*.json"))
    started = time.perf_counter()
    expected = {json_path.stem + "|" + json_path.parent.name: digest(baseline_mask(json_path, image_path))
                for json_path, image_path in pairs}
    baseline_seconds = time.perf_counter() - started

    out = args.data.parent / "prepared"
    shutil.rmtree(out, ignore_errors=True)
    config = prepare.PrepareConfig(data_dir=args.data, out=out, sources=["reasonseg"], workers=args.workers,
                                   show_progress=False)
    started = time.perf_counter()
    from rich.console import Console
    result = prepare.run(config, console=Console(quiet=True))
    prepare_seconds = time.perf_counter() - started

    mismatches = 0
    produced = 0
    for split in ("train", "val", "test"):
        for line in (out / "reasonseg" / split / "manifest.jsonl").read_text().splitlines():
            record = json.loads(line)
            mask = cv2.imread(str(out / record["targets"][0]["mask"]), cv2.IMREAD_UNCHANGED)
            key = Path(record["image"]).stem + "|" + split
            mismatches += digest(mask) != expected[key]
            produced += 1
    if result.failed or produced != len(pairs) or mismatches:
        print(f"OUTPUT DIFFERS: {produced} of {len(pairs)} masks, {mismatches} mismatches, {result.failed} failed")
        sys.exit(1)

    baseline_rate, prepare_rate = len(pairs) / baseline_seconds, len(pairs) / prepare_seconds
    print(f"masks: {len(pairs)} ({args.width}x{args.height}), identical output: yes")
    print(f"baseline (1 process, read + decode + rasterise): {baseline_rate:8.1f} masks/s")
    print(f"keyseg prepare (--workers {args.workers}, writes PNGs + manifests): {prepare_rate:8.1f} masks/s")
    print(f"ratio: {prepare_rate / baseline_rate:.2f}")


if __name__ == "__main__":
    main()
