"""Mask PNG files: single channel, values 0 / 1 / 255, lossless."""

from __future__ import annotations

import cv2
import numpy as np


def encode_png(image: np.ndarray, compression: int = 1) -> bytes:
    """PNG bytes of a uint8 array. Level 1: masks compress well even at the fastest level."""
    ok, buffer = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, compression])
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
