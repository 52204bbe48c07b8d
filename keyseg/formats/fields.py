"""Small type checks shared by the format schemas (LabelMe, REFER, our manifests).

Every check answers "is this value usable as X" without raising, so a schema can name
the first bad field of a record and move on to the next record.
"""

from __future__ import annotations

import math

# Polygon coordinates become int32 pixel positions (the reference casts with numpy, and
# pycocotools rounds to int); a coordinate beyond that range is no position at all.
COORDINATE_LIMIT = 2**31 - 1


def type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def is_int(value) -> bool:
    """An integer, not a bool (JSON `true` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def is_text(value) -> bool:
    """A string that can be written as UTF-8: JSON `\\ud800` escapes and undecodable
    pickle bytes give lone surrogates, which would fail only when the output is written."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_text_list(value, allow_empty: bool = True) -> bool:
    return isinstance(value, list) and (allow_empty or bool(value)) and all(is_text(item) for item in value)
