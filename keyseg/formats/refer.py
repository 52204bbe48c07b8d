"""REFER-format files of refCOCO, refCOCO+ and refCOCOg (reference-semantics section 4).

`refs(<splitBy>).p` is a pickle. Unpickling runs whatever callables the file names, so
we use an unpickler that resolves no global at all beyond a few harmless builtins:
lists, dicts, strings and numbers (all the format needs) never go through it.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

# The datasets, their splitBy variants and splits, as published.
REFER_DATASETS: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB"), "google": ("train", "val", "test")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
}
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
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


def load_refs(data: bytes) -> list[dict]:
    """The list of ref dicts from the bytes of a `refs(<splitBy>).p` file."""
    try:
        # Python 2 pickles (the published files) store text as byte strings.
        refs = _ContainersOnlyUnpickler(io.BytesIO(data), encoding="utf-8").load()
    except UnsafePickleError:
        raise
    except Exception as error:  # a corrupt pickle raises almost any exception type
        raise ReferError(f"not a readable pickle ({type(error).__name__}: {error})") from None
    if not isinstance(refs, list):
        raise ReferError(f"expected a list of refs, found {type(refs).__name__}")
    for position, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise ReferError(f"ref at position {position} is {type(ref).__name__}, not a dict")
        missing = [key for key in REF_KEYS if key not in ref]
        if missing:
            raise ReferError(f"ref at position {position} lacks {', '.join(missing)}")
    return refs


@dataclass
class CocoInstances:
    images: dict[int, dict]  # image id -> {id, file_name, height, width}
    annotations: dict[int, dict]  # annotation id -> {id, image_id, segmentation, ...}


def load_instances(data: bytes) -> CocoInstances:
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ReferError(f"invalid JSON ({error})") from None
    if not isinstance(document, dict) or "images" not in document or "annotations" not in document:
        raise ReferError("not a COCO instances file (needs `images` and `annotations`)")
    try:
        images = {image["id"]: image for image in document["images"]}
        annotations = {ann["id"]: ann for ann in document["annotations"]}
    except (KeyError, TypeError) as error:
        raise ReferError(f"an image or annotation lacks its id ({error})") from None
    return CocoInstances(images=images, annotations=annotations)


def refs_file(dataset_dir: Path, split_by: str) -> Path:
    return dataset_dir / f"refs({split_by}).p"
