"""Synthetic label-map sources in their native layouts: ADE20K, COCO-Stuff, Mapillary v2.0.

Each image is a scene of two "stuff" bands and a few shapes; its label file holds the
source's raw values (ADE20K 1..150 with 0 = other, COCO-Stuff 0..181 with 255 =
unlabeled, Mapillary indices into its config). The first images of each source are the
awkward cases a reader must handle (`SPECIALS`); `write_*` return which image has which.
With `faults=False` the cases a reader must refuse (`FAULTS`: error rows in `keyseg
prepare`) are left out, so the data prepares cleanly, as `make demo` needs.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .scenes import KINDS, COLORS, SIZES, ShapeSpec, make_background, place_shapes, polygon_mask, seeded_rng
from .writers import atomic_write_bytes, write_jpeg, write_json

STREAMS = {"ade20k": 21, "cocostuff": 22, "mapillary": 23}

# Awkward cases, by image index (an image past the list is an ordinary one).
SPECIALS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ade20k": (
        ("ignore_values", "palette_png"),  # raw 0 and 255 regions (both ignore), a palette PNG
        ("missing_label",),  # the annotation PNG is not written
        ("wrong_size",),  # label map 8 pixels wider than the image
        ("no_classes",),  # every pixel raw 0: nothing to ask about
        ("unknown_label",),  # raw 151: past the 150 classes (the reference would crash)
    ),
    "cocostuff": (
        ("ignore_values", "dash_classes"),  # 255 and "-" stuff classes (both become ignore)
        ("unused_classes",),  # "street sign" (11) and "hat" (25), ids COCO never used
        ("missing_image",),  # the label PNG is there, the COCO JPEG is not
        ("wrong_size",),
        ("unknown_label",),  # raw 200: past the 182 classes
        ("no_classes",),  # only "-" classes and 255
    ),
    "mapillary": (
        ("unlabeled_class",),  # the config's last entry, "Unlabeled", drawn (the reference keeps it)
        ("missing_image",),
        ("wrong_size",),
        ("unknown_label",),  # a value past the config's labels
    ),
}

# The awkward cases `keyseg prepare` reports as errors (the file is refused).
FAULTS = frozenset({"missing_label", "missing_image", "wrong_size", "unknown_label"})

# ADE20K raw values (1-based into ade20k_classes.json; 0 = "other").
ADE20K_STUFF = (1, 3, 4, 7, 10, 14, 17, 22)  # wall, sky, floor, road, grass, earth, mountain, water
ADE20K_THINGS = (13, 20, 21, 37, 150)  # person, chair, car, lamp, flag (the last class)
# COCO-Stuff raw values (0-based into cocostuff_classes.txt after its header line).
COCOSTUFF_STUFF = (105, 123, 148, 156, 168)  # clouds, grass, road, sky, tree
COCOSTUFF_THINGS = (0, 2, 16, 17, 61)  # person, car, bird, cat, chair
COCOSTUFF_DASH = (95, 114, 170)  # building-other, floor-other, wall-brick
COCOSTUFF_UNUSED = (11, 25)  # street sign, hat
# Demo COCO ids share coco/train2017: COCO-Stuff 700000+, PACO-LVIS 800000+, LLaVA 900000+.
COCOSTUFF_IMAGE_OFFSET = 700000
COCOSTUFF_IMAGE_END = 800000

# A small config_v2.0.json: same keys as the real one, mixed-case `readable`.
MAPILLARY_LABELS: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("animal--bird", "Bird", (165, 42, 42)),
    ("construction--flat--road", "Road", (128, 64, 128)),
    ("construction--flat--sidewalk", "Sidewalk", (244, 35, 232)),
    ("nature--sky", "Sky", (70, 130, 180)),
    ("nature--vegetation", "Vegetation", (107, 142, 35)),
    ("human--person--individual", "Person", (220, 20, 60)),
    ("object--vehicle--car", "Car", (0, 0, 142)),
    ("object--traffic-sign--front", "Traffic Sign (Front)", (220, 220, 0)),  # never drawn
    ("void--unlabeled", "Unlabeled", (0, 0, 0)),
)
MAPILLARY_STUFF = (1, 2, 3, 4)
MAPILLARY_THINGS = (0, 5, 6)
MAPILLARY_UNLABELED = len(MAPILLARY_LABELS) - 1

ADE20K_NAME = re.compile(r"^ADE_train_\d{8}\.(jpg|png)$")
COCOSTUFF_NAME = re.compile(r"^\d{12}\.(jpg|png)$")
MAPILLARY_NAME = re.compile(r"^demo_mly_\d{5}\.(jpg|png)$")


def _colors(seed: int) -> np.ndarray:
    """uint8 (256, 3): the colour each raw label is painted with in the image."""
    return np.random.default_rng([int(seed), 99]).integers(30, 226, size=(256, 3)).astype(np.uint8)


def _scene_labels(rng: np.random.Generator, width: int, height: int, stuff: tuple[int, ...],
                  things: tuple[int, ...]) -> np.ndarray:
    """uint8 raw label map: two stuff bands split at a slanted line, then 1-3 shapes."""
    top, bottom = (int(value) for value in rng.choice(stuff, size=2, replace=False))
    yy, xx = np.mgrid[0:height, 0:width]
    horizon = height * float(rng.uniform(0.35, 0.6)) + (xx - width / 2) * float(rng.uniform(-0.25, 0.25))
    labels = np.where(yy < horizon, top, bottom).astype(np.uint8)
    count = int(rng.integers(1, 4))
    specs = [ShapeSpec(str(rng.choice(KINDS)), str(rng.choice(COLORS)), str(rng.choice(SIZES))) for _ in range(count)]
    for shape in place_shapes(rng, specs, width, height):
        labels[polygon_mask(shape.rounded_points, width, height).astype(bool)] = int(rng.choice(things))
    return labels


def _paint(rng: np.random.Generator, labels: np.ndarray, colors: np.ndarray) -> Image.Image:
    """The photo: the label colours over a muted texture, so regions are visible but not flat."""
    height, width = labels.shape
    texture = make_background(rng, width, height).astype(np.float64)
    mixed = 0.35 * texture + 0.65 * colors[labels].astype(np.float64)
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), "RGB")


def _band(labels: np.ndarray, value: int, rows: slice | None = None, cols: slice | None = None) -> None:
    labels[rows if rows is not None else slice(None), cols if cols is not None else slice(None)] = value


def _palette_png(labels: np.ndarray, colors: np.ndarray) -> bytes:
    """A palette PNG whose pixel indices are `labels` (what PIL reads back as the array)."""
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    image.putpalette(colors.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _grey_png(labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(labels), "L").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _tags(source: str, index: int, faults: bool) -> tuple[str, ...]:
    specials = SPECIALS[source]
    tags = specials[index] if index < len(specials) else ()
    return tags if faults else tuple(tag for tag in tags if tag not in FAULTS)


def _remove_stale(folder: Path, pattern: re.Pattern, keep: set[str]) -> None:
    """Drop demo files left over from an earlier, larger run (only names we write)."""
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if pattern.match(path.name) and path.name not in keep:
                path.unlink()


def write_ade20k(root: Path, seed: int, n_images: int, width: int, height: int,
                 faults: bool = True) -> dict[str, Any]:
    """Write `root/ade20k/{images,annotations}/training`; returns a summary."""
    images, annotations = Path(root) / "ade20k" / "images" / "training", Path(root) / "ade20k" / "annotations" / "training"
    colors = _colors(seed)
    keep_images, keep_labels, specials = set(), set(), {}
    for index in range(n_images):
        rng = seeded_rng(seed, STREAMS["ade20k"], index)
        tags = _tags("ade20k", index, faults)
        name = f"ADE_train_{index + 1:08d}"
        label_width = width + 8 if "wrong_size" in tags else width
        labels = _scene_labels(rng, label_width, height, ADE20K_STUFF, ADE20K_THINGS)
        if "ignore_values" in tags:
            _band(labels, 0, rows=slice(0, max(1, height // 6)))
            _band(labels, 255, cols=slice(0, max(1, width // 8)))
        if "no_classes" in tags:
            labels[:] = 0
        if "unknown_label" in tags:
            _band(labels, 151, rows=slice(height - max(1, height // 8), height))
        write_jpeg(images / f"{name}.jpg", _paint(rng, labels[:, :width], colors))
        keep_images.add(f"{name}.jpg")
        if "missing_label" not in tags:
            data = _palette_png(labels, colors) if "palette_png" in tags else _grey_png(labels)
            atomic_write_bytes(annotations / f"{name}.png", data)
            keep_labels.add(f"{name}.png")
        if tags:
            specials[name] = list(tags)
    # Names the reference's `endswith(".jpg")` skips.
    atomic_write_bytes(images / "README.txt", b"not an image\n")
    atomic_write_bytes(images / "ADE_train_upper.JPG", b"not listed: the suffix is upper case\n")
    _remove_stale(images, ADE20K_NAME, keep_images)
    _remove_stale(annotations, ADE20K_NAME, keep_labels)
    return {"root": str(Path(root) / "ade20k"), "images": n_images, "labels": len(keep_labels), "specials": specials}


def write_cocostuff(root: Path, seed: int, n_images: int, width: int, height: int,
                    faults: bool = True) -> dict[str, Any]:
    """Write `root/cocostuff/train2017/*.png` and their `root/coco/train2017/*.jpg`."""
    labels_dir, images_dir = Path(root) / "cocostuff" / "train2017", Path(root) / "coco" / "train2017"
    colors = _colors(seed)
    keep_images, keep_labels, specials = set(), set(), {}
    for index in range(n_images):
        rng = seeded_rng(seed, STREAMS["cocostuff"], index)
        tags = _tags("cocostuff", index, faults)
        name = f"{COCOSTUFF_IMAGE_OFFSET + index:012d}"
        label_width = width + 8 if "wrong_size" in tags else width
        labels = _scene_labels(rng, label_width, height, COCOSTUFF_STUFF, COCOSTUFF_THINGS)
        if "ignore_values" in tags:
            _band(labels, 255, cols=slice(0, max(1, width // 8)))
        if "dash_classes" in tags:
            _band(labels, COCOSTUFF_DASH[0], rows=slice(0, max(1, height // 6)))
            _band(labels, COCOSTUFF_DASH[2], rows=slice(height - max(1, height // 6), height))
        if "unused_classes" in tags:
            _band(labels, COCOSTUFF_UNUSED[0], rows=slice(0, max(1, height // 6)))
            _band(labels, COCOSTUFF_UNUSED[1], cols=slice(width - max(1, width // 8), width))
        if "unknown_label" in tags:
            _band(labels, 200, rows=slice(0, max(1, height // 8)))
        if "no_classes" in tags:
            labels[:] = 255
            _band(labels, COCOSTUFF_DASH[1], rows=slice(0, height // 2))
            _band(labels, COCOSTUFF_DASH[0], cols=slice(0, width // 3))
        atomic_write_bytes(labels_dir / f"{name}.png", _grey_png(labels))
        keep_labels.add(f"{name}.png")
        if "missing_image" not in tags:
            write_jpeg(images_dir / f"{name}.jpg", _paint(rng, labels[:, :width], colors))
            keep_images.add(f"{name}.jpg")
        if tags:
            specials[name] = list(tags)
    _remove_stale(labels_dir, COCOSTUFF_NAME, keep_labels)
    _remove_stale_range(images_dir, keep_images)
    return {"root": str(labels_dir), "images": len(keep_images), "labels": n_images, "specials": specials}


def _remove_stale_range(images_dir: Path, keep: set[str]) -> None:
    """Only our id range: coco/train2017 is shared with other demo sources."""
    if images_dir.is_dir():
        for path in sorted(images_dir.iterdir()):
            if (COCOSTUFF_NAME.match(path.name) and path.suffix == ".jpg" and path.name not in keep
                    and COCOSTUFF_IMAGE_OFFSET <= int(path.name[:12]) < COCOSTUFF_IMAGE_END):
                path.unlink()


def mapillary_config() -> dict[str, Any]:
    return {
        "labels": [
            {"color": list(color), "instances": True, "readable": readable, "name": name, "evaluate": True}
            for name, readable, color in MAPILLARY_LABELS
        ],
        "version": "2.0",
        "mapping": "public",
        "folder_structure": "{split}/{content}/{key:.{22}}.{ext}",
    }


def write_mapillary(root: Path, seed: int, n_images: int, width: int, height: int,
                    faults: bool = True) -> dict[str, Any]:
    """Write `root/mapillary/config_v2.0.json`, `training/v2.0/labels/*.png` (palette
    PNGs coloured by the config, as the real ones) and `training/images/*.jpg`."""
    base = Path(root) / "mapillary"
    labels_dir, images_dir = base / "training" / "v2.0" / "labels", base / "training" / "images"
    write_json(base / "config_v2.0.json", mapillary_config())
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(MAPILLARY_LABELS)] = [color for _, _, color in MAPILLARY_LABELS]
    keep_images, keep_labels, specials = set(), set(), {}
    for index in range(n_images):
        rng = seeded_rng(seed, STREAMS["mapillary"], index)
        tags = _tags("mapillary", index, faults)
        name = f"demo_mly_{index:05d}"
        label_width = width + 8 if "wrong_size" in tags else width
        labels = _scene_labels(rng, label_width, height, MAPILLARY_STUFF, MAPILLARY_THINGS)
        if "unlabeled_class" in tags:
            _band(labels, MAPILLARY_UNLABELED, rows=slice(height - max(1, height // 6), height))
        if "unknown_label" in tags:
            _band(labels, len(MAPILLARY_LABELS) + 3, cols=slice(0, max(1, width // 8)))
        atomic_write_bytes(labels_dir / f"{name}.png", _palette_png(labels, palette))
        keep_labels.add(f"{name}.png")
        if "missing_image" not in tags:
            write_jpeg(images_dir / f"{name}.jpg", _paint(rng, labels[:, :width], palette))
            keep_images.add(f"{name}.jpg")
        if tags:
            specials[name] = list(tags)
    _remove_stale(labels_dir, MAPILLARY_NAME, keep_labels)
    _remove_stale(images_dir, MAPILLARY_NAME, keep_images)
    return {"root": str(base), "images": len(keep_images), "labels": n_images, "specials": specials}
