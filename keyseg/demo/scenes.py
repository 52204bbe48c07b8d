"""Synthetic scenes: coloured shapes on a textured background.

Everything is driven by an explicit ``numpy.random.Generator``; nothing here
keeps global state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .geometry import KINDS, Point, Polygon, polygon_centroid, round_points, shape_polygon

# Saturated, clearly distinct colours (backgrounds are kept low-saturation).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 60),
    "blue": (35, 75, 220),
    "yellow": (240, 210, 25),
    "purple": (135, 50, 180),
    "orange": (245, 135, 15),
}
COLORS: tuple[str, ...] = tuple(PALETTE)

# Circumradius as a fraction of min(width, height).
SIZE_FACTORS: dict[str, float] = {"small": 0.11, "large": 0.2}
SIZES: tuple[str, ...] = tuple(SIZE_FACTORS)
PLACEMENT_TRIES = 300
MARGIN = 4.0


def seeded_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Independent, reproducible generator for item ``index`` of ``stream``."""
    return np.random.default_rng([int(seed), int(stream), int(index)])


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    size: str
    cx: float
    cy: float
    r: float
    rotation: float = 0.0

    @property
    def points(self) -> Polygon:
        return shape_polygon(self.kind, self.cx, self.cy, self.r, self.rotation)

    @property
    def rounded_points(self) -> Polygon:
        """The polygon as written to annotations and drawn into images."""
        return round_points(self.points)

    @property
    def rgb(self) -> tuple[int, int, int]:
        return PALETTE[self.color]

    def moved(self, cx: float, cy: float) -> "Shape":
        return Shape(self.kind, self.color, self.size, cx, cy, self.r, self.rotation)


@dataclass(frozen=True)
class ShapeSpec:
    kind: str
    color: str
    size: str


def sample_radius(rng: np.random.Generator, size: str, width: int, height: int) -> float:
    return SIZE_FACTORS[size] * min(width, height) * float(rng.uniform(0.92, 1.08))


def sample_rotation(rng: np.random.Generator, kind: str) -> float:
    if kind == "square":
        return math.radians(float(rng.uniform(-10.0, 10.0)))
    if kind in ("triangle", "star"):
        return math.radians(float(rng.uniform(-6.0, 6.0)))
    if kind == "hexagon":
        return math.radians(float(rng.uniform(0.0, 60.0)))
    if kind == "circle":
        return float(rng.uniform(0.0, 2.0 * math.pi / 40.0))
    return 0.0


def _fits(cx: float, cy: float, r: float, placed: Sequence[Shape]) -> bool:
    return all(math.hypot(cx - s.cx, cy - s.cy) > r + s.r + MARGIN for s in placed)


def place_shapes(
    rng: np.random.Generator,
    specs: Sequence[ShapeSpec],
    width: int,
    height: int,
    *,
    first_touches_left_border: bool = False,
) -> list[Shape]:
    """Place shapes without overlap (by circumscribed circles).

    The first spec is always placed; later ones that do not fit after
    ``PLACEMENT_TRIES`` attempts are dropped. With ``first_touches_left_border``
    the first shape is shifted so that its polygon pokes out of the image by a
    couple of pixels on the left (negative x coordinates).
    """
    placed: list[Shape] = []
    for i, spec in enumerate(specs):
        r = sample_radius(rng, spec.size, width, height)
        rot = sample_rotation(rng, spec.kind)
        lo_x, hi_x = r + 2.0, width - r - 2.0
        lo_y, hi_y = r + 2.0, height - r - 2.0
        if hi_x < lo_x or hi_y < lo_y:
            r = 0.45 * min(width, height)
            lo_x, hi_x, lo_y, hi_y = r, width - r, r, height - r
        shape = None
        for _ in range(PLACEMENT_TRIES):
            cx = float(rng.uniform(lo_x, hi_x))
            cy = float(rng.uniform(lo_y, hi_y))
            if _fits(cx, cy, r, placed):
                shape = Shape(spec.kind, spec.color, spec.size, cx, cy, r, rot)
                break
        if shape is None:
            if i == 0:
                shape = Shape(spec.kind, spec.color, spec.size, width / 2.0, height / 2.0, r, rot)
            else:
                continue
        if i == 0 and first_touches_left_border:
            min_x = min(p[0] for p in shape.points)
            shape = shape.moved(shape.cx + (-2.5 - min_x), shape.cy)
        placed.append(shape)
    return placed


