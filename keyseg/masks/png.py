"""Mask PNG files: single channel, values 0 / 1 / 255, lossless."""

from __future__ import annotations

import cv2
import numpy as np


# Masks are long runs of one value: no PNG row filter plus zlib's run-length strategy
# encodes a 1000 x 750 mask in under 2 ms (OpenCV's defaults take 5-15 ms) and smaller.
MASK_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 6, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
                   cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]


def encode_png(image: np.ndarray, params: list[int] | None = None) -> bytes:
    """PNG bytes of a uint8 array; `params` are OpenCV imwrite flags (default: for masks)."""
    ok, buffer = cv2.imencode(".png", image, MASK_PNG_PARAMS if params is None else params)
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    return buffer.tobytes()


def read_mask_png(path) -> np.ndarray:
    """A mask written by `encode_png`, as uint8 (height, width)."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError(f"{path}: not a readable PNG")
    if mask.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel mask, found shape {mask.shape}")
    return mask
