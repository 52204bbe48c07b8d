"""Tiny KeySeg shard sets for the data-loader tests, and a one-rank loader run.

Library use (tests import it by module name): `build_shard_set` writes
`root/<source>/<split>/<source>-<split>-%06d.tar` + `root/index.json` with ShardWriter and
returns what was written (per key: texts, keywords, masks, size) for comparisons.

Script use (the multi-rank test starts one process per rank with RANK/WORLD_SIZE set):
    python loader_rank_worker.py --index ROOT --split refcoco:val --modes train,eval --workers 1
prints one JSON line {"rank", "train": {"batches": [per epoch], "keys", "skipped"}, "eval": {...}}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from keyseg.shards.samples import build_sample_json, encode_mask, sample_json_bytes
from keyseg.shards.tario import ShardWriter


def make_jpeg(width: int, height: int, seed: int) -> bytes:
    """A smooth random picture (JPEG-friendly, so decoding differences would show)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_mask(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    mask[y0:y0 + height // 3, x0:x0 + width // 3] = 1
    mask[y0:y0 + 2, x0:x0 + 3] = 255  # a small ignore region
    return mask


def make_sample(source: str, split: str, index: int, seed: int = 0) -> dict:
    """Key, jpg bytes, json dict and the numpy masks of one synthetic sample."""
    rng = np.random.default_rng([seed, index, len(source)])
    width, height = int(rng.integers(64, 161)), int(rng.integers(64, 161))
    key = f"{source.replace('+', 'plus')}-{split}-{index:06d}"
    refer = source.startswith("refcoco")
    targets, masks, keywords = [], [], []
    for t in range(int(rng.integers(2, 4)) if refer else 1):
        n_texts = int(rng.integers(1, 3)) if refer else int(rng.integers(1, 5))
        texts = [f"object {index} {t} phrase {k}" if refer else f"What thing {index} is used for {k}?"
                 for k in range(n_texts)]
        explanatory = None
        if not refer and index % 2 == 0:
            explanatory = {"query": f"Which part {index} explains it?", "outputs": f"The part {index} does it."}
        targets.append({"texts": texts, "is_sentence": not refer, "explanatory": explanatory,
                        "ann_id": t if refer else None, "ref_id": t if refer else None})
        masks.append(make_mask(width, height, rng))
        keywords.append(texts[0] if refer else f"thing{index}")
    record = {"id": key, "source": source, "split": split, "image": f"{key}.jpg", "width": width,
              "height": height, "targets": targets}
    return {"key": key, "jpg": make_jpeg(width, height, seed * 1000 + index),
            "json": build_sample_json(record, masks, keywords), "masks": masks}


def write_shard(path: Path, members: list[tuple[str, dict[str, bytes]]]) -> dict:
    """One tar at `path` holding exactly `members`; returns its index.json entry (absolute path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(path.parent / f".build-{path.stem}-%06d.tar", maxcount=len(members) + 1, maxsize=1 << 40)
    for key, data in members:
        writer.write(key, data)
    info = writer.close()[0]
    os.replace(info.path, path)
    return {"path": str(path), "samples": info.samples, "bytes": info.bytes, "sha256": info.sha256}


def build_shard_set(root: Path, splits: dict[str, list[int]], seed: int = 0,
                    corrupt: dict[str, dict[str, bytes]] | None = None) -> dict[str, dict]:
    """`splits` maps "source:split" to samples per shard, e.g. {"reasonseg:val": [3, 5]}.
    `corrupt` maps sample keys to member overrides (written instead of the good bytes).
    Returns {key: sample} for every sample written (json dict, masks, jpg)."""
    root = Path(root)
    written, index = {}, {"splits": {}}
    counter = 0
    for name, sizes in splits.items():
        source, split = name.split(":")
        shards = []
        for shard_number, size in enumerate(sizes):
            members = []
            for _ in range(size):
                sample = make_sample(source, split, counter, seed)
                counter += 1
                data = {"jpg": sample["jpg"], "json": sample_json_bytes(sample["json"])}
                data.update((corrupt or {}).get(sample["key"], {}))
                members.append((sample["key"], data))
                written[sample["key"]] = sample
            relative = Path(source) / split / f"{source}-{split}-{shard_number:06d}.tar"
            entry = write_shard(root / relative, members)
            shards.append({**entry, "path": relative.as_posix()})
        index["splits"][name] = {"shards": shards}
    (root / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return written


def mismatched_rle_json(sample: dict) -> bytes:
    """The sample's json with target 0's mask RLE one row taller than the image."""
    document = json.loads(json.dumps(sample["json"]))
    mask = sample["masks"][0]
    document["targets"][0]["mask"] = encode_mask(np.zeros((mask.shape[0] + 1, mask.shape[1]), dtype=np.uint8))
    return sample_json_bytes(document)


def run(index: str, split: str, mode: str, workers: int, batch_size: int, batches: int, epochs: int) -> dict:
    from keyseg.data import SampleConfig, make_eval_pipeline, make_loader, make_train_pipeline, resolve_shards

    config = SampleConfig(sam_size=128, clip_size=32, num_queries=3)
    urls = resolve_shards(index, split)
    if mode == "train":
        pipeline = make_train_pipeline([(urls, 1.0)], config, batch_size, batches, workers, seed=7)
    else:
        pipeline = make_eval_pipeline(urls, config, batch_size, workers)
    loader = make_loader(pipeline, workers)
    counts, keys, skipped = [], [], 0
    for _ in range(epochs):
        epoch_keys = [key for batch in loader for key in batch["keys"]]
        counts.append(loader.stats.batches)
        keys += epoch_keys
        skipped += loader.stats.skipped
    return {"batches": counts, "keys": keys, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--modes", default="train,eval", help="comma-separated: train, eval")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--batches", type=int, default=5, help="train batches per epoch")
    parser.add_argument("--epochs", type=int, default=1, help="train epochs")
    args = parser.parse_args()
    report = {"rank": int(os.environ.get("RANK", 0))}
    for mode in args.modes.split(","):
        epochs = args.epochs if mode == "train" else 1  # an eval pass is one epoch by definition
        report[mode] = run(args.index, args.split, mode, args.workers, args.batch_size, args.batches, epochs)
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
