"""ReasonSeg polygons to a target/ignore mask, bit-exact with the reference (docs/fidelity.md M3).

The reference draws with OpenCV, so we do too: re-implementing OpenCV's line and
polygon scan conversion by hand would be a second source of truth to keep in sync.
What we add is speed where it cannot change the result (areas are counted on the
shape's bounding-box crop instead of a full-image canvas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from keyseg.images import max_image_pixels

TARGET_VALUE = 1
IGNORE_VALUE = 255

# OpenCV and pycocotools walk a polygon's whole outline, also where it lies outside the
# image: time (OpenCV) and memory (pycocotools, 5x supersampled) grow with its length, so
# a few bytes of coordinates can ask for minutes or gigabytes. A real outline is a few
# times the image's perimeter; one over this many times is refused.
OUTLINE_FACTOR = 64


@dataclass(frozen=True)
class Polygon:
    """One LabelMe shape as the rasteriser sees it."""

    label: str
    points: np.ndarray  # (N, 2) int32, already truncated toward zero

    @classmethod
    def from_points(cls, label: str, points) -> "Polygon":
        # The reference builds `np.array(points, dtype=np.int32)`: float -> int truncates.
        array = np.array(points, dtype=np.float64).reshape(-1, 2)
        return cls(label=label, points=array.astype(np.int32))

    @property
    def value(self) -> int:
        return IGNORE_VALUE if "ignore" in self.label.lower() else TARGET_VALUE


def outline_length(points: np.ndarray) -> float:
    """Length of a closed polygon's outline; `points` is (N, 2)."""
    if len(points) < 2:
        return 0.0
    return float(np.hypot(*(np.roll(points, -1, axis=0) - points).T).sum())


def outline_limit(height: int, width: int) -> float:
    # A 1 x 10^8 image is within the pixel bound but its perimeter is not a useful scale:
    # no image counts as wider than the square the bound allows.
    side_sum = min(height + width, 2 * math.isqrt(max_image_pixels()))
    return float(OUTLINE_FACTOR * 2 * side_sum)


def check_outline(points, height: int, width: int) -> str | None:
    """Why a polygon is too long to draw on a height x width image, or None."""
    length = outline_length(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    if length > outline_limit(height, width):
        return (f"its outline is {length:,.0f} pixels long, over {OUTLINE_FACTOR} times the "
                f"{width}x{height} image's perimeter")
    return None


def is_flag_label(label: str) -> bool:
    """Shapes labelled `flag` are deprecated annotations that the reference skips."""
    return label.lower() == "flag"


def _draw(canvas: np.ndarray, points: np.ndarray, value: int) -> None:
    contour = points.reshape(1, -1, 2)
    cv2.polylines(canvas, contour, True, value, 1)
    cv2.fillPoly(canvas, contour, value)


def polygon_area(points: np.ndarray, height: int, width: int) -> int:
    """Pixels a shape covers when drawn alone on a height x width canvas.

    Drawn on the crop of its bounding box and the image: integer translation does not
    change OpenCV's scan conversion, and nothing outside the bounding box is drawn.
    """
    if len(points) == 0:
        return 0
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    x0, y0 = max(int(x0), 0), max(int(y0), 0)
    x1, y1 = min(int(x1), width - 1), min(int(y1), height - 1)
    if x1 < x0 or y1 < y0:
        # Entirely outside the image: nothing is drawn.
        return 0
    # Clipping a line at an image border is translation-equivariant only when the
    # crop keeps the image border where the polygon crosses it: x0/y0 are 0 then.
    canvas = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    _draw(canvas, points - np.array([x0, y0], dtype=np.int32), 1)
    return int(np.count_nonzero(canvas))


def draw_order(areas: list[int]) -> np.ndarray:
    """Largest first, exactly as the reference's `np.argsort(areas)[::-1]` (ties included).

    The reference's areas are numpy uint64 sums, so the dtype is uint64 here too: the
    order of equal areas depends on the sort kernel numpy picks for the dtype.
    """
    return np.argsort(np.asarray(areas, dtype=np.uint64))[::-1]


def rasterize_polygons(polygons: list[Polygon], height: int, width: int) -> np.ndarray:
    """uint8 (height, width) mask: 0 background, 1 target, 255 ignore.

    `polygons` must already exclude `flag` shapes (see `is_flag_label`). Shapes without
    points are left out: the reference crashes on them; we report them instead.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    drawable = [polygon for polygon in polygons if len(polygon.points) > 0]
    areas = [polygon_area(polygon.points, height, width) for polygon in drawable]
    for index in draw_order(areas):
        polygon = drawable[index]
        _draw(mask, polygon.points, polygon.value)
    return mask
