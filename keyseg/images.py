"""Image facts without decoding pixels: the size OpenCV's `imread` would give.

The reference takes the mask size from `cv2.imread`, which applies the JPEG EXIF
orientation. Decoding a 1000 x 750 JPEG costs milliseconds; its header and EXIF block
give the same answer in microseconds. Non-JPEG files fall back to a real OpenCV decode,
so the answer is OpenCV's wherever our header logic would be a guess.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from struct import error as struct_error
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from keyseg.errors import UsageError

# Pixels an image may have before it is refused unread (a decompression bomb: a few
# hundred bytes of header can announce 30000 x 30000 pixels, 2.7 GB decoded). 100
# megapixels is ten times the largest COCO or ReasonSeg image. `set_max_image_pixels`
# (the stages' --max-image-pixels flag) changes it for the process.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
_max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS

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


def set_max_image_pixels(pixels: int) -> None:
    """Change the pixel bound for this process (and the workers it starts afterwards)."""
    global _max_image_pixels
    if pixels < 1:
        raise ValueError(f"the image pixel bound must be positive, got {pixels}")
    _max_image_pixels = int(pixels)
    # Pillow refuses at twice its own limit; keep its guard at least as generous as ours.
    Image.MAX_IMAGE_PIXELS = max(int(pixels), DEFAULT_MAX_IMAGE_PIXELS)


def max_image_pixels() -> int:
    return _max_image_pixels


@contextmanager
def image_pixel_bound(pixels: int | None):
    """Within, the pixel bound is `pixels` (None: left as it is); put back on the way out,
    so a stage called as a library leaves the process as it found it."""
    if pixels is None:
        yield
        return
    if not isinstance(pixels, int) or isinstance(pixels, bool) or pixels < 1:
        raise UsageError(f"--max-image-pixels must be a positive integer, got {pixels!r}")
    previous = _max_image_pixels
    set_max_image_pixels(pixels)
    try:
        yield
    finally:
        set_max_image_pixels(previous)


def check_image_size(width: int, height: int) -> None:
    """Raise ImageError when an image is larger than the pixel bound (or not positive)."""
    if width < 1 or height < 1:
        raise ImageError(f"image size {width}x{height} is not positive")
    if width * height > _max_image_pixels:
        raise ImageError(f"image is {width}x{height} = {width * height:,} pixels, over the bound of "
                         f"{_max_image_pixels:,} (--max-image-pixels)")


def _header(data: bytes) -> tuple[str, int, int, int]:
    """(format, stored width, stored height, EXIF orientation) from the header alone."""
    if not data:
        raise ImageError("empty file")
    try:
        # Our own bound is checked below; Pillow's would raise before we can name the size.
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or "unknown"
            stored_width, stored_height = image.size
            orientation = 1
            if image_format == "JPEG":
                orientation = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Image.DecompressionBombError as error:
        raise ImageError(f"decompression bomb refused ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, struct_error) as error:
        raise ImageError(f"not a readable image ({error})") from None
    check_image_size(stored_width, stored_height)
    return image_format, stored_width, stored_height, orientation


def image_info(data: bytes, decode: bool = False) -> ImageInfo:
    """Size and format of an encoded image, as OpenCV's default `imread` sees it.

    With `decode=True` the pixels are decoded by OpenCV as well (slow, but it proves
    the file is readable end to end).
    """
    image_format, stored_width, stored_height, orientation = _header(data)
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
    """BGR pixels exactly as `cv2.imread(path)` returns them (EXIF applied).

    The header is read first: an image over the pixel bound is refused before OpenCV
    allocates anything."""
    _header(data)
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise ImageError(f"OpenCV cannot decode it ({str(error).strip().splitlines()[-1][:200]})") from None
    if decoded is None:
        raise ImageError("OpenCV cannot decode it")
    return decoded
