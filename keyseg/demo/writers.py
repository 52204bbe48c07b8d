"""Deterministic, atomic file writers (JPEG with optional EXIF, JSON, pickle)."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from keyseg.io import atomic_write_bytes

JPEG_QUALITY = 92
PICKLE_PROTOCOL = 2
EXIF_ORIENTATION_TAG = 0x0112

# How to turn the display image into the stored pixels for an EXIF orientation,
# i.e. the inverse of what a reader (PIL ImageOps.exif_transpose, cv2.imread)
# applies. Values are PIL transpose methods.
_DISPLAY_TO_STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def encode_jpeg(image: Image.Image, orientation: Optional[int] = None) -> bytes:
    """JPEG bytes with fixed encoder options.

    ``image`` is the display-orientation picture. With ``orientation`` in
    2..8 the stored pixels are transformed so that applying the EXIF
    orientation gives ``image`` back, and the tag is written.
    """
    rgb = image.convert("RGB")
    kwargs: dict[str, Any] = {}
    if orientation is not None and orientation != 1:
        if orientation not in _DISPLAY_TO_STORED:
            raise ValueError(f"invalid EXIF orientation: {orientation}")
        rgb = rgb.transpose(_DISPLAY_TO_STORED[orientation])
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = int(orientation)
        kwargs["exif"] = exif.tobytes()
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False, progressive=False, **kwargs)
    return buf.getvalue()


def write_jpeg(path: Path, image: Image.Image, orientation: Optional[int] = None) -> Path:
    return atomic_write_bytes(path, encode_jpeg(image, orientation))


def dumps_json(obj: Any, *, indent: Optional[int] = 2, ensure_ascii: bool = True) -> str:
    """Key order is the dicts' insertion order (callers build them in a fixed order)."""
    if indent is None:
        return json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":"))
    return json.dumps(obj, ensure_ascii=ensure_ascii, indent=indent) + "\n"


def write_json(path: Path, obj: Any, *, indent: Optional[int] = 2, encoding: str = "utf-8") -> Path:
    """Write JSON with non-ASCII kept literally in ``encoding`` (e.g. "cp1252")."""
    text = dumps_json(obj, indent=indent, ensure_ascii=False)
    return atomic_write_bytes(path, text.encode(encoding))


def write_pickle(path: Path, obj: Any) -> Path:
    return atomic_write_bytes(path, pickle.dumps(obj, protocol=PICKLE_PROTOCOL))
