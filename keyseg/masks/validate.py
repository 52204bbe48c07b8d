"""Geometry checks of LabelMe polygons with shapely.

The reference rasterises degenerate polygons without a word; we keep its result and
report what is odd, so a user can decide (or turn warnings into errors with --strict).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.validation import explain_validity

from keyseg.masks.raster import is_flag_label


@dataclass(frozen=True)
class ShapeWarning:
    code: str  # machine-readable kind, e.g. "self_intersection"
    detail: str  # human-readable, names the shape
    shape_index: int | None = None  # index in the file's `shapes`, None for the whole file

    def to_dict(self) -> dict:
        return {"code": self.code, "detail": self.detail, "shape_index": self.shape_index}


def is_known_label(label: str) -> bool:
    lowered = label.lower()
    return lowered in ("target", "flag") or "ignore" in lowered


def validate_shapes(shapes: list, width: int, height: int) -> list[ShapeWarning]:
    """Warnings for a list of shapes with `.label` and `.points` (see formats.labelme)."""
    warnings: list[ShapeWarning] = []
    drawn = [(index, shape) for index, shape in enumerate(shapes) if not is_flag_label(shape.label)]
    if not drawn:
        what = "no shapes" if not shapes else "only `flag` shapes"
        warnings.append(ShapeWarning("no_shapes", f"{what}: the mask is empty"))
    for index, shape in drawn:
        name = f"shape {index} ({shape.label!r})"
        if not is_known_label(shape.label):
            warnings.append(ShapeWarning("unknown_label", f"{name}: unknown label, drawn as target", index))
        points = np.asarray(shape.points, dtype=np.float64).reshape(-1, 2)
        if len(points) < 3:
            warnings.append(ShapeWarning("too_few_points", f"{name}: {len(points)} point(s)", index))
        else:
            polygon = shapely.Polygon(points)
            # A bow-tie has zero signed area but covers pixels: measure the repaired shape.
            if shapely.make_valid(polygon).area == 0:
                warnings.append(ShapeWarning("zero_area", f"{name}: zero area", index))
            elif not polygon.is_valid:
                warnings.append(ShapeWarning("self_intersection", f"{name}: {explain_validity(polygon)}", index))
        if len(points):
            pixels = points.astype(np.int32)  # the coordinates the rasteriser uses
            outside = (pixels[:, 0] < 0) | (pixels[:, 1] < 0) | (pixels[:, 0] >= width) | (pixels[:, 1] >= height)
            if outside.any():
                warnings.append(
                    ShapeWarning(
                        "outside_image",
                        f"{name}: {int(outside.sum())} of {len(points)} points outside the {width}x{height} image",
                        index,
                    )
                )
    return warnings
