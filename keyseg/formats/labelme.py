"""ReasonSeg's LabelMe-style JSON files (reference-semantics section 1)."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class LabelMeShape:
    label: str
    points: list  # [[x, y], ...] as written in the file (floats or ints)


@dataclass(frozen=True)
class LabelMeFile:
    texts: list[str]
    is_sentence: bool
    shapes: list[LabelMeShape]
    encoding: str  # "utf-8" or "cp1252": the one that decoded the file


class LabelMeError(ValueError):
    """The file cannot be used; the message is the reason (the caller adds the path)."""


def decode_json_text(data: bytes) -> tuple[object, str]:
    """Parse JSON bytes as UTF-8, else as cp1252 (some ReasonSeg files are cp1252)."""
    try:
        return json.loads(data.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    except json.JSONDecodeError as error:
        raise LabelMeError(f"invalid JSON ({error})") from None
    try:
        return json.loads(data.decode("cp1252")), "cp1252"
    except UnicodeDecodeError as error:
        raise LabelMeError(f"neither UTF-8 nor cp1252 ({error})") from None
    except json.JSONDecodeError as error:
        raise LabelMeError(f"invalid JSON ({error})") from None


def parse_labelme(data: bytes) -> LabelMeFile:
    """Read the keys the toolkit uses: `text`, `is_sentence`, `shapes`."""
    document, encoding = decode_json_text(data)
    if not isinstance(document, dict):
        raise LabelMeError(f"top level is {type(document).__name__}, expected an object")
    missing = [key for key in ("text", "is_sentence", "shapes") if key not in document]
    if missing:
        raise LabelMeError(f"missing key(s): {', '.join(missing)}")

    texts = document["text"]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise LabelMeError("`text` must be a non-empty list of strings")
    if not isinstance(document["is_sentence"], bool):
        raise LabelMeError("`is_sentence` must be true or false")
    raw_shapes = document["shapes"]
    if not isinstance(raw_shapes, list):
        raise LabelMeError("`shapes` must be a list")

    shapes = []
    for index, shape in enumerate(raw_shapes):
        if not isinstance(shape, dict) or "label" not in shape or "points" not in shape:
            raise LabelMeError(f"shape {index} lacks `label` or `points`")
        label, points = shape["label"], shape["points"]
        if not isinstance(label, str):
            raise LabelMeError(f"shape {index}: `label` must be a string")
        if not _is_point_list(points):
            raise LabelMeError(f"shape {index}: `points` must be a list of [x, y] numbers")
        shapes.append(LabelMeShape(label=label, points=points))
    return LabelMeFile(texts=texts, is_sentence=document["is_sentence"], shapes=shapes, encoding=encoding)


def _is_point_list(points) -> bool:
    if not isinstance(points, list):
        return False
    for point in points:
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            return False
        for value in point:
            # bool is an int subclass; NaN and inf cannot become pixel coordinates.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            if value != value or value in (float("inf"), float("-inf")):
                return False
    return True
