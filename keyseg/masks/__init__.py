"""Masks: polygons and COCO segmentations to target/ignore arrays, validation, pictures."""

from keyseg.masks.raster import IGNORE_VALUE, TARGET_VALUE, Polygon, rasterize_polygons

__all__ = ["IGNORE_VALUE", "TARGET_VALUE", "Polygon", "rasterize_polygons"]
