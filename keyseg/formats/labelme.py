"""ReasonSeg's LabelMe-style JSON files (docs/fidelity.md M1; layout in docs/stages.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from keyseg.formats.fields import COORDINATE_LIMIT, is_number, is_text, is_text_list, type_name


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
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        try:
            text, encoding = data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError as error:
            raise LabelMeError(f"neither UTF-8 nor cp1252 ({error})") from None
    try:
        return json.loads(text), encoding
    except RecursionError:
        raise LabelMeError("invalid JSON (nested too deeply)") from None
    except ValueError as error:  # JSONDecodeError, or an integer of more than 4300 digits
        raise LabelMeError(f"invalid JSON ({error})") from None


def parse_labelme(data: bytes) -> LabelMeFile:
    """Read the keys the toolkit uses: `text`, `is_sentence`, `shapes`.

    This is the schema check of the format: any problem is a LabelMeError naming the key."""
    document, encoding = decode_json_text(data)
    if not isinstance(document, dict):
        raise LabelMeError(f"top level is {type(document).__name__}, expected an object")
    missing = [key for key in ("text", "is_sentence", "shapes") if key not in document]
    if missing:
        raise LabelMeError(f"missing key(s): {', '.join(missing)}")

    texts = document["text"]
    if isinstance(texts, str):
        texts = [texts]
    if not is_text_list(texts, allow_empty=False):
        raise LabelMeError(f"`text` must be a non-empty list of strings ({_describe(texts)})")
    if not isinstance(document["is_sentence"], bool):
        raise LabelMeError(f"`is_sentence` must be true or false, found {type_name(document['is_sentence'])}")
    raw_shapes = document["shapes"]
    if not isinstance(raw_shapes, list):
        raise LabelMeError(f"`shapes` must be a list, found {type_name(raw_shapes)}")

    shapes = []
    for index, shape in enumerate(raw_shapes):
        if not isinstance(shape, dict) or "label" not in shape or "points" not in shape:
            raise LabelMeError(f"shape {index} lacks `label` or `points`")
        label, points = shape["label"], shape["points"]
        if not is_text(label):
            raise LabelMeError(f"shape {index}: `label` must be a string, found {type_name(label)}")
        if not _is_point_list(points):
            raise LabelMeError(f"shape {index}: `points` must be a list of [x, y] finite numbers "
                               f"within +-{COORDINATE_LIMIT}")
        shapes.append(LabelMeShape(label=label, points=points))
    return LabelMeFile(texts=texts, is_sentence=document["is_sentence"], shapes=shapes, encoding=encoding)


def _is_point_list(points) -> bool:
    if not isinstance(points, list):
        return False
    for point in points:
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            return False
        for value in point:
            # No bools, NaN or inf; and nothing numpy cannot hold as a float or int32.
            if not is_number(value) or abs(value) > COORDINATE_LIMIT:
                return False
    return True


def _describe(values) -> str:
    """What is wrong with a `text` value, for the error message."""
    if not isinstance(values, list):
        return f"found {type_name(values)}"
    bad = [index for index, value in enumerate(values) if not is_text(value)]
    if bad:
        value = values[bad[0]]
        return f"item {bad[0]} is {'text that is not valid Unicode' if isinstance(value, str) else type_name(value)}"
    return "found an empty list"
