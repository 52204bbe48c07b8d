"""keyword_outputs.json records: reading the inputs, writing the published schema."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from keyseg.formats.labelme import LabelMeError, decode_json_text

# The published file's key order.
OUTPUT_KEYS = ("query", "outputs", "image", "json", "keyword")


@dataclass(frozen=True)
class KeywordRecord:
    query: str
    outputs: str
    image: str
    json: str
    keyword: str | None = None  # the published keyword when validating

    def to_output(self, keyword: str | None) -> dict:
        return {"query": self.query, "outputs": self.outputs, "image": self.image, "json": self.json,
                "keyword": keyword}


class KeywordInputError(ValueError):
    """The input file cannot be used; the message names the file and the reason."""


def load_records(path: Path) -> list[KeywordRecord]:
    """Records from explanatory/train.json, a keyword_outputs.json, or a prepared manifest.

    Manifests (`manifest.jsonl` from `keyseg prepare`) contribute every target that has an
    explanatory answer, in manifest order.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeywordInputError(f"{path}: {error.strerror or error}") from None
    if path.suffix == ".jsonl":
        return _from_manifest(path, data)
    try:
        document, _ = decode_json_text(data)
    except LabelMeError as error:
        raise KeywordInputError(f"{path}: {error}") from None
    if not isinstance(document, list):
        raise KeywordInputError(f"{path}: expected a JSON list of records")
    records = []
    for index, entry in enumerate(document):
        missing = [key for key in ("query", "outputs", "image") if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise KeywordInputError(f"{path}: record {index} lacks {', '.join(missing)}")
        records.append(KeywordRecord(query=str(entry["query"]), outputs=str(entry["outputs"]),
                                     image=str(entry["image"]),
                                     json=str(entry.get("json") or Path(entry["image"]).with_suffix(".json")),
                                     keyword=entry.get("keyword")))
    return records


def _from_manifest(path: Path, data: bytes) -> list[KeywordRecord]:
    records = []
    for line_number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise KeywordInputError(f"{path}:{line_number}: invalid JSON ({error})") from None
        name = Path(record.get("image", "")).name
        for target in record.get("targets", []):
            explanatory = target.get("explanatory")
            if explanatory:
                records.append(KeywordRecord(query=explanatory["query"], outputs=explanatory["outputs"], image=name,
                                             json=str(Path(name).with_suffix(".json"))))
    return records


def default_output_path(input_path: Path) -> Path:
    """`.../ReasonSeg/explanatory/train.json` -> `.../ReasonSeg/explanatory_key/keyword_outputs.json`."""
    input_path = Path(input_path).resolve()
    if input_path.parent.name == "explanatory":
        return input_path.parent.parent / "explanatory_key" / "keyword_outputs.json"
    return input_path.parent / "explanatory_key" / "keyword_outputs.json"
