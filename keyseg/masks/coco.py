"""COCO segmentations (polygons or RLE) to one binary mask, via pycocotools."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask

from keyseg.formats.fields import COORDINATE_LIMIT, is_int, is_number, type_name
from keyseg.images import ImageError, check_image_size
from keyseg.masks.raster import check_outline


class SegmentationError(ValueError):
    """A segmentation pycocotools cannot decode at the image's size."""


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """uint8 (height, width) mask with 1 where any part of the segmentation is.

    Accepts the forms COCO files use: a list of flat polygons, one RLE dict (compressed
    `counts` as str or bytes, or uncompressed as a list), or a list of RLE dicts. An
    empty segmentation is an all-zero mask, as in the reference.
    """
    try:
        check_image_size(width, height)
    except ImageError as error:
        raise SegmentationError(str(error)) from None
    if segmentation is None or (isinstance(segmentation, list) and len(segmentation) == 0):
        return np.zeros((height, width), dtype=np.uint8)
    try:
        rles = _to_rles(segmentation, height, width)
        # The union is taken on the RLEs: decoding every part first would hold one full
        # mask per part (a file with thousands of parts, thousands of masks).
        decoded = coco_mask.decode(coco_mask.merge(rles) if len(rles) > 1 else rles[0])
    except SegmentationError:
        raise
    except Exception as error:  # pycocotools raises TypeError/ValueError/IndexError
        raise SegmentationError(f"pycocotools cannot decode it ({type(error).__name__}: {error})") from None
    if decoded.shape[:2] != (height, width):
        raise SegmentationError(f"decodes to {decoded.shape[1]}x{decoded.shape[0]}, image is {width}x{height}")
    return (decoded > 0).astype(np.uint8)


def _to_rles(segmentation, height: int, width: int) -> list[dict]:
    parts = segmentation if isinstance(segmentation, list) else [segmentation]
    if all(isinstance(part, list) for part in parts):
        for polygon in parts:
            if len(polygon) < 6 or len(polygon) % 2:
                raise SegmentationError(f"a polygon has {len(polygon)} coordinates (needs an even number >= 6)")
            if not all(is_number(value) and abs(value) <= COORDINATE_LIMIT for value in polygon):
                raise SegmentationError(f"a polygon has a coordinate that is not a finite number "
                                        f"within +-{COORDINATE_LIMIT}")
            too_long = check_outline(polygon, height, width)
            if too_long:
                raise SegmentationError(f"a polygon is refused: {too_long}")
        return list(coco_mask.frPyObjects(parts, height, width))
    rles = []
    for part in parts:
        if not isinstance(part, dict) or "counts" not in part or "size" not in part:
            raise SegmentationError("expected polygons or RLE dicts with `size` and `counts`")
        size = part["size"]
        if not isinstance(size, list) or len(size) != 2 or not all(is_int(value) for value in size):
            raise SegmentationError(f"RLE `size` is {size!r:.60}, expected [height, width] integers")
        try:
            check_image_size(size[1], size[0])
        except ImageError as error:
            raise SegmentationError(f"RLE `size`: {error}") from None
        if size != [height, width]:
            raise SegmentationError(f"RLE size {size} differs from the image's [{height}, {width}]")
        counts = part["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            rles.append(coco_mask.frPyObjects(part, height, width))
        elif isinstance(counts, (str, bytes)):
            rles.append({"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts})
        else:
            raise SegmentationError(f"RLE `counts` is {type_name(counts)}, expected a string or a list")
    return rles


def mask_to_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a binary mask, `counts` as str (JSON-ready)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
