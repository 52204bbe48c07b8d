"""Synthetic ReasonSeg split in its native layout (LabelMe JSON + JPEG)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from .geometry import KIND_INRADIUS, KINDS, ellipse_polygon, round_points
from .language import explanation, reason_texts
from .scenes import COLORS, SIZES, Shape, ShapeSpec, blend_region, place_shapes, render, seeded_rng, shape_position
from .writers import write_jpeg, write_json

SPLITS: tuple[str, ...] = ("train", "val", "test")
STREAM = 1
NAME_RE = re.compile(r"^demo_\d{6}\.(jpg|json)$")
HAZE_RGB, GLARE_RGB = (128, 128, 128), (255, 255, 255)


@dataclass(frozen=True)
class Special:
    """Deliberate edge cases for readers."""

    ignore: Optional[str] = None  # "partial": overlaps the target edge; "inside": fully inside it
    flag: bool = False  # extra deprecated "flag" polygon
    exif: Optional[int] = None  # EXIF orientation of the stored JPEG
    cp1252: bool = False  # JSON encoded in cp1252 with a non-ASCII text
    label_case: bool = False  # target label spelled "Target"
    two_targets: bool = False  # target made of two polygons
    border: bool = False  # target pokes out of the image (negative x)

    def tags(self) -> list[str]:
        out = []
        if self.ignore:
            out.append(f"ignore_{self.ignore}")
        if self.flag:
            out.append("flag")
        if self.exif:
            out.append(f"exif_{self.exif}")
        for name in ("cp1252", "label_case", "two_targets", "border"):
            if getattr(self, name):
                out.append(name)
        return out


# Keyed by (split, index within split). All present whenever images >= 8.
SPECIALS: dict[tuple[str, int], Special] = {
    ("train", 0): Special(ignore="partial"),
    ("train", 1): Special(flag=True, exif=6),
    ("train", 2): Special(cp1252=True, label_case=True, two_targets=True),
    ("train", 3): Special(border=True),
    ("val", 0): Special(ignore="inside"),
    ("val", 1): Special(flag=True, exif=8),
    ("test", 0): Special(exif=3),
}


def split_sizes(n_images: int) -> dict[str, int]:
    if n_images < 3:
        raise ValueError("ReasonSeg demo needs at least 3 images (one per split)")
    n_val = max(1, n_images // 4)
    n_test = max(1, n_images // 4)
    return {"train": n_images - n_val - n_test, "val": n_val, "test": n_test}


def assign_splits(n_images: int) -> list[tuple[str, int]]:
    """(split, local index) for every global image index."""
    out: list[tuple[str, int]] = []
    for split, n in split_sizes(n_images).items():
        out.extend((split, j) for j in range(n))
    return out


def sample_name(index: int) -> str:
    return f"demo_{index:06d}"


@dataclass
class ReasonSample:
    name: str
    split: str
    special: Special
    image: Image.Image  # display orientation
    orientation: Optional[int]
    record: dict[str, Any]  # LabelMe JSON
    encoding: str
    shapes: list[Shape]
    targets: list[Shape]
    explanatory: Optional[dict[str, str]] = field(default=None)


def _target_specs(rng: np.random.Generator, sp: Special, is_sentence: bool, n_shapes: int):
    kind = KINDS[int(rng.integers(0, len(KINDS)))]
    color = COLORS[int(rng.integers(0, len(COLORS)))]
    size = "large" if sp.ignore else SIZES[int(rng.integers(0, len(SIZES)))]
    plain = sp == Special()
    many = sp.two_targets or (plain and n_shapes >= 3 and bool(rng.random() < 0.15))
    need_size = (not is_sentence) and (not many) and bool(rng.random() < 0.3)
    specs = [ShapeSpec(kind, color, size)]
    if many:
        specs.append(ShapeSpec(kind, color, SIZES[int(rng.integers(0, len(SIZES)))]))
    if need_size:
        specs.append(ShapeSpec(kind, color, "small" if size == "large" else "large"))
    total = max(n_shapes, len(specs) + 1)  # always at least one distractor
    while len(specs) < total:
        k = KINDS[int(rng.integers(0, len(KINDS)))]
        c = COLORS[int(rng.integers(0, len(COLORS)))]
        if k == kind and (is_sentence or many or c == color):
            continue
        specs.append(ShapeSpec(k, c, SIZES[int(rng.integers(0, len(SIZES)))]))
    return specs, many, need_size


def _polygon(label: str, points) -> dict[str, Any]:
    return {
        "label": label,
        "points": [[float(x), float(y)] for x, y in round_points(points)],
        "group_id": None,
        "shape_type": "polygon",
        "flags": {},
    }


def make_reasonseg_sample(seed: int, index: int, n_images: int, width: int, height: int) -> ReasonSample:
    """Build (but do not write) ReasonSeg image ``index``; fully determined by the arguments."""
    split, local = assign_splits(n_images)[index]
    sp = SPECIALS.get((split, local), Special())
    rng = seeded_rng(seed, STREAM, index)
    is_sentence = local % 2 == 0
    n_shapes = int(rng.integers(2, 5))
    specs, many, need_size = _target_specs(rng, sp, is_sentence, n_shapes)
    shapes = place_shapes(rng, specs, width, height, first_touches_left_border=sp.border)
    target = shapes[0]
    if many and not (len(shapes) > 1 and (shapes[1].kind, shapes[1].color) == (target.kind, target.color)):
        many = False
    targets = shapes[:2] if many else shapes[:1]
    image = render(rng, shapes, width, height)

    polys: list[dict[str, Any]] = []
    if sp.flag:
        x0, y0 = float(rng.uniform(0, 0.6 * width)), float(rng.uniform(0, 0.6 * height))
        bw, bh = float(rng.uniform(0.15, 0.35)) * width, float(rng.uniform(0.15, 0.35)) * height
        polys.append(_polygon("flag", [(x0, y0), (x0 + bw, y0), (x0 + bw, y0 + bh), (x0, y0 + bh)]))
    for j, t in enumerate(targets):
        polys.append(_polygon("Target" if (sp.label_case and j == 0) else "target", t.points))
    if sp.ignore == "partial":
        pts = target.points
        vx, vy = pts[int(rng.integers(0, len(pts)))]
        region = round_points(ellipse_polygon(vx, vy, 0.5 * target.r, 0.4 * target.r, 32))
        image = blend_region(image, region, HAZE_RGB, 0.55)
        polys.append(_polygon("ignore", region))
    elif sp.ignore == "inside":
        inr = KIND_INRADIUS[target.kind] * target.r
        ang = float(rng.uniform(0.0, 2.0 * np.pi))
        gx, gy = target.cx + 0.3 * inr * np.cos(ang), target.cy + 0.3 * inr * np.sin(ang)
        region = round_points(ellipse_polygon(float(gx), float(gy), 0.4 * inr, 0.4 * inr, 24))
        image = blend_region(image, region, GLARE_RGB, 0.5)
        polys.append(_polygon("ignore", region))

    n_texts = int(rng.integers(1, 6)) if split == "train" else 1
    words = dict(kind=target.kind, color=target.color, size_word=target.size, position=shape_position(target, width, height))
    texts = reason_texts(
        rng, n_texts, many=many, is_sentence=is_sentence, need_size=need_size, nonascii_first=sp.cp1252, **words
    )
    name = sample_name(index)
    record = {
        "version": "4.5.6",
        "flags": {},
        "shapes": polys,
        "imagePath": f"{name}.jpg",
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
        "text": [t for t, _ in texts],
        "is_sentence": bool(is_sentence),
    }
    expl = None
    if split == "train":
        query, prop = max(texts, key=lambda tp: len(tp[0]))
        outputs = explanation(many=many, need_size=need_size, prop=prop, **words)
        expl = {"image": f"{name}.jpg", "json": f"{name}.json", "query": query, "outputs": outputs}
    return ReasonSample(
        name=name,
        split=split,
        special=sp,
        image=image,
        orientation=sp.exif,
        record=record,
        encoding="cp1252" if sp.cp1252 else "utf-8",
        shapes=shapes,
        targets=targets,
        explanatory=expl,
    )


def write_reasonseg(root: Path, seed: int, n_images: int, width: int, height: int) -> dict[str, Any]:
    """Write ``root/ReasonSeg/{train,val,test,explanatory}``; returns a summary."""
    base = Path(root) / "ReasonSeg"
    counts = {s: 0 for s in SPLITS}
    keep: dict[str, set[str]] = {s: set() for s in SPLITS}
    explanatory: list[dict[str, str]] = []
    specials: dict[str, list[str]] = {}
    for index in range(n_images):
        smp = make_reasonseg_sample(seed, index, n_images, width, height)
        split_dir = base / smp.split
        write_jpeg(split_dir / f"{smp.name}.jpg", smp.image, smp.orientation)
        write_json(split_dir / f"{smp.name}.json", smp.record, encoding=smp.encoding)
        keep[smp.split].update({f"{smp.name}.jpg", f"{smp.name}.json"})
        counts[smp.split] += 1
        if smp.explanatory is not None:
            explanatory.append(smp.explanatory)
        if smp.special.tags():
            specials[f"{smp.split}/{smp.name}"] = smp.special.tags()
    for split in SPLITS:  # drop demo files left over from an earlier, larger run
        for p in sorted((base / split).iterdir()):
            if NAME_RE.match(p.name) and p.name not in keep[split]:
                p.unlink()
    write_json(base / "explanatory" / "train.json", explanatory)
    return {
        "root": str(base),
        "splits": counts,
        "explanatory": len(explanatory),
        "specials": specials,
    }
