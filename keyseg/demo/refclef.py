"""Synthetic refCLEF in REFER's native layout: instances.json, refs(unc).p, refs(berkeley).p.

Images go under ``images/saiapr_tc-12/<id // 1000, two digits>/images/<id>.jpg``, the
folder layout of the saiapr_tc-12 subset; instances.json's `file_name` holds the path below
saiapr_tc-12, subfolders included, as keyseg joins it as it is. refCLEF's masks come from
the saiapr segmentation masks, so annotations are lists of compressed RLE dicts (the
branch LISA `utils/refer_seg_dataset.py:241-245` takes for them).

Awkward cases, each on purpose:
  - an annotation whose RLE list has two parts (one object cut in two: two planes);
  - one annotation as polygons instead (the refCOCO form, which the reader also takes);
  - refs(berkeley).p has a ref whose image instances.json lacks (REFER's README: the
    berkeley split misses 2 train and 1 test images), with its annotation present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .geometry import KINDS, Polygon, clip_vertical, round_points
from .language import normalize_sentence, refer_sentences
from .scenes import (COLORS, SIZES, Shape, ShapeSpec, draw_polygons, make_background, place_shapes, polygon_mask,
                     seeded_rng, shape_position)
from .writers import write_jpeg, write_json, write_pickle

STREAM = 3
FIRST_IMAGE_ID = 1001
IMAGE_ID_STEP = 347  # ids spread over several saiapr folders (01, 02, ...)
FIRST_ANN_ID = 5001
UNC_SPLITS: tuple[str, ...] = ("train", "val", "testA", "testB", "testC")
BERKELEY_SPLITS: tuple[str, ...] = ("train", "val", "test")
SIZE_WORDS = {"small": "small", "large": "big"}
CATEGORIES: list[dict[str, Any]] = [{"id": i + 1, "name": k, "supercategory": "shape"} for i, k in enumerate(KINDS)]
CATEGORY_IDS = {k: i + 1 for i, k in enumerate(KINDS)}
POLYGON_IMAGE = 2  # image index whose first annotation is written as polygons


def saiapr_file_name(image_id: int) -> str:
    """Path of an image below saiapr_tc-12, as refCLEF's instances.json gives it."""
    return f"{image_id // 1000:02d}/images/{image_id}.jpg"


def refclef_split_sizes(n_images: int, splits: tuple[str, ...]) -> dict[str, int]:
    """Images per split: about 10% for each non-train split, at least one."""
    if n_images < len(splits):
        raise ValueError(f"refCLEF demo needs at least {len(splits)} images (one per split)")
    small = max(1, int(round(n_images * 0.1)))
    small = min(small, (n_images - 1) // (len(splits) - 1))
    return {split: (n_images - small * (len(splits) - 1) if split == "train" else small) for split in splits}


def _splits_by_image(n_images: int, splits: tuple[str, ...]) -> list[str]:
    return [split for split, count in refclef_split_sizes(n_images, splits).items() for _ in range(count)]


def is_two_part_image(index: int) -> bool:
    return index % 5 == 1


def _rle(mask: np.ndarray) -> dict[str, Any]:
    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encoded["counts"].decode("ascii")}


def _specs(rng: np.random.Generator, n_shapes: int) -> list[ShapeSpec]:
    specs: list[ShapeSpec] = []
    used: set[tuple[str, str, str]] = set()
    while len(specs) < n_shapes:
        spec = ShapeSpec(KINDS[int(rng.integers(0, len(KINDS)))], COLORS[int(rng.integers(0, len(COLORS)))],
                         SIZES[int(rng.integers(0, len(SIZES)))])
        if (spec.kind, spec.color, spec.size) not in used:
            used.add((spec.kind, spec.color, spec.size))
            specs.append(spec)
    return specs


def _cut(rng: np.random.Generator, shape: Shape) -> list[Polygon]:
    """Two polygons: the shape cut by a thin vertical gap."""
    gx = shape.cx + float(rng.uniform(-0.2, 0.2)) * shape.r
    half = max(1.5, 0.07 * shape.r)
    return [round_points(clip_vertical(shape.points, gx - half, True)),
            round_points(clip_vertical(shape.points, gx + half, False))]


def _segmentation(parts: list[Polygon], as_polygons: bool, width: int, height: int) -> list:
    if as_polygons:
        return [[float(v) for point in part for v in point] for part in parts]
    return [_rle(polygon_mask(part, width, height)) for part in parts]


