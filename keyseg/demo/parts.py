"""Synthetic PACO-LVIS and PASCAL-Part in their native COCO layouts.

Shapes stand in for objects; the left and right halves of a shape are its parts. Each
file carries the cases a reader must handle: whole-object and part categories, names the
reference cleans ("bottle_(drink)", surrounding spaces) or keeps ("trash_can"), a category
nothing uses, polygons (one and two per annotation), compressed and uncompressed RLE, an
image without annotations and an annotation whose image the file lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .geometry import CONVEX_KINDS, Polygon, bbox_xywh, clip_vertical, round_points
from .scenes import COLORS, SIZES, Shape, ShapeSpec, draw_polygons, make_background, place_shapes, polygon_mask, \
    seeded_rng
from .writers import write_jpeg, write_json

PACO_STREAM = 11
PASCAL_STREAM = 12
EMPTY_IMAGE_INDEX = 1  # this image is in the file and on disk, with no annotation
RLE_IMAGE_INDEX = 0  # its first annotation is a compressed RLE
UNCOMPRESSED_RLE_IMAGE_INDEX = 2  # its first annotation is an uncompressed RLE (counts as a list)


@dataclass(frozen=True)
class DemoObject:
    category: str  # the object's own category name, "" if the source has none
    parts: tuple[str, ...]  # part category names: left half, then right half


# PACO-LVIS: whole objects and parts, LVIS names with "_(...)" the reference cuts.
PACO_CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "dog", "supercategory": "animal"},
    {"id": 2, "name": "dog:tail", "supercategory": "animal"},
    {"id": 3, "name": "trash_can", "supercategory": "furniture"},  # underscore kept
    {"id": 4, "name": "trash_can:lid", "supercategory": "furniture"},
    {"id": 5, "name": "bottle_(drink)", "supercategory": "kitchen"},  # -> "bottle"
    {"id": 6, "name": " bottle_(drink):cap_(bottle) ", "supercategory": "kitchen"},  # -> bottle, cap
    {"id": 7, "name": "mug:handle", "supercategory": "kitchen"},  # no annotation uses it
]
PACO_OBJECTS = (
    DemoObject("dog", ("dog:tail",)),
    DemoObject("trash_can", ("trash_can:lid",)),
    DemoObject("bottle_(drink)", (" bottle_(drink):cap_(bottle) ",)),
)
# PASCAL-Part: parts only, "object:part" used as written (after a strip).
PASCAL_CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "dog:head"},
    {"id": 2, "name": "dog:tail"},
    {"id": 3, "name": "person:hair"},
    {"id": 4, "name": " cat:leg "},
    {"id": 5, "name": "bus:wheel"},  # no annotation uses it
]
PASCAL_OBJECTS = (
    DemoObject("", ("dog:head", "dog:tail")),
    DemoObject("", ("person:hair",)),
    DemoObject("", (" cat:leg ",)),
)


@dataclass(frozen=True)
class PartDemoLayout:
    name: str
    annotation_file: str  # relative to the data dir
    image_dir: str  # relative to the data dir
    file_name: Callable[[int, int], str]  # (index, image id) -> `file_name` in the JSON
    image_id_offset: int
    stream: int
    categories: list[dict[str, Any]]
    objects: tuple[DemoObject, ...]


PACO_LAYOUT = PartDemoLayout(
    name="paco_lvis",
    annotation_file="vlpart/paco/annotations/paco_lvis_v1_train.json",
    image_dir="coco",
    file_name=lambda index, image_id: f"train2017/{image_id:012d}.jpg",
    image_id_offset=800000,  # clear of the other demo COCO ids (keyseg/demo/semseg.py)
    stream=PACO_STREAM,
    categories=PACO_CATEGORIES,
    objects=PACO_OBJECTS,
)
PASCAL_LAYOUT = PartDemoLayout(
    name="pascal_part",
    annotation_file="vlpart/pascal_part/train.json",
    image_dir="vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages",
    file_name=lambda index, image_id: f"2008_{index:06d}.jpg",
    image_id_offset=2008000000,
    stream=PASCAL_STREAM,
    categories=PASCAL_CATEGORIES,
    objects=PASCAL_OBJECTS,
)


def write_paco_lvis(root: Path, seed: int, n_images: int, width: int, height: int) -> dict[str, Any]:
    """Write `root/vlpart/paco/annotations/paco_lvis_v1_train.json` and its images under
    `root/coco/train2017`; returns a summary."""
    return write_part_demo(Path(root), PACO_LAYOUT, seed, n_images, width, height)


def write_pascal_part(root: Path, seed: int, n_images: int, width: int, height: int) -> dict[str, Any]:
    """Write `root/vlpart/pascal_part/train.json` and its images under
    `root/vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages`; returns a summary."""
    return write_part_demo(Path(root), PASCAL_LAYOUT, seed, n_images, width, height)


def _category_ids(layout: PartDemoLayout) -> dict[str, int]:
    return {entry["name"]: entry["id"] for entry in layout.categories}


def _flat(points: Polygon) -> list[float]:
    return [value for point in round_points(points) for value in point]


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def _annotation(ann_id: int, image_id: int, category_id: int, polygons: list[Polygon], form: str,
                width: int, height: int) -> dict[str, Any]:
    if form == "polygons":
        segmentation: Any = [_flat(polygon) for polygon in polygons]
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        mask = np.zeros((height, width), dtype=np.uint8)
        for polygon in polygons:
            mask |= polygon_mask(round_points(polygon), width, height)
        rle = mask_utils.encode(np.asfortranarray(mask))
        segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")} if form == "rle" \
            else _uncompressed_rle(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "area": float(mask_utils.area(rle)),
        "bbox": [round(v, 2) for v in bbox_xywh([point for polygon in polygons for point in polygon])],
        "iscrowd": 0 if form == "polygons" else 1,
    }


def make_part_image(layout: PartDemoLayout, seed: int, index: int, width: int, height: int,
                    next_ann_id: int) -> tuple[Image.Image, dict[str, Any], list[dict[str, Any]]]:
    """Image `index`: its picture, its `images` entry and its annotations."""
    rng = seeded_rng(seed, layout.stream, index)
    image_id = layout.image_id_offset + index
    ids = _category_ids(layout)
    n_shapes = int(rng.integers(1, 4))
    specs = [ShapeSpec(str(rng.choice(CONVEX_KINDS)), str(rng.choice(COLORS)), str(rng.choice(SIZES)))
             for _ in range(n_shapes)]
    shapes: list[Shape] = place_shapes(rng, specs, width, height)
    image = Image.fromarray(make_background(rng, width, height), "RGB")
    draw_polygons(image, [(shape.rounded_points, shape.rgb) for shape in shapes])
    info = {"id": image_id, "file_name": layout.file_name(index, image_id), "height": int(height),
            "width": int(width)}
    if index == EMPTY_IMAGE_INDEX:
        return image, info, []

    annotations: list[dict[str, Any]] = []
    for j, shape in enumerate(shapes):
        obj = layout.objects[int(rng.integers(len(layout.objects)))]
        points = shape.points
        halves = [clip_vertical(points, shape.cx, keep_left=True), clip_vertical(points, shape.cx, keep_left=False)]
        pieces: list[tuple[str, list[Polygon]]] = []
        if obj.category:
            # The whole object; every second one as two polygons (its halves).
            pieces.append((obj.category, halves if j % 2 else [points]))
        for part, half in zip(obj.parts, halves):
            pieces.append((part, [half]))
        for k, (category, polygons) in enumerate(pieces):
            form = "polygons"
            if j == 0 and k == 0 and index == RLE_IMAGE_INDEX:
                form = "rle"
            elif j == 0 and k == 0 and index == UNCOMPRESSED_RLE_IMAGE_INDEX:
                form = "uncompressed_rle"
            annotations.append(_annotation(next_ann_id + len(annotations), image_id, ids[category], polygons,
                                           form, width, height))
    return image, info, annotations


def write_part_demo(root: Path, layout: PartDemoLayout, seed: int, n_images: int, width: int,
                    height: int) -> dict[str, Any]:
    if n_images < 3:
        raise ValueError(f"the {layout.name} demo needs at least 3 images (RLE, empty and uncompressed-RLE cases)")
    images, annotations = [], []
    ann_id = 1
    for index in range(n_images):
        picture, info, anns = make_part_image(layout, seed, index, width, height, ann_id)
        write_jpeg(root / layout.image_dir / info["file_name"], picture)
        images.append(info)
        annotations.extend(anns)
        ann_id += len(anns)
    # An annotation whose image the file lacks (the reference never draws it).
    orphan = dict(annotations[0], id=ann_id, image_id=layout.image_id_offset + n_images)
    annotations.append(orphan)
    document = {"info": {"description": f"keyseg synthetic {layout.name}"}, "images": images,
                "annotations": annotations, "categories": layout.categories}
    write_json(root / layout.annotation_file, document, indent=None)
    return {
        "root": str(root),
        "annotation_file": str(root / layout.annotation_file),
        "images_dir": str(root / layout.image_dir),
        "images": len(images),
        "annotations": len(annotations),
        "categories": len(layout.categories),
        "rle_annotations": sum(1 for a in annotations if isinstance(a["segmentation"], dict)),
        "two_polygon_annotations": sum(1 for a in annotations
                                       if isinstance(a["segmentation"], list) and len(a["segmentation"]) == 2),
        "images_without_annotations": 1,
        "annotations_without_image": 1,
    }
