"""Model-ready samples per second: keyseg shards + WebDataset vs a LISA-style directory loader.

Both produce the same eval-mode batches (SAM input, CLIP input, masks, texts, collated)
from the same ReasonSeg demo images with the same number of DataLoader workers:

  baseline  a map-style torch Dataset over the data folder, as LISA's loaders work: per
            sample it reads the JPEG (cv2.imread) and the LabelMe JSON, rasterises the
            polygons (keyseg.masks.raster, reference-exact), runs the CLIP image processor,
            resizes with PIL and normalises/pads with torch.
  keyseg    make_eval_pipeline over shards (original JPEG bytes + RLE masks), decoded and
            transformed by keyseg.data (lookup-table normalisation, no rasterising).

Outputs are checked equal on a few samples. Also printed: the raw shard read rate (tar
parsing, no decoding) next to the disk's sequential read rate, both with the files'
pages evicted from the page cache first (posix_fadvise DONTNEED; ignored by some file
systems, in which case both numbers are memory speed).

    python benchmarks/bench_loader.py [--images 300] [--width 1000] [--height 750] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from keyseg.data import SampleConfig, collate, make_eval_pipeline, make_loader  # noqa: E402
from keyseg.data.conversation import ConversationConfig, eval_query  # noqa: E402
from keyseg.data.transforms import SAM_PIXEL_MEAN, SAM_PIXEL_STD, clip_processor, sam_resize_shape  # noqa: E402
from keyseg.demo import write_reasonseg  # noqa: E402
from keyseg.formats.labelme import parse_labelme  # noqa: E402
from keyseg.images import image_info  # noqa: E402
from keyseg.masks.raster import Polygon, is_flag_label, rasterize_polygons  # noqa: E402
from keyseg.shards.samples import build_sample_json, sample_json_bytes  # noqa: E402
from keyseg.shards.tario import ShardWriter  # noqa: E402

CHECKED = 4  # samples compared tensor by tensor


def rasterise(json_bytes: bytes, height: int, width: int):
    labelme = parse_labelme(json_bytes)
    polygons = [Polygon.from_points(shape.label, shape.points) for shape in labelme.shapes
                if not is_flag_label(shape.label)]
    return labelme, rasterize_polygons(polygons, height, width)


def build_shards(pairs: list[tuple[str, Path, Path]], out: Path, shards: int) -> list[tuple[str, Path, Path]]:
    """Shards of one sample per image, in `pairs` order; returns the pairs that were usable."""
    kept = []
    writer = ShardWriter(out / "reasonseg-%06d.tar", maxcount=math.ceil(len(pairs) / shards), maxsize=1 << 40)
    for split, json_path, image_path in pairs:
        jpg = image_path.read_bytes()
        info = image_info(jpg)  # OpenCV's size with EXIF orientation, from the header
        labelme, mask = rasterise(json_path.read_bytes(), info.height, info.width)
        key = f"reasonseg-{split}-{json_path.stem}"
        record = {"id": key, "source": "reasonseg", "split": split, "image": image_path.name,
                  "width": info.width, "height": info.height,
                  "targets": [{"texts": labelme.texts, "is_sentence": labelme.is_sentence}]}
        writer.write(key, {"jpg": jpg, "json": sample_json_bytes(build_sample_json(record, [mask], [None]))})
        kept.append((split, json_path, image_path))
    writer.close()
    return kept


class DirectoryDataset(torch.utils.data.Dataset):
    """LISA-style: everything is read and computed from the data folder per sample."""

    def __init__(self, pairs, sam_size: int, clip_size: int):
        self.pairs, self.sam_size = pairs, sam_size
        self.processor = clip_processor(clip_size)
        self.conversation = ConversationConfig()
        self.mean = torch.Tensor(SAM_PIXEL_MEAN).view(-1, 1, 1)
        self.std = torch.Tensor(SAM_PIXEL_STD).view(-1, 1, 1)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        split, json_path, image_path = self.pairs[index]
        image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
        height, width = image.shape[:2]
        image_clip = self.processor.preprocess(image, return_tensors="pt")["pixel_values"][0]
        new_h, new_w = sam_resize_shape(height, width, self.sam_size)
        resized = np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        x = (torch.from_numpy(resized).permute(2, 0, 1).contiguous().float() - self.mean) / self.std
        image_sam = F.pad(x, (0, self.sam_size - new_w, 0, self.sam_size - new_h))
        labelme, mask = rasterise(json_path.read_bytes(), height, width)
        query = eval_query(labelme.texts[0], labelme.is_sentence, self.conversation)
        return {"key": f"reasonseg-{split}-{json_path.stem}", "source": "reasonseg", "image_sam": image_sam,
                "image_clip": image_clip, "masks": torch.from_numpy(mask[None]), "questions": [query.question],
                "conversations": [query.conversation], "keywords": [None], "texts": [labelme.texts[0]],
                "is_sentence": [labelme.is_sentence], "target_indices": [0], "text_indices": [0], "per_sentence": False,
                "resize": (new_h, new_w), "original_size": (height, width)}


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (DataLoader workers are joined
    at the end of each pass), so CPU cost per sample survives a busy machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_pass(loader, check: set[str]) -> tuple[float, float, int, dict]:
    """(wall seconds, CPU seconds, samples, tensors of the `check` samples) of one full pass."""
    kept, count = {}, 0
    started, cpu = time.perf_counter(), cpu_seconds()
    for batch in loader:
        count += len(batch["keys"])
        for i, key in enumerate(batch["keys"]):
            if key in check:
                kept[key] = (batch["image_sam"][i].clone(), batch["image_clip"][i].clone(), batch["masks"][i])
    return time.perf_counter() - started, cpu_seconds() - cpu, count, kept


def evict(path: Path) -> None:
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def sequential_read_rate(size: int, folder: Path) -> float:
    """MB/s reading a fresh `size`-byte file front to back in 4 MiB chunks, cache evicted."""
    path = folder / "sequential.bin"
    with open(path, "wb") as handle:
        for _ in range(math.ceil(size / (4 << 20))):
            handle.write(os.urandom(4 << 20))
        handle.flush()
        os.fsync(handle.fileno())
    evict(path)
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        total = sum(len(chunk) for chunk in iter(lambda: handle.read(4 << 20), b""))
    seconds = time.perf_counter() - started
    path.unlink()
    return total / seconds / 1e6


def shard_read_rate(urls: list[str]) -> float:
    """MB/s of shard bytes through WebDataset's tar reader (no decoding), cache evicted."""
    import webdataset as wds

    for url in urls:
        evict(Path(url))
    started = time.perf_counter()
    samples = sum(1 for _ in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))
    seconds = time.perf_counter() - started
    assert samples > 0
    return sum(Path(url).stat().st_size for url in urls) / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="ReasonSeg demo images (all splits are used)")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=750)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sam-size", type=int, default=1024)
    parser.add_argument("--clip-size", type=int, default=224)
    parser.add_argument("--shards", type=int, default=8, help="shards to split the images into")
    parser.add_argument("--passes", type=int, default=2, help="timed passes per loader (the fastest is kept)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "loader")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the main process only collects batches

    data = args.work / "data"
    stamp = data / f".bench-{args.images}-{args.width}x{args.height}"
    if not stamp.exists():
        print(f"writing {args.images} demo images of {args.width}x{args.height} to {data} (once)...")
        shutil.rmtree(data, ignore_errors=True)
        write_reasonseg(data / "reason_seg", 0, args.images, args.width, args.height)
        stamp.touch()
    pairs = sorted((split, path, path.with_suffix(".jpg")) for split in ("train", "val", "test")
                   for path in (data / "reason_seg" / "ReasonSeg" / split).glob("*.json"))
    shard_dir = args.work / "shards"
    shutil.rmtree(shard_dir, ignore_errors=True)
    started = time.perf_counter()
    pairs = build_shards(pairs, shard_dir, args.shards)
    urls = sorted(str(path) for path in shard_dir.glob("*.tar"))
    print(f"built {len(urls)} shards of {len(pairs)} samples in {time.perf_counter() - started:.1f} s")

    config = SampleConfig(sam_size=args.sam_size, clip_size=args.clip_size, mode="eval")
    check = {f"reasonseg-{split}-{json_path.stem}" for split, json_path, _ in pairs[:CHECKED]}
    baseline_loader = torch.utils.data.DataLoader(DirectoryDataset(pairs, args.sam_size, args.clip_size),
                                                  batch_size=args.batch_size, num_workers=args.workers,
                                                  collate_fn=collate)
    ours_loader = make_loader(make_eval_pipeline(urls, config, args.batch_size, args.workers), args.workers)
    load = os.getloadavg()
    passes = {"baseline": [], "keyseg": []}
    for _ in range(args.passes):  # interleaved, so a change in machine load hits both alike
        for name, loader in (("baseline", baseline_loader), ("keyseg", ours_loader)):
            passes[name].append(timed_pass(loader, check))
    results = {}
    for name, runs in passes.items():
        seconds, cpu, count, kept = min(runs, key=lambda result: result[0])
        assert count == len(pairs), f"{name} produced {count} of {len(pairs)} samples"
        results[name] = (count / seconds, kept, min(run[1] for run in runs) / count * 1000)

    same = all(all(torch.equal(a, b) for a, b in zip(results["baseline"][1][key], results["keyseg"][1][key]))
               for key in check)
    if not same or len(results["keyseg"][1]) != len(check):
        print("OUTPUT DIFFERS between the baseline and keyseg loaders")
        sys.exit(1)
    baseline_rate, ours_rate = results["baseline"][0], results["keyseg"][0]
    shard_bytes = sum(Path(url).stat().st_size for url in urls)
    print(f"samples: {len(pairs)} ({args.width}x{args.height}) -> SAM {args.sam_size}, CLIP {args.clip_size}, "
          f"batch {args.batch_size}, workers {args.workers}; outputs identical on {len(check)} checked samples")
    print(f"machine load average before: {load[0]:.2f} (cores: {os.cpu_count()})")
    print(f"baseline (map-style, JPEG + LabelMe JSON + rasterise per sample): {baseline_rate:7.1f} samples/s, "
          f"{results['baseline'][2]:6.1f} CPU ms/sample")
    print(f"keyseg   (webdataset shards, eval pipeline):                      {ours_rate:7.1f} samples/s, "
          f"{results['keyseg'][2]:6.1f} CPU ms/sample")
    print(f"ratio: {ours_rate / baseline_rate:.2f}x samples/s, "
          f"{results['baseline'][2] / results['keyseg'][2]:.2f}x less CPU per sample")
    print(f"raw shard read (tar parse, no decode): {shard_read_rate(urls):8.1f} MB/s over {shard_bytes / 1e6:.1f} MB")
    print(f"disk sequential read (same size):      {sequential_read_rate(shard_bytes, args.work):8.1f} MB/s")


if __name__ == "__main__":
    main()
