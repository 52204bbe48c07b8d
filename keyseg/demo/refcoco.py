"""Synthetic refCOCO in REFER's native layout (instances.json + refs(unc).p)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .geometry import CONVEX_KINDS, KINDS, Polygon, bbox_xywh, clip_vertical, round_points
from .language import normalize_sentence, refer_sentences
from .scenes import (
    COLORS,
    SIZES,
    Shape,
    ShapeSpec,
    draw_polygons,
    make_background,
    place_shapes,
    polygon_mask,
    seeded_rng,
    shape_position,
)
from .writers import write_jpeg, write_json, write_pickle

STREAM = 2
IMAGE_ID_OFFSET = 100000
FIRST_ANN_ID = 1001
REF_SPLITS: tuple[str, ...] = ("train", "val", "testA", "testB")
SIZE_WORDS = {"small": "small", "large": "big"}
CATEGORIES: list[dict[str, Any]] = [{"id": i + 1, "name": k, "supercategory": "shape"} for i, k in enumerate(KINDS)]
CATEGORY_IDS = {k: i + 1 for i, k in enumerate(KINDS)}
EMPTY_SEGMENTATION_IMAGE = 1  # image index holding an extra annotation with segmentation []


def coco_file_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}.jpg"


def refcoco_split_sizes(n_images: int) -> dict[str, int]:
    if n_images < 4:
        raise ValueError("refCOCO demo needs at least 4 images (one per split)")
    small = max(1, int(round(n_images * 0.1)))
    return {"train": n_images - 3 * small, "val": small, "testA": small, "testB": small}


def is_two_part_image(index: int) -> bool:
    return index % 4 == 1


def is_rle_image(index: int) -> bool:
    return index in (0, 2, 3) or index % 7 == 5


def _specs(rng: np.random.Generator, n_shapes: int, first_convex: bool) -> list[ShapeSpec]:
    specs: list[ShapeSpec] = []
    used: set[tuple[str, str, str]] = set()
    while len(specs) < n_shapes:
        if specs and rng.random() < 0.2:  # same kind+colour as an earlier shape, other size
            src = specs[int(rng.integers(0, len(specs)))]
            spec = ShapeSpec(src.kind, src.color, "small" if src.size == "large" else "large")
        else:
            kinds = CONVEX_KINDS if (first_convex and not specs) else KINDS
            spec = ShapeSpec(
                kinds[int(rng.integers(0, len(kinds)))],
                COLORS[int(rng.integers(0, len(COLORS)))],
                SIZES[int(rng.integers(0, len(SIZES)))],
            )
        key = (spec.kind, spec.color, spec.size)
        if key not in used:
            used.add(key)
            specs.append(spec)
    return specs


def _flat(points: Polygon) -> list[float]:
    return [float(v) for p in points for v in p]


def _split_in_two(rng: np.random.Generator, shape: Shape) -> list[Polygon]:
    """Cut a convex shape by a thin vertical gap into two polygons."""
    pts = shape.points
    gx = shape.cx + float(rng.uniform(-0.2, 0.2)) * shape.r
    half = max(1.5, 0.07 * shape.r)
    return [round_points(clip_vertical(pts, gx - half, True)), round_points(clip_vertical(pts, gx + half, False))]


@dataclass
class RefImage:
    image: Image.Image
    info: dict[str, Any]
    annotations: list[dict[str, Any]]
    refs: list[dict[str, Any]]


def make_refcoco_image(
    seed: int, index: int, split: str, width: int, height: int, next_ann_id: int, next_ref_id: int, next_sent_id: int
) -> RefImage:
    """Build image ``index`` with its annotations and refs (ids start at the given counters)."""
    rng = seeded_rng(seed, STREAM, index)
    image_id = IMAGE_ID_OFFSET + index
    file_name = coco_file_name(image_id)
    two_part = is_two_part_image(index)
    shapes = place_shapes(rng, _specs(rng, int(rng.integers(2, 5)), two_part), width, height)
    drawn: list[list[Polygon]] = []
    for j, s in enumerate(shapes):
        drawn.append(_split_in_two(rng, s) if (two_part and j == 0) else [s.rounded_points])
    image = Image.fromarray(make_background(rng, width, height), "RGB")
    draw_polygons(image, [(part, s.rgb) for s, parts in zip(shapes, drawn) for part in parts])

    anns: list[dict[str, Any]] = []
    rle_j = len(shapes) - 1 if (is_rle_image(index) and len(shapes) > 1) else -1
    for j, (s, parts) in enumerate(zip(shapes, drawn)):
        if j == rle_j:
            rle = mask_utils.encode(np.asfortranarray(polygon_mask(parts[0], width, height)))
            seg: Any = {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}
            area = float(mask_utils.area(rle))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            crowd = 1
        else:
            seg = [_flat(p) for p in parts]
            area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(seg, height, width))))
            bbox = [round(v, 2) for v in bbox_xywh([pt for p in parts for pt in p])]
            crowd = 0
        anns.append(
            {
                "segmentation": seg,
                "area": area,
                "iscrowd": crowd,
                "image_id": image_id,
                "bbox": bbox,
                "category_id": CATEGORY_IDS[s.kind],
                "id": next_ann_id + j,
            }
        )
    if index == EMPTY_SEGMENTATION_IMAGE:
        anns.append(
            {
                "segmentation": [],
                "area": 0.0,
                "iscrowd": 0,
                "image_id": image_id,
                "bbox": [0.0, 0.0, 0.0, 0.0],
                "category_id": CATEGORY_IDS[shapes[0].kind],
                "id": next_ann_id + len(shapes),
            }
        )

    refs: list[dict[str, Any]] = []
    n_refs = min(len(shapes), int(rng.integers(2, 4)))
    sent_id = next_sent_id
    for r, j in enumerate(rng.permutation(len(shapes))[:n_refs]):
        s, ann = shapes[int(j)], anns[int(j)]
        twins = [o for o in shapes if o is not s and (o.kind, o.color) == (s.kind, s.color)]
        raws = refer_sentences(
            rng,
            int(rng.integers(1, 4)),
            kind=s.kind,
            color=s.color,
            size_word=SIZE_WORDS[s.size],
            position=shape_position(s, width, height),
            need_size=bool(twins),
        )
        sentences = []
        for raw in raws:
            sent = normalize_sentence(raw)
            sentences.append({"tokens": sent.split(), "raw": raw, "sent_id": sent_id, "sent": sent})
            sent_id += 1
        refs.append(
            {
                "image_id": image_id,
                "split": split,
                "sentences": sentences,
                "file_name": f"COCO_train2014_{image_id:012d}_{ann['id']}.jpg",
                "category_id": ann["category_id"],
                "ann_id": ann["id"],
                "sent_ids": [x["sent_id"] for x in sentences],
                "ref_id": next_ref_id + r,
            }
        )
    info = {"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)}
    return RefImage(image=image, info=info, annotations=anns, refs=refs)


def write_refcoco(root: Path, seed: int, n_images: int, width: int, height: int) -> dict[str, Any]:
    """Write ``root/images/mscoco/images/train2014`` and ``root/refcoco``; returns a summary."""
    root = Path(root)
    image_dir = root / "images" / "mscoco" / "images" / "train2014"
    ann_dir = root / "refcoco"
    splits = [sp for sp, n in refcoco_split_sizes(n_images).items() for _ in range(n)]
    images, annotations, refs = [], [], []
    ann_id, ref_id, sent_id = FIRST_ANN_ID, 0, 0
    for index in range(n_images):
        item = make_refcoco_image(seed, index, splits[index], width, height, ann_id, ref_id, sent_id)
        write_jpeg(image_dir / item.info["file_name"], item.image)
        images.append(item.info)
        annotations.extend(item.annotations)
        refs.extend(item.refs)
        ann_id += len(item.annotations)
        ref_id += len(item.refs)
        sent_id += sum(len(r["sentences"]) for r in item.refs)
    instances = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    write_json(ann_dir / "instances.json", instances, indent=None)
    write_pickle(ann_dir / "refs(unc).p", refs)
    ref_counts = {sp: sum(1 for r in refs if r["split"] == sp) for sp in REF_SPLITS}
    return {
        "root": str(root),
        "images_dir": str(image_dir),
        "instances": str(ann_dir / "instances.json"),
        "refs": str(ann_dir / "refs(unc).p"),
        "images": len(images),
        "annotations": len(annotations),
        "refs_per_split": ref_counts,
        "sentences": sent_id,
        "rle_annotations": sum(1 for a in annotations if isinstance(a["segmentation"], dict)),
        "two_part_annotations": sum(
            1 for a in annotations if isinstance(a["segmentation"], list) and len(a["segmentation"]) == 2
        ),
        "empty_annotations": sum(1 for a in annotations if a["segmentation"] == []),
    }
