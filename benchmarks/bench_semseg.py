"""Class masks per second of `keyseg prepare --source ade20k` against a single-process
baseline that does what LISA's sem_seg loader does per sample.

The baseline (LISA utils/sem_seg_dataset.py:241-262, 320-323): open the label PNG with
PIL, shift ADE20K's labels (0 and 255 -> 255, the rest minus 1), decode the image with
`cv2.imread`, list the classes present and build one boolean mask per class. It writes
nothing. `prepare` also hashes inputs, checks sizes, writes one PNG per class mask and
the manifests, with `--workers` processes. Every mask keyseg writes must equal the
baseline's; the benchmark checks it and prints the ratio of the two rates.

    python benchmarks/bench_semseg.py [--images 400] [--workers 2] [--data runs/bench/semseg]
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
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keyseg.demo.semseg import write_ade20k  # noqa: E402
from pipelines import prepare  # noqa: E402


def baseline_masks(label_path: Path, image_path: Path) -> dict[int, np.ndarray]:
    """Class label -> mask, as the reference builds them (None when it could not read the pair)."""
    label = np.array(Image.open(label_path))
    label[label == 0] = 255
    label -= 1
    label[label == 254] = 255
    image = cv2.imread(str(image_path))
    if image is None or image.shape[:2] != label.shape:
        return {}
    return {int(value): label == value for value in np.unique(label) if value != 255}


def digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mask, dtype=bool).tobytes() + str(mask.shape).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=750)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "bench" / "semseg")
    args = parser.parse_args()

    stamp = args.data / f".bench-{args.images}-{args.width}x{args.height}"
    if not stamp.exists():
        print(f"writing {args.images} ADE20K-layout demo images of {args.width}x{args.height} to {args.data} (once)...")
        shutil.rmtree(args.data, ignore_errors=True)
        write_ade20k(args.data, 0, args.images, args.width, args.height)
        stamp.touch()

    labels = sorted((args.data / "ade20k" / "annotations" / "training").glob("*.png"))
    images = args.data / "ade20k" / "images" / "training"
    started = time.perf_counter()
    expected = {path.stem: {label: digest(mask) for label, mask in baseline_masks(path, images / f"{path.stem}.jpg").items()}
                for path in labels}
    baseline_seconds = time.perf_counter() - started
    baseline_count = sum(len(masks) for masks in expected.values())

    out = args.data.parent / "semseg_prepared"
    shutil.rmtree(out, ignore_errors=True)
    config = prepare.PrepareConfig(data_dir=args.data, out=out, sources=["ade20k"], workers=args.workers,
                                   show_progress=False)
    from rich.console import Console

    started = time.perf_counter()
    prepare.run(config, console=Console(quiet=True))
    prepare_seconds = time.perf_counter() - started

    compared = mismatches = 0
    for line in (out / "ade20k" / "train" / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        stem = Path(record["image"]).stem
        for target in record["targets"]:
            mask = cv2.imread(str(out / target["mask"]), cv2.IMREAD_UNCHANGED) == 1
            mismatches += digest(mask) not in expected.get(stem, {}).values()
            compared += 1
    if mismatches or compared == 0:
        print(f"OUTPUT DIFFERS: {mismatches} of {compared} masks differ from the baseline")
        sys.exit(1)

    baseline_rate, prepare_rate = baseline_count / baseline_seconds, compared / prepare_seconds
    print(f"ADE20K layout: {len(labels)} label maps ({args.width}x{args.height}), {compared} class masks written, "
          f"identical to the baseline: yes")
    print(f"baseline (1 process, PIL label + cv2 image + masks): {baseline_rate:8.1f} masks/s")
    print(f"keyseg prepare (--workers {args.workers}, writes PNGs + manifests): {prepare_rate:8.1f} masks/s")
    print(f"ratio: {prepare_rate / baseline_rate:.2f}")


if __name__ == "__main__":
    main()
