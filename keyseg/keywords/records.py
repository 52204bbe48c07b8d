"""keyword_outputs.json records: reading the inputs, writing the published schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keyseg.errors import DataError
from keyseg.formats.labelme import LabelMeError, decode_json_text
from keyseg.io import json_lines

# The published file's key order.
OUTPUT_KEYS = ("query", "outputs", "image", "json", "keyword")


@dataclass(frozen=True)
class KeywordRecord:
    query: str
    outputs: str
    image: str
    json: str
    keyword: object = None  # the published keyword when validating (as found: validate judges its type)

    def to_output(self, keyword: str | None) -> dict:
        return {"query": self.query, "outputs": self.outputs, "image": self.image, "json": self.json,
                "keyword": keyword}


def load_records(path: Path) -> list[KeywordRecord]:
    """Records from explanatory/train.json, a keyword_outputs.json, or a prepared manifest.

    Manifests (`manifest.jsonl` from `keyseg prepare`) contribute every target that has an
    explanatory answer, in manifest order. A file that is not one of these (not JSON, not a
    list of objects, a field of the wrong type) raises DataError naming the file, the
    record and the reason. A published keyword of the wrong type is kept as it is: it is
    one record's problem, judged by `validate`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(path, error.strerror or str(error)) from None
    if path.suffix == ".jsonl":
        return _from_manifest(path, data)
    try:
        document, _ = decode_json_text(data)
    except LabelMeError as error:
        raise DataError(path, str(error)) from None
    if not isinstance(document, list):
        raise DataError(path, f"expected a JSON list of records, found {_json_type(document)}")
    records = []
    for index, entry in enumerate(document):
        where = f"record {index}"
        if not isinstance(entry, dict):
            raise DataError(path, f"{where} is {_json_type(entry)}, expected an object")
        missing = [key for key in ("query", "outputs", "image") if key not in entry]
        if missing:
            raise DataError(path, f"{where} lacks {', '.join(missing)}")
        query, outputs, image = (_text(path, where, entry, key) for key in ("query", "outputs", "image"))
        label = entry.get("json")
        if label is not None and not isinstance(label, str):
            raise DataError(path, f"{where}: json is {_json_type(label)}, expected a string")
        records.append(KeywordRecord(query=query, outputs=outputs, image=image,
                                     json=label or _label_name(image), keyword=entry.get("keyword")))
    return records


def _from_manifest(path: Path, data: bytes) -> list[KeywordRecord]:
    records = []
    for line_number, record, problem in json_lines(path, data):
        where = f"line {line_number}"
        if problem:
            raise DataError(path, f"{where}: {problem}")
        if not isinstance(record, dict):
            raise DataError(path, f"{where} is {_json_type(record)}, expected an object")
        image = record.get("image", "")
        targets = record.get("targets", [])
        if not isinstance(image, str) or not isinstance(targets, list):
            raise DataError(path, f"{where}: expected a string image and a list of targets")
        name = Path(image).name
        for target in targets:
            explanatory = target.get("explanatory") if isinstance(target, dict) else None
            if not explanatory:
                continue
            if not isinstance(explanatory, dict):
                raise DataError(path, f"{where}: explanatory is {_json_type(explanatory)}, expected an object")
            query, outputs = (_text(path, where, explanatory, key) for key in ("query", "outputs"))
            records.append(KeywordRecord(query=query, outputs=outputs, image=name, json=_label_name(name)))
    return records


def _text(path: Path, where: str, entry: dict, key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise DataError(path, f"{where}: {key} is {_json_type(value)}, expected a string")
    return value


def _label_name(image: str) -> str:
    """`img.jpg` -> `img.json` (the LabelMe file beside an image)."""
    name = Path(image)
    return str(name.with_suffix(".json")) if name.name else f"{image}.json"


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def default_output_path(input_path: Path) -> Path:
    """`.../ReasonSeg/explanatory/train.json` -> `.../ReasonSeg/explanatory_key/keyword_outputs.json`."""
    input_path = Path(input_path).resolve()
    if input_path.parent.name == "explanatory":
        return input_path.parent.parent / "explanatory_key" / "keyword_outputs.json"
    return input_path.parent / "explanatory_key" / "keyword_outputs.json"
