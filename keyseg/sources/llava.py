"""LLaVA-Instruct-150k: the visual-question-answering source of LISA's training mixture.

`llava_dataset/llava_instruct_150k.json` is a list of records
{"id", "image", "conversations": [{"from": "human" | "gpt", "value"}, ...]} over COCO
train2017 images (`coco/train2017/<image>`). There are no masks: only the language loss.

The reader parses the file with `json` only (size-bounded, UTF-8), checks every record on
its own and returns the records the reference can use, with their turns cleaned exactly as
LISA's VQADataset cleans them (`keyseg.data.conversation.vqa_turns`), plus one `Issue` per
record it cannot use. docs/sources_vqa.md lists each rule with the reference line it
comes from. The reference itself checks nothing: it picks a record at random each step
and stops (or trains on a broken sample) when that record is malformed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from keyseg.data.conversation import IMAGE_TOKEN, vqa_turn_problem, vqa_turns
from keyseg.errors import DataError
from keyseg.formats.fields import is_int, is_text, type_name
from keyseg.paths import confined_path
from keyseg.sources.records import Issue

LLAVA_DIR = Path("llava_dataset")
LLAVA_IMAGE_DIR = Path("coco") / "train2017"
LLAVA_INSTRUCT = "llava_instruct_150k"  # LISA's default `vqa_data`
# Bounds on what is read (keyseg's, not the reference's), far above what the real file
# holds (about 230 MB; conversations of a few turns of at most a few thousand characters).
MAX_FILE_BYTES = 2 * 1024**3
MAX_TURNS = 256
MAX_VALUE_CHARS = 65536
# Strings the tokenizer turns into tokens that change what a VQA sample means: "</s>" ends
# a round, "<unk>" is the pad id (the reference's length check counts it as padding),
# [SEG] asks for a mask and [KEY] for a keyword, which a VQA sample has none of.
RESERVED_STRINGS = ("</s>", "<unk>", "[SEG]", "[KEY]")


@dataclass(frozen=True)
class VQARecord:
    """One usable record, as the reference's dataset sees it after its cleaning."""

    index: int  # position in the file (ids repeat: one image can have several conversations)
    id: str  # the record's `id` as written, or "#<index>" when it has none
    image: str  # path relative to the data dir: coco/train2017/<name>
    conversations: list[dict] = field(default_factory=list)  # cleaned turns {"from", "value"}

    def to_dict(self) -> dict:
        return {"id": self.id, "image": self.image, "conversations": [dict(turn) for turn in self.conversations]}


