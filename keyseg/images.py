"""Image facts without decoding pixels: the size OpenCV's `imread` would give.

The reference takes the mask size from `cv2.imread`, which applies the JPEG EXIF
orientation. Decoding a 1000 x 750 JPEG costs milliseconds; its header and EXIF block
give the same answer in microseconds. Non-JPEG files fall back to a real OpenCV decode,
so the answer is OpenCV's wherever our header logic would be a guess.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

EXIF_ORIENTATION_TAG = 0x0112
# Orientations 5-8 transpose the stored pixels (OpenCV and the EXIF spec agree).
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
JPEG_END_MARKER = b"\xff\xd9"


class ImageError(ValueError):
    """An image that is missing, empty or not decodable."""


@dataclass(frozen=True)
class ImageInfo:
    width: int  # after EXIF orientation, as cv2.imread returns it
    height: int
    format: str
    orientation: int  # EXIF orientation tag, 1 when absent
    truncated: bool  # JPEG without an end-of-image marker near its end


def image_info(data: bytes, decode: bool = False) -> ImageInfo:
    """Size and format of an encoded image, as OpenCV's default `imread` sees it.

    With `decode=True` the pixels are decoded by OpenCV as well (slow, but it proves
    the file is readable end to end).
    """
    if not data:
        raise ImageError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or "unknown"
            stored_width, stored_height = image.size
            orientation = 1
            if image_format == "JPEG":
                orientation = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"not a readable image ({error})") from None

    if image_format != "JPEG" or decode:
        decoded = decode_image(data)
        height, width = decoded.shape[:2]
    elif orientation in TRANSPOSING_ORIENTATIONS:
        width, height = stored_height, stored_width
    else:
        width, height = stored_width, stored_height
    truncated = image_format == "JPEG" and JPEG_END_MARKER not in data[-4096:]
    return ImageInfo(width, height, image_format, orientation, truncated)


def decode_image(data: bytes) -> np.ndarray:
    """BGR pixels exactly as `cv2.imread(path)` returns them (EXIF applied)."""
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageError("OpenCV cannot decode it")
    return decoded
