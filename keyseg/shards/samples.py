"""One shard sample per image: the original JPEG bytes and a JSON with every target.

Sample layout (WebDataset: members `<key>.jpg` and `<key>.json`; keys have no dots):

    jpg   the original image file, byte for byte (never re-encoded)
    json  {"id", "source", "split", "image", "width", "height", "targets": [
             {"texts": [str], "is_sentence": bool, "keyword": str | null,
              "explanatory": str | null, "explanatory_query": str | null,
              "ann_id": int | null, "ref_id": int | null,
              "mask": {"target": RLE, "ignore": RLE}}],
           "conversations": null | [{"from": "human" | "gpt", "value": str}]}

A segmentation sample has targets and null conversations; a visual-question-answering
sample (LLaVA-Instruct) has the turns of its conversation, as the reference cleans them,
and no targets: it trains the language loss only.

RLE is COCO's compressed run-length encoding ({"size": [h, w], "counts": str}), lossless:
the target region (value 1) and the ignore region (value 255) each get their own, and
`decode_mask` gives back the prepared 0/1/255 mask exactly. Every sample has the same
fields (nulls where empty). Hugging Face `datasets` infers its schema from the first few
samples, which fails on a mix of sources (ReasonSeg's null `ann_id`, refCOCO's integers):
the shard set's dataset card (keyseg.shards.card) declares `hf_features()` for every
config, and a load of bare tar files should pass `features=hf_features()`.

Shards come from elsewhere, so every reader checks a sample before using it:
`check_sample_json` is the one schema check (types, sizes within the image pixel bound,
RLEs that decode to exactly the sample's size), `read_sample` adds the members and the
key. `shards verify`, `shards stats`, the loader and `evaluate` all use them.
"""

from __future__ import annotations

import json
import reprlib

import numpy as np
from pycocotools import mask as coco_mask

from keyseg.images import max_image_pixels
from keyseg.masks.raster import IGNORE_VALUE, TARGET_VALUE
from keyseg.paths import is_plain_name

SAMPLE_FORMAT_VERSION = 2  # 2: `conversations` (VQA samples)
SAMPLE_MEMBERS = ("jpg", "json")

# COCO's compressed counts: each number is 1+ characters '0'..'o' (6 payload bits, one of
# them "more follows"). Six characters carry 30 bits, plenty for runs of a 100-megapixel
# mask; longer numbers overflow pycocotools' C int arithmetic, so they are refused.
_MAX_RLE_NUMBER_CHARS = 6
# Bounds on a VQA conversation, far above LLaVA-Instruct's (a few turns of at most a few
# thousand characters) and equal to what keyseg's reader of that file accepts.
CONVERSATION_ROLES = ("human", "gpt")
MAX_CONVERSATION_TURNS = 256
MAX_TURN_CHARS = 65536


class BadSampleError(ValueError):
    """A shard sample that breaks the format; the message is the reason ("category: detail")."""