def position_phrase(point: Point, width: int, height: int) -> str:
    """"on the left", "at the top right", "in the center", ..."""
    x, y = point
    col = "left" if x < width / 3.0 else ("right" if x > 2.0 * width / 3.0 else "")
    row = "top" if y < height / 3.0 else ("bottom" if y > 2.0 * height / 3.0 else "")
    if not col and not row:
        return "in the center"
    if not row:
        return f"on the {col}"
    if not col:
        return f"at the {row}"
    return f"at the {row} {col}"


def shape_position(shape: Shape, width: int, height: int) -> str:
    return position_phrase(polygon_centroid(shape.points), width, height)


def _muted(rng: np.random.Generator) -> np.ndarray:
    v = float(rng.uniform(95.0, 175.0))
    return np.clip(v + rng.uniform(-14.0, 14.0, size=3), 0, 255)


def make_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Low-saturation noise / stripes / gradient texture, uint8 (H, W, 3)."""
    style = int(rng.integers(0, 3))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    a, b = _muted(rng), _muted(rng)
    if style == 0:  # blotchy noise: coarse random grid, upsampled
        cell = int(rng.integers(8, 20))
        gh, gw = height // cell + 2, width // cell + 2
        grid = rng.uniform(0.0, 1.0, size=(gh, gw))
        t = grid[(yy // cell).astype(int), (xx // cell).astype(int)]
    elif style == 1:  # stripes at an angle
        ang = float(rng.uniform(0.0, math.pi))
        period = float(rng.uniform(10.0, 28.0))
        proj = xx * math.cos(ang) + yy * math.sin(ang)
        t = (np.floor(proj / (period / 2.0)) % 2).astype(np.float64)
    else:  # linear gradient
        ang = float(rng.uniform(0.0, 2.0 * math.pi))
        proj = xx * math.cos(ang) + yy * math.sin(ang)
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-9)
    img = a[None, None, :] * (1.0 - t[..., None]) + b[None, None, :] * t[..., None]
    img += rng.normal(0.0, 5.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def draw_polygons(
    image: Image.Image, polygons: Iterable[tuple[Sequence[Point], tuple[int, int, int]]]
) -> Image.Image:
    """Fill polygons (float vertices) in order with PIL at display orientation."""
    draw = ImageDraw.Draw(image)
    for pts, rgb in polygons:
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=tuple(rgb))
    return image


def polygon_mask(points: Sequence[Point], width: int, height: int) -> np.ndarray:
    """Binary uint8 mask rasterised exactly like :func:`draw_polygons`."""
    m = Image.new("L", (width, height), 0)
    ImageDraw.Draw(m).polygon([(float(x), float(y)) for x, y in points], fill=1)
    return np.asarray(m, dtype=np.uint8)


def blend_region(image: Image.Image, points: Sequence[Point], rgb: tuple[int, int, int], alpha: float) -> Image.Image:
    """Blend the polygon region towards ``rgb`` (haze / glare effects)."""
    arr = np.asarray(image, dtype=np.float64).copy()
    m = polygon_mask(points, image.width, image.height).astype(bool)
    arr[m] = arr[m] * (1.0 - alpha) + np.asarray(rgb, dtype=np.float64) * alpha
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def render(rng: np.random.Generator, shapes: Sequence[Shape], width: int, height: int) -> Image.Image:
    """Background from ``rng`` plus every shape drawn at its (rounded) polygon."""
    img = Image.fromarray(make_background(rng, width, height), "RGB")
    return draw_polygons(img, [(s.rounded_points, s.rgb) for s in shapes])


__all__ = [
    "COLORS",
    "KINDS",
    "PALETTE",
    "SIZES",
    "Shape",
    "ShapeSpec",
    "blend_region",
    "draw_polygons",
    "make_background",
    "place_shapes",
    "polygon_mask",
    "position_phrase",
    "render",
    "seeded_rng",
    "shape_position",
]