def llava_file(data_dir: str | os.PathLike, name: str = LLAVA_INSTRUCT) -> Path:
    """Where the reference reads `name` from: llava_dataset/<name>.json (LISA utils/vqa_dataset.py:60-62)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"{name!r} is not a plain file name")
    return Path(data_dir) / LLAVA_DIR / f"{name}.json"


def load_llava_document(data: bytes, file: str) -> tuple[list | None, list[Issue]]:
    """The top-level list of the file, or None with the reason as an issue."""
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        return None, [Issue("error", file, "bad_json", f"not UTF-8 ({error})")]
    except RecursionError:
        return None, [Issue("error", file, "bad_json", "invalid JSON (nested too deeply)")]
    except ValueError as error:  # JSONDecodeError, or an integer of more than 4300 digits
        return None, [Issue("error", file, "bad_json", f"invalid JSON ({error})")]
    if not isinstance(document, list):
        return None, [Issue("error", file, "bad_json", f"expected a list of records, got {type_name(document)}")]
    return document, []


def _turns_problem(turns) -> tuple[str, str] | None:
    """Type and size checks of `conversations`, before any reference rule applies."""
    if not isinstance(turns, list):
        return "bad_type", f"`conversations` is {type_name(turns)}, expected a list"
    if len(turns) > MAX_TURNS:
        return "too_long", f"{len(turns)} turns (at most {MAX_TURNS} are read)"
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            return "bad_type", f"turn {index} is not an object with `from` and `value`"
        for key in ("from", "value"):
            if not is_text(turn[key]):
                return "bad_type", f"turn {index}: `{key}` is {type_name(turn[key])}, expected a string"
        if len(turn["value"]) > MAX_VALUE_CHARS:
            return "too_long", f"turn {index} has {len(turn['value'])} characters (at most {MAX_VALUE_CHARS})"
    return None


def check_record(entry, index: int, data_dir: Path, file: str,
                 check_images: bool = True) -> tuple[VQARecord | None, Issue | None]:
    """One record as the reference would use it, or the reason it cannot be used."""
    where = f"record {index}"

    def bad(code: str, reason: str, at: str = file) -> tuple[None, Issue]:
        return None, Issue("error", at, code, f"{where}: {reason}")

    if not isinstance(entry, dict):
        return bad("bad_type", f"is {type_name(entry)}, expected an object")
    for key in ("image", "conversations"):
        if key not in entry:
            return bad("missing_key", f"has no `{key}`")
    name = entry["image"]
    if not is_text(name) or not name:
        return bad("bad_type", f"`image` is {type_name(name) if not isinstance(name, str) else 'not a usable string'}")
    record_id = entry.get("id")
    record_id = str(record_id) if (is_text(record_id) or is_int(record_id)) else f"#{index}"
    where = f"record {index} (id {record_id})"
    problem = _turns_problem(entry["conversations"])
    if problem is None:
        problem = vqa_turn_problem(entry["conversations"])
    if problem is not None:
        return bad(*problem)
    turns = vqa_turns(entry["conversations"])
    image_turns = sum(IMAGE_TOKEN in turn["value"] for turn in turns)
    if image_turns == 0:
        return bad("no_image_token", "no turn of the prompt holds <image>: the model would see no image")
    if image_turns > 1:
        return bad("image_token_in_several_turns",
                   f"{image_turns} turns hold <image>: the model reads one image per conversation")
    for turn_index, turn in enumerate(turns):
        found = [text for text in RESERVED_STRINGS if text in turn["value"]]
        if found:
            return bad("reserved_token", f"turn {turn_index} holds {found[0]!r}, which the tokenizer reads as a token")
    try:
        path = confined_path(data_dir / LLAVA_IMAGE_DIR, name, file)
    except DataError as error:
        return bad("bad_path", str(error))
    relative = (LLAVA_IMAGE_DIR / name).as_posix()
    if check_images and not path.is_file():
        return bad("missing_image", f"image {relative} does not exist", at=relative)
    return VQARecord(index=index, id=record_id, image=relative, conversations=turns), None


def read_llava_instruct(data_dir: str | os.PathLike, name: str = LLAVA_INSTRUCT, check_images: bool = True,
                        max_bytes: int = MAX_FILE_BYTES) -> tuple[list[VQARecord], list[Issue]]:
    """Every usable record of llava_dataset/<name>.json in file order, and the issues.

    A file that cannot be read at all gives no records and one issue; each bad record gives
    one issue and is left out. `check_images` False skips the image-exists check (for
    reading the file without the COCO images at hand)."""
    data_dir = Path(data_dir)
    path = llava_file(data_dir, name)
    file = path.relative_to(data_dir).as_posix()
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return [], [Issue("error", file, "too_large", f"{size} bytes (at most {max_bytes} are read)")]
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        return [], [Issue("error", file, "unreadable", f"cannot read the file ({error.strerror or error})")]
    if len(data) > max_bytes:
        return [], [Issue("error", file, "too_large", f"more than {max_bytes} bytes")]
    document, issues = load_llava_document(data, file)
    if document is None:
        return [], issues
    records = []
    for index, entry in enumerate(document):
        record, issue = check_record(entry, index, data_dir, file, check_images)
        if issue is not None:
            issues.append(issue)
        else:
            records.append(record)
    return records, issues
