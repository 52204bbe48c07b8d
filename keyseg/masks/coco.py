"""COCO segmentations (polygons or RLE) to one binary mask, via pycocotools."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask


class SegmentationError(ValueError):
    """A segmentation pycocotools cannot decode at the image's size."""


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """uint8 (height, width) mask with 1 where any part of the segmentation is.

    Accepts the forms COCO files use: a list of flat polygons, one RLE dict (compressed
    `counts` as str or bytes, or uncompressed as a list), or a list of RLE dicts. An
    empty segmentation is an all-zero mask, as in the reference.
    """
    if segmentation is None or (isinstance(segmentation, list) and len(segmentation) == 0):
        return np.zeros((height, width), dtype=np.uint8)
    try:
        rles = _to_rles(segmentation, height, width)
        decoded = coco_mask.decode(rles)  # (h, w, parts)
    except SegmentationError:
        raise
    except Exception as error:  # pycocotools raises TypeError/ValueError/IndexError
        raise SegmentationError(f"pycocotools cannot decode it ({type(error).__name__}: {error})") from None
    if decoded.shape[:2] != (height, width):
        raise SegmentationError(f"decodes to {decoded.shape[1]}x{decoded.shape[0]}, image is {width}x{height}")
    return (decoded.max(axis=2) > 0).astype(np.uint8)


def _to_rles(segmentation, height: int, width: int) -> list[dict]:
    parts = segmentation if isinstance(segmentation, list) else [segmentation]
    if all(isinstance(part, list) for part in parts):
        polygons = [part for part in parts]
        for polygon in polygons:
            if len(polygon) < 6 or len(polygon) % 2:
                raise SegmentationError(f"a polygon has {len(polygon)} coordinates (needs an even number >= 6)")
        return coco_mask.frPyObjects(polygons, height, width)
    rles = []
    for part in parts:
        if not isinstance(part, dict) or "counts" not in part or "size" not in part:
            raise SegmentationError("expected polygons or RLE dicts with `size` and `counts`")
        if [int(v) for v in part["size"]] != [height, width]:
            raise SegmentationError(f"RLE size {part['size']} differs from the image's [{height}, {width}]")
        counts = part["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            rles.append(coco_mask.frPyObjects(part, height, width))
        else:
            rles.append({"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts})
    return rles


def mask_to_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a binary mask, `counts` as str (JSON-ready)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
