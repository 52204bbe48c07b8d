"""REFER-format files of refCOCO, refCOCO+, refCOCOg and refCLEF (docs/fidelity.md M5; layout in docs/stages.md).

`refs(<splitBy>).p` is a pickle. Unpickling runs whatever callables the file names, so
we use an unpickler that resolves no global at all beyond a few harmless builtins:
lists, dicts, strings and numbers (all the format needs) never go through it.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

from keyseg.formats.fields import is_int, is_text, type_name
from keyseg.images import ImageError, check_image_size

# The datasets, their splitBy variants and splits, as published. refCLEF (ReferItGame
# over the saiapr_tc-12 images) has UNC's five splits and Berkeley's three (REFER's
# `getRefIds` knows testC for it: LISA `utils/refer.py:160-172`).
REFER_DATASETS: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB"), "google": ("train", "val", "test")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
    "refclef": {"unc": ("train", "val", "testA", "testB", "testC"), "berkeley": ("train", "val", "test")},
}
# The splitBy LISA trains on: umd for refcocog, unc for the others (LISA `utils/refer_seg_dataset.py:57-60`).
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", "refclef": "unc"}
REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")

_SAFE_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
}


class ReferError(ValueError):
    """A REFER file that cannot be used; the message is the reason."""


class UnsafePickleError(ReferError):
    """The pickle asks for a global that could run code; nothing was called."""


class _ContainersOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return set if name == "set" else frozenset
        raise UnsafePickleError(
            f"refused to load: the pickle references `{module}.{name}`, which could run code; "
            "a REFER refs file holds only lists, dicts, strings and numbers"
        )


def load_refs(data: bytes) -> list:
    """The list of refs from the bytes of a `refs(<splitBy>).p` file.

    Only the file as a whole is checked here; `check_ref` checks each ref, so that one bad
    ref costs only itself."""
    try:
        # Python 2 pickles (the published files) store text as byte strings. Bytes that
        # are not UTF-8 become lone surrogates, which `check_ref` refuses in the fields
        # we use: one bad sentence costs its ref, not the whole file.
        refs = _ContainersOnlyUnpickler(io.BytesIO(data), encoding="utf-8", errors="surrogateescape").load()
    except UnsafePickleError:
        raise
    except Exception as error:  # a corrupt pickle raises almost any exception type
        raise ReferError(f"not a readable pickle ({type(error).__name__}: {error})") from None
    if not isinstance(refs, list):
        raise ReferError(f"expected a list of refs, found {type_name(refs)}")
    return refs


def check_ref(ref) -> str | None:
    """Why a ref cannot be used (naming the field), or None. The schema of a refs file."""
    if not isinstance(ref, dict):
        return f"is a {type_name(ref)}, not a dict"
    missing = [key for key in REF_KEYS if key not in ref]
    if missing:
        return f"lacks {', '.join(f'`{key}`' for key in missing)}"
    for key in ("ref_id", "ann_id", "image_id"):
        if not is_int(ref[key]):
            return f"`{key}` is {type_name(ref[key])}, expected an integer"
    if not is_text(ref["split"]):
        return f"`split` is {_text_type(ref['split'])}, expected a string"
    sentences = ref["sentences"]
    if not isinstance(sentences, list):
        return f"`sentences` is {type_name(sentences)}, expected a list"
    for position, sentence in enumerate(sentences):
        if not isinstance(sentence, dict):
            return f"`sentences[{position}]` is {type_name(sentence)}, expected a dict with `sent`"
        if "sent" not in sentence:
            return f"`sentences[{position}]` lacks `sent`"
        if not is_text(sentence["sent"]):
            return f"`sentences[{position}].sent` is {_text_type(sentence['sent'])}, expected a string"
    return None


@dataclass
class CocoInstances:
    images: dict[int, dict]  # image id -> {id, file_name, height, width}, all checked
    annotations: dict[int, dict]  # annotation id -> {id, image_id, segmentation, ...}
    # Image entries that failed their schema check: id -> reason, so a ref that points at
    # one is reported with the reason rather than as "missing".
    bad_images: dict[int, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # entries without a usable id


def check_image_entry(entry: dict) -> str | None:
    """Why an `images` entry of instances.json cannot be used (naming the field), or None."""
    missing = [key for key in ("file_name", "height", "width") if key not in entry]
    if missing:
        return f"lacks {', '.join(f'`{key}`' for key in missing)}"
    if not is_text(entry["file_name"]) or not entry["file_name"]:
        return f"`file_name` is {_text_type(entry['file_name'])}, expected a file name"
    for key in ("height", "width"):
        if not is_int(entry[key]):
            return f"`{key}` is {type_name(entry[key])}, expected an integer"
    try:
        # Masks are allocated at this size: the pixel bound applies before any allocation.
        check_image_size(entry["width"], entry["height"])
    except ImageError as error:
        return f"`height`/`width`: {error}"
    return None


def load_instances(data: bytes) -> CocoInstances:
    """instances.json, each image and annotation entry checked on its own."""
    try:
        document = json.loads(data)
    except RecursionError:
        raise ReferError("invalid JSON (nested too deeply)") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, a 4300-digit integer
        raise ReferError(f"invalid JSON ({error})") from None
    if not isinstance(document, dict) or "images" not in document or "annotations" not in document:
        raise ReferError("not a COCO instances file (needs `images` and `annotations`)")
    for key in ("images", "annotations"):
        if not isinstance(document[key], list):
            raise ReferError(f"`{key}` is {type_name(document[key])}, expected a list")
    instances = CocoInstances(images={}, annotations={})
    for key in ("images", "annotations"):
        for position, entry in enumerate(document[key]):
            if not isinstance(entry, dict) or not is_int(entry.get("id")):
                what = type_name(entry) if not isinstance(entry, dict) else "an entry without an integer `id`"
                instances.problems.append(f"`{key}[{position}]` is {what}")
            elif key == "annotations":
                instances.annotations[entry["id"]] = entry  # its segmentation is checked when decoded
            elif (reason := check_image_entry(entry)) is not None:
                instances.bad_images[entry["id"]] = reason
            else:
                instances.images[entry["id"]] = entry
    return instances


def _text_type(value) -> str:
    if isinstance(value, str):
        return "an empty string" if not value else "text that is not valid Unicode"
    return type_name(value)


def is_refer_source(source: str) -> bool:
    """A shard source of the refCOCO family (refcoco, refcoco+, refcocog, refclef, with or
    without a splitBy suffix such as `refcocog_google`)."""
    return source.startswith(("refcoco", "refclef"))


def splits_of_ref(split: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """The published splits a ref's `split` value belongs to; () when none.

    REFER's `getRefIds` (LISA `utils/refer.py:161-164`) puts a combined test value such as
    `testAB` into testA and into testB; any other value belongs only to the split it names.
    """
    if split in known:
        return (split,)
    letters = split[len("test"):] if split.startswith("test") else ""
    names = tuple(f"test{letter}" for letter in letters)
    if len(names) >= 2 and len(set(names)) == len(names) and all(name in known for name in names):
        return names
    return ()


def refs_file(dataset_dir: Path, split_by: str) -> Path:
    return dataset_dir / f"refs({split_by}).p"
