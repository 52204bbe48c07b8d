"""Plain-float polygon helpers for the synthetic demo scenes.

All polygons are lists of ``(x, y)`` float tuples in image pixel coordinates
(x to the right, y downwards), i.e. the same convention as LabelMe and COCO.
"""

from __future__ import annotations

import math
from typing import Sequence

Point = tuple[float, float]
Polygon = list[Point]

KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond")
CONVEX_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "hexagon", "diamond")

CIRCLE_VERTICES = 40
STAR_INNER = 0.45
DIAMOND_HALF_WIDTH = 0.65

# Radius of the largest circle around the centre that fits inside the shape,
# as a fraction of the circumradius ``r`` (used to place things inside shapes).
KIND_INRADIUS: dict[str, float] = {
    "circle": math.cos(math.pi / CIRCLE_VERTICES),
    "square": math.cos(math.pi / 4),
    "triangle": 0.5,
    "star": STAR_INNER * math.cos(math.radians(36)) * 0.9,
    "hexagon": math.cos(math.pi / 6),
    "diamond": DIAMOND_HALF_WIDTH / math.hypot(1.0, DIAMOND_HALF_WIDTH),
}


def regular_polygon(cx: float, cy: float, r: float, n: int, start: float) -> Polygon:
    """``n`` vertices on a circle of radius ``r``; ``start`` is the first angle (radians)."""
    return [
        (cx + r * math.cos(start + 2.0 * math.pi * k / n), cy + r * math.sin(start + 2.0 * math.pi * k / n))
        for k in range(n)
    ]


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, n: int = 32) -> Polygon:
    return [(cx + rx * math.cos(2.0 * math.pi * k / n), cy + ry * math.sin(2.0 * math.pi * k / n)) for k in range(n)]


def shape_polygon(kind: str, cx: float, cy: float, r: float, rotation: float = 0.0) -> Polygon:
    """Vertices of a shape of circumradius ``r`` centred at ``(cx, cy)``.

    ``rotation`` is in radians. Triangles and stars point upwards at rotation 0;
    diamonds are a vertical rhombus and ignore ``rotation`` (so they never look
    like a square).
    """
    up = -math.pi / 2.0
    if kind == "circle":
        return regular_polygon(cx, cy, r, CIRCLE_VERTICES, rotation)
    if kind == "square":
        return regular_polygon(cx, cy, r, 4, math.pi / 4.0 + rotation)
    if kind == "triangle":
        return regular_polygon(cx, cy, r, 3, up + rotation)
    if kind == "hexagon":
        return regular_polygon(cx, cy, r, 6, rotation)
    if kind == "star":
        pts: Polygon = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * STAR_INNER
            ang = up + rotation + math.pi * k / 5.0
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    if kind == "diamond":
        hw = r * DIAMOND_HALF_WIDTH
        return [(cx, cy - r), (cx + hw, cy), (cx, cy + r), (cx - hw, cy)]
    raise ValueError(f"unknown shape kind: {kind!r}")


def round_points(points: Sequence[Point], ndigits: int = 2) -> Polygon:
    return [(round(float(x), ndigits), round(float(y), ndigits)) for x, y in points]


def polygon_area(points: Sequence[Point]) -> float:
    """Absolute shoelace area."""
    s = 0.0
    n = len(points)
    for i in range(n):
        x0, y0 = points[i]
        x1, y1 = points[(i + 1) % n]
        s += x0 * y1 - x1 * y0
    return abs(s) / 2.0


def polygon_centroid(points: Sequence[Point]) -> Point:
    """Area centroid of a simple polygon (vertex mean if degenerate)."""
    a = cx = cy = 0.0
    n = len(points)
    for i in range(n):
        x0, y0 = points[i]
        x1, y1 = points[(i + 1) % n]
        cross = x0 * y1 - x1 * y0
        a += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if abs(a) < 1e-9:
        return (sum(p[0] for p in points) / n, sum(p[1] for p in points) / n)
    return (cx / (3.0 * a), cy / (3.0 * a))


def bbox_xywh(points: Sequence[Point]) -> list[float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def clip_vertical(points: Sequence[Point], x_cut: float, keep_left: bool) -> Polygon:
    """Clip a polygon by the half-plane ``x <= x_cut`` (or ``x >= x_cut``).

    Sutherland-Hodgman against a single edge; exact for convex polygons.
    """

    def inside(p: Point) -> bool:
        return p[0] <= x_cut if keep_left else p[0] >= x_cut

    def cross(p: Point, q: Point) -> Point:
        t = (x_cut - p[0]) / (q[0] - p[0])
        return (x_cut, p[1] + t * (q[1] - p[1]))

    out: Polygon = []
    n = len(points)
    for i in range(n):
        cur, nxt = points[i], points[(i + 1) % n]
        if inside(cur):
            out.append(cur)
            if not inside(nxt):
                out.append(cross(cur, nxt))
        elif inside(nxt):
            out.append(cross(cur, nxt))
    return out
