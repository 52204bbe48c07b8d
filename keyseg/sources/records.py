"""What a source converter returns, and how a record id is made."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from keyseg.images import ImageError, ImageInfo, image_info

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Issue:
    """One warning or error about an input file, as shown in the report."""

    severity: str  # "warning" or "error"
    file: str  # path relative to the data dir
    code: str  # machine-readable kind
    reason: str  # human-readable

    def to_dict(self) -> dict:
        return {"severity": self.severity, "file": self.file, "code": self.code, "reason": self.reason}


@dataclass
class PreparedTarget:
    texts: list[str]
    is_sentence: bool
    mask: np.ndarray  # uint8 (height, width): 0, 1, 255
    explanatory: dict | None = None  # {"query", "outputs"} from explanatory/train.json
    ann_id: int | None = None
    ref_id: int | None = None
    outlines: list[np.ndarray] = field(default_factory=list)  # int32 (N, 2) polygons, for overlays


@dataclass
class PreparedImage:
    """A converted image, or `targets is None` when an error made it unusable.

    Error issues that come with targets cost only their own target (a refCOCO ref whose
    segmentation cannot be decoded): the image's other targets are still written."""

    image: str  # relative to the data dir
    width: int
    height: int
    targets: list[PreparedTarget] | None
    issues: list[Issue]


def record_id(source: str, split: str, name: str) -> str:
    """Stable id without dots or spaces (shard sample keys are cut at the first dot).

    Names that need changing get a short hash of the original so two names that
    sanitise alike stay distinct.
    """
    safe = _UNSAFE_ID_CHARS.sub("_", name)
    if safe != name:
        safe = f"{safe}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"
    source_part = _UNSAFE_ID_CHARS.sub("_", source.replace("+", "plus"))
    return f"{source_part}-{split}-{safe}"


def read_image_header(path: str, data: bytes, decode: bool) -> tuple[ImageInfo | None, list[Issue]]:
    """An image's size from its bytes (fully decoded with `decode`): None with a `bad_image`
    error when unusable, else a `truncated_image` warning when its end marker is missing."""
    try:
        info = image_info(data, decode=decode)
    except ImageError as error:
        return None, [Issue("error", path, "bad_image", str(error))]
    if info.truncated:
        return info, [Issue("warning", path, "truncated_image", "no JPEG end marker: the file may be cut short")]
    return info, []