def make_refclef_image(seed: int, index: int, width: int, height: int, first_ann_id: int,
                       first_ref_id: int, first_sent_id: int) -> dict[str, Any]:
    """Image ``index``: its picture, image entry, annotations and refs (split left to the caller)."""
    rng = seeded_rng(seed, STREAM, index)
    image_id = FIRST_IMAGE_ID + IMAGE_ID_STEP * index
    shapes = place_shapes(rng, _specs(rng, int(rng.integers(2, 5))), width, height)
    drawn = [_cut(rng, shape) if (is_two_part_image(index) and j == 0) else [shape.rounded_points]
             for j, shape in enumerate(shapes)]
    picture = Image.fromarray(make_background(rng, width, height), "RGB")
    draw_polygons(picture, [(part, shape.rgb) for shape, parts in zip(shapes, drawn) for part in parts])
    annotations = []
    for j, (shape, parts) in enumerate(zip(shapes, drawn)):
        segmentation = _segmentation(parts, index == POLYGON_IMAGE and j == 0, width, height)
        union = np.zeros((height, width), np.uint8)
        for part in parts:
            union |= polygon_mask(part, width, height)
        ys, xs = np.nonzero(union)
        bbox = ([float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
                if xs.size else [0.0, 0.0, 0.0, 0.0])
        annotations.append({"segmentation": segmentation, "area": float(union.sum()), "iscrowd": 0,
                            "image_id": image_id, "bbox": bbox, "category_id": CATEGORY_IDS[shape.kind],
                            "id": first_ann_id + j})
    refs, sent_id = [], first_sent_id
    for r, j in enumerate(rng.permutation(len(shapes))[:min(len(shapes), int(rng.integers(2, 4)))]):
        shape, annotation = shapes[int(j)], annotations[int(j)]
        twins = [other for other in shapes
                 if other is not shape and (other.kind, other.color) == (shape.kind, shape.color)]
        raws = refer_sentences(rng, int(rng.integers(1, 4)), kind=shape.kind, color=shape.color,
                               size_word=SIZE_WORDS[shape.size], position=shape_position(shape, width, height),
                               need_size=bool(twins))
        sentences = []
        for raw in raws:
            sent = normalize_sentence(raw)
            sentences.append({"tokens": sent.split(), "raw": raw, "sent_id": sent_id, "sent": sent})
            sent_id += 1
        refs.append({"image_id": image_id, "split": None, "sentences": sentences,
                     "file_name": f"{image_id}_{annotation['id']}.jpg", "category_id": annotation["category_id"],
                     "ann_id": annotation["id"], "sent_ids": [s["sent_id"] for s in sentences],
                     "ref_id": first_ref_id + r})
    info = {"id": image_id, "file_name": saiapr_file_name(image_id), "height": int(height), "width": int(width)}
    return {"picture": picture, "info": info, "annotations": annotations, "refs": refs}


def write_refclef(root: Path, seed: int, n_images: int, width: int, height: int) -> dict[str, Any]:
    """Write ``root/images/saiapr_tc-12/...`` and ``root/refclef``; returns a summary.

    ``root`` is the folder LISA calls `refer_seg`. Both splitBys share images, annotations
    and refs; they differ in each ref's `split` (unc: train/val/testA/testB/testC, berkeley:
    train/val/test, assigned per image)."""
    root = Path(root)
    image_dir, ann_dir = root / "images" / "saiapr_tc-12", root / "refclef"
    unc, berkeley = _splits_by_image(n_images, UNC_SPLITS), _splits_by_image(n_images, BERKELEY_SPLITS)
    berkeley = berkeley[::-1]  # another assignment than unc's: train last
    images, annotations, unc_refs, berkeley_refs = [], [], [], []
    ann_id, ref_id, sent_id = FIRST_ANN_ID, 0, 0
    for index in range(n_images):
        item = make_refclef_image(seed, index, width, height, ann_id, ref_id, sent_id)
        write_jpeg(image_dir / item["info"]["file_name"], item["picture"])
        images.append(item["info"])
        annotations.extend(item["annotations"])
        unc_refs.extend({**ref, "split": unc[index]} for ref in item["refs"])
        berkeley_refs.extend({**ref, "split": berkeley[index]} for ref in item["refs"])
        ann_id += len(item["annotations"])
        ref_id += len(item["refs"])
        sent_id += sum(len(ref["sentences"]) for ref in item["refs"])

    # An image the berkeley refs name but instances.json lacks; its annotation is there.
    missing = make_refclef_image(seed, n_images, width, height, ann_id, ref_id, sent_id)
    annotations.append(missing["annotations"][0])
    missing_ref = {**missing["refs"][0], "ann_id": missing["annotations"][0]["id"],
                   "category_id": missing["annotations"][0]["category_id"], "split": "test"}
    berkeley_refs.append(missing_ref)

    write_json(ann_dir / "instances.json", {"images": images, "annotations": annotations, "categories": CATEGORIES},
               indent=None)
    write_pickle(ann_dir / "refs(unc).p", unc_refs)
    write_pickle(ann_dir / "refs(berkeley).p", berkeley_refs)
    return {
        "root": str(root),
        "images_dir": str(image_dir),
        "instances": str(ann_dir / "instances.json"),
        "refs": {"unc": str(ann_dir / "refs(unc).p"), "berkeley": str(ann_dir / "refs(berkeley).p")},
        "images": len(images),
        "annotations": len(annotations),
        "refs_per_split": {"unc": {split: sum(ref["split"] == split for ref in unc_refs) for split in UNC_SPLITS},
                           "berkeley": {split: sum(ref["split"] == split for ref in berkeley_refs)
                                        for split in BERKELEY_SPLITS}},
        "sentences": sum(len(ref["sentences"]) for ref in unc_refs),
        "two_part_annotations": sum(1 for a in annotations if len(a["segmentation"]) == 2),
        "polygon_annotations": sum(1 for a in annotations if isinstance(a["segmentation"][0], list)),
        "missing_image_refs": {"berkeley": [missing_ref["ref_id"]]},
    }