def encode_region(region: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_runs(counts: str) -> np.ndarray:
    """The run lengths of a COCO compressed counts string, read as pycocotools'
    `rleFrString` reads it (ValueError for anything it would misread).

    pycocotools does not check what it reads: a string ending inside a number makes it
    read past the end, and runs that do not add up to the mask size leave uninitialised
    memory in the mask. Checking here keeps decoding exact and deterministic."""
    if not counts.isascii():
        raise ValueError("counts has non-ASCII characters")
    chars = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    if chars.min() < 0 or chars.max() > 63:
        raise ValueError("counts has characters outside '0'..'o'")
    more = (chars & 0x20) != 0
    if more[-1]:
        raise ValueError("counts ends inside a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_RLE_NUMBER_CHARS:
        raise ValueError(f"counts has a number over {_MAX_RLE_NUMBER_CHARS} characters")
    shifts = 5 * (np.arange(chars.size) - np.repeat(starts, lengths))
    numbers = np.add.reduceat((chars & 0x1F) << shifts, starts)
    negative = (chars[ends] & 0x10) != 0  # sign bit of each number's last character
    numbers = np.where(negative, numbers - (np.int64(1) << (5 * lengths)), numbers)
    # From the fourth number on, each is the difference to the run two before it.
    runs = numbers.copy()
    runs[1::2] = np.cumsum(numbers[1::2])
    runs[2::2] = np.cumsum(numbers[2::2])
    if (runs < 0).any():
        raise ValueError("counts has a negative run")
    return runs


def _rle_problem(rle, height: int, width: int) -> tuple[str, str] | None:
    """(category, detail) of what is wrong with `rle` as a height x width mask, or None."""
    if not isinstance(rle, dict):
        return "bad mask RLE", f"is {_describe(rle)}, expected an RLE object"
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(value) for value in size)):
        return "bad mask RLE", f"size is {_describe(size)}, expected [height, width]"
    if size != [height, width]:
        return "mask size mismatch", f"is {size[1]}x{size[0]}, the sample {width}x{height}"
    if not isinstance(counts, str):
        return "bad mask RLE", f"counts is {_describe(counts)}, expected a string"
    try:
        total = int(rle_runs(counts).sum())
    except ValueError as error:
        return "bad mask RLE", str(error)
    if total != height * width:
        return "bad mask RLE", f"runs cover {total} pixels, the mask has {height * width}"
    return None


def check_rle(rle, height: int, width: int) -> str | None:
    """Why `rle` is not a COCO RLE of exactly height x width pixels, or None."""
    problem = _rle_problem(rle, height, width)
    return f"{problem[0]}: {problem[1]}" if problem else None


def decode_region(rle: dict) -> np.ndarray:
    """uint8 (h, w) 0/1; ValueError for a malformed RLE or one over the image pixel bound."""
    size = rle["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(value) and value > 0 for value in size)):
        raise ValueError(f"RLE size {_describe(size)} is not [height, width]")
    if size[0] * size[1] > max_image_pixels():
        raise ValueError(f"RLE size {size[1]}x{size[0]} is over the image pixel bound of {max_image_pixels():,}")
    reason = check_rle(rle, size[0], size[1])
    if reason:
        raise ValueError(reason)
    return coco_mask.decode({"size": size, "counts": rle["counts"].encode("ascii")})


def encode_mask(mask: np.ndarray) -> dict:
    """A 0/1/255 mask as two RLEs; any other value is a bug upstream, so refuse it."""
    values = np.unique(mask)
    if not set(values.tolist()) <= {0, TARGET_VALUE, IGNORE_VALUE}:
        raise ValueError(f"mask values {values.tolist()} are not 0/1/255")
    return {"target": encode_region(mask == TARGET_VALUE), "ignore": encode_region(mask == IGNORE_VALUE)}


def decode_mask(encoded: dict) -> np.ndarray:
    """uint8 (h, w): 0 background, 1 target, 255 ignore."""
    target, ignore = decode_region(encoded["target"]), decode_region(encoded["ignore"])
    if target.shape != ignore.shape:
        raise ValueError(f"target RLE {target.shape} and ignore RLE {ignore.shape} differ in size")
    mask = target * np.uint8(TARGET_VALUE)
    mask[ignore.astype(bool)] = IGNORE_VALUE
    return mask


def build_sample_json(record: dict, masks: list[np.ndarray], keywords: list[str | None]) -> dict:
    """The json member of a sample, from a prepared manifest record and its decoded masks
    (a VQA record: no targets, its `conversations` turns; check them with
    `check_conversations` first)."""
    targets = []
    for target, mask, keyword in zip(record["targets"], masks, keywords):
        explanatory = target.get("explanatory") or None
        targets.append({
            "texts": list(target["texts"]),
            "is_sentence": bool(target["is_sentence"]),
            "keyword": keyword,
            "explanatory": explanatory["outputs"] if explanatory else None,
            "explanatory_query": explanatory["query"] if explanatory else None,
            "ann_id": target.get("ann_id"),
            "ref_id": target.get("ref_id"),
            "mask": encode_mask(mask),
        })
    turns = record.get("conversations")
    conversations = None if turns is None else [{"from": turn["from"], "value": turn["value"]} for turn in turns]
    return {"id": record["id"], "source": record["source"], "split": record["split"], "image": record["image"],
            "width": int(record["width"]), "height": int(record["height"]), "targets": targets,
            "conversations": conversations}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 40


def _describe(value) -> str:
    """A value for a reason: a short repr and its type (data text can be long or nested deep)."""
    return f"{_SHORT.repr(value)} ({type(value).__name__})"


# field -> (what it must be, test); the target fields are the ones build_sample_json writes.
_OPTIONAL_STR = ("a string or null", lambda value: value is None or isinstance(value, str))
_OPTIONAL_INT = ("an integer or null", lambda value: value is None or _is_int(value))
_SAMPLE_FIELDS = {
    "id": ("a plain name (letters, digits, _+-.)", is_plain_name),
    "source": ("a string", lambda value: isinstance(value, str)),
    "split": ("a string", lambda value: isinstance(value, str)),
    "image": ("a string", lambda value: isinstance(value, str)),
    "width": ("a positive integer below 2**31", lambda value: _is_int(value) and 0 < value < 2**31),
    "height": ("a positive integer below 2**31", lambda value: _is_int(value) and 0 < value < 2**31),
    # Empty only in a VQA sample (with conversations): checked in check_sample_json.
    "targets": ("a non-empty list", lambda value: isinstance(value, list)),
    "conversations": ("null or a list", lambda value: value is None or isinstance(value, list)),
}
_TARGET_FIELDS = {
    "texts": ("a non-empty list of strings",
              lambda value: isinstance(value, list) and len(value) > 0 and all(isinstance(t, str) for t in value)),
    "is_sentence": ("true or false", lambda value: isinstance(value, bool)),
    "keyword": _OPTIONAL_STR,
    "explanatory": _OPTIONAL_STR,
    "explanatory_query": _OPTIONAL_STR,
    "ann_id": _OPTIONAL_INT,
    "ref_id": _OPTIONAL_INT,
    "mask": ("an object with target and ignore RLEs",
             lambda value: isinstance(value, dict) and "target" in value and "ignore" in value),
}


def _check_fields(document: dict, fields: dict, where: str) -> str | None:
    for name, (expected, valid) in fields.items():
        if name not in document:
            return f"bad json fields: {where}{name} is missing"
        if not valid(document[name]):
            return f"bad json fields: {where}{name} is {_describe(document[name])}, expected {expected}"
    return None


def check_conversations(turns) -> str | None:
    """Why `turns` is not null or a list of well-formed turns, or None.

    Well-formed: 1 to MAX_CONVERSATION_TURNS objects with exactly "from" (human or gpt) and
    "value" (a string of at most MAX_TURN_CHARS characters). Whether the reference can
    build a prompt from them (alternation, rounds, one image) is the loader's check
    (keyseg.data.samples.vqa_problem, which `keyseg shard` applies too), not the format's."""
    if turns is None:
        return None
    if not isinstance(turns, list) or not 0 < len(turns) <= MAX_CONVERSATION_TURNS:
        return f"conversations is {_describe(turns)}, expected null or a list of 1 to {MAX_CONVERSATION_TURNS} turns"
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or set(turn) != {"from", "value"}:
            return f"conversations[{index}] is {_describe(turn)}, expected an object with `from` and `value` only"
        if turn["from"] not in CONVERSATION_ROLES:
            return f"conversations[{index}].from is {_describe(turn['from'])}, expected 'human' or 'gpt'"
        if not isinstance(turn["value"], str) or len(turn["value"]) > MAX_TURN_CHARS:
            return (f"conversations[{index}].value is {_describe(turn['value'])}, expected a string of at most "
                    f"{MAX_TURN_CHARS} characters")
    return None


def check_sample_json(obj) -> str | None:
    """Why a decoded sample json breaks the shard sample format, or None when it is good.

    Checks every field `build_sample_json` writes, the image size against the pixel bound
    of keyseg.images, that each mask RLE decodes to exactly width x height, and that a
    sample has either targets or conversations (`check_conversations`). Reasons
    start with a category ("bad json fields", "image too large", "mask size mismatch",
    "bad mask RLE") so skip counts can group them. Extra fields are allowed."""
    if not isinstance(obj, dict):
        return f"bad json fields: the sample is {_describe(obj)}, expected an object"
    reason = _check_fields(obj, _SAMPLE_FIELDS, "")
    if reason:
        return reason
    reason = check_conversations(obj["conversations"])
    if reason:
        return f"bad json fields: {reason}"
    if obj["targets"] and obj["conversations"] is not None:
        return "bad json fields: the sample has both targets and conversations, expected one of them"
    if not obj["targets"] and obj["conversations"] is None:
        return (f"bad json fields: targets is {_describe(obj['targets'])}, expected a non-empty list "
                "(or conversations, in a VQA sample)")
    width, height = obj["width"], obj["height"]
    if width * height > max_image_pixels():
        return (f"image too large: {width}x{height} = {width * height:,} pixels, over the bound of "
                f"{max_image_pixels():,} (--max-image-pixels)")
    for index, target in enumerate(obj["targets"]):
        if not isinstance(target, dict):
            return f"bad json fields: targets[{index}] is {_describe(target)}, expected an object"
        reason = _check_fields(target, _TARGET_FIELDS, f"targets[{index}].")
        if reason:
            return reason
        for region in ("target", "ignore"):
            problem = _rle_problem(target["mask"][region], height, width)
            if problem:
                return f"{problem[0]}: targets[{index}].mask.{region} {problem[1]}"
    return None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_sample_json(data: bytes) -> dict:
    """A sample's json member, parsed and checked (BadSampleError with the reason if bad)."""
    try:
        # NaN and Infinity are Python extensions, not JSON: the writer never emits them.
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as error:
        raise BadSampleError(f"corrupt json: not UTF-8 ({error})") from None
    except (ValueError, RecursionError) as error:  # JSONDecodeError, huge ints, deep nesting
        raise BadSampleError(f"corrupt json: {error}") from None
    reason = check_sample_json(document)
    if reason:
        raise BadSampleError(reason)
    return document


def read_sample(key: str, members: dict[str, bytes]) -> dict:
    """The checked json of one shard sample (`<key>.jpg` + `<key>.json`), BadSampleError if bad."""
    if set(members) != set(SAMPLE_MEMBERS):
        category = "unexpected member" if set(SAMPLE_MEMBERS) <= set(members) else "missing member"
        raise BadSampleError(f"{category}: has {sorted(members)}, expected jpg and json")
    document = read_sample_json(members["json"])
    if document["id"] != key:
        raise BadSampleError(f"key mismatch: json id {_describe(document['id'])} differs from the key {key!r}")
    return document


def sample_json_bytes(sample: dict) -> bytes:
    # Sorted keys and no whitespace: the same sample always gives the same bytes.
    return json.dumps(sample, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def hf_features():
    """The Hugging Face `datasets` schema of a shard sample, so sources with nulls in
    different fields load together: declared in every shard set's dataset card, or passed
    as `load_dataset("webdataset", data_files=..., features=hf_features())`."""
    import datasets
    from datasets import Value

    rle = {"size": datasets.List(Value("int64")), "counts": Value("string")}
    target = {"texts": datasets.List(Value("string")), "is_sentence": Value("bool"), "keyword": Value("string"),
              "explanatory": Value("string"), "explanatory_query": Value("string"), "ann_id": Value("int64"),
              "ref_id": Value("int64"), "mask": {"target": rle, "ignore": rle}}
    document = {"id": Value("string"), "source": Value("string"), "split": Value("string"),
                "image": Value("string"), "width": Value("int64"), "height": Value("int64"),
                "targets": datasets.List(target),
                "conversations": datasets.List({"from": Value("string"), "value": Value("string")})}
    return datasets.Features({"jpg": datasets.Image(), "json": document, "__key__": Value("string"),
                              "__url__": Value("string")})
