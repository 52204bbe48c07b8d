"""What `make reproduce` needs before it starts, and the check that it is all there.

Each requirement is checked from paths and installed packages only (no data is read, no
model loaded), so a missing file is found in seconds rather than after an hour of
preparing data. An unset variable is said to be unset, never shown as a path.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

# The refs file of each refCOCO dataset under its usual splitBy (keyseg.sources.specs).
REFER = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pth", "*.pt", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
TRAINING_PACKAGES = ("deepspeed", "peft", "webdataset")
MIN_FREE_GB = 100


@dataclass
class Recipe:
    """The inputs of `make reproduce`; an empty string is an unset Makefile variable."""

    data_dir: str = ""
    lisa_ckpt: str = ""
    clip_dir: str = ""
    sam_ckpt: str = ""  # keyseg-7b-release rebuilds SAM from it; keyseg-7b keeps LISA's
    gpus: int = 1
    llm_base_url: str = ""
    llm_model: str = ""
    preset: str = "keyseg-7b-release"


class Check(NamedTuple):
    what: str
    ok: bool
    required: bool  # a missing optional one is only a note
    detail: str

    @property
    def missing(self) -> bool:
        return self.required and not self.ok


def _has_weights(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".safetensors", ".bin", ".pth", ".pt")
    return path.is_dir() and any(any(path.glob(pattern)) for pattern in WEIGHT_FILES)


def _given(value: str, name: str) -> tuple[Path | None, str]:
    """(path, how to print it)."""
    return (Path(value), value) if value else (None, f"{name} not set")


def _files_present(folder: Path | None, names: tuple[str, ...]) -> tuple[bool, str]:
    if folder is None:
        return False, f"expects {', '.join(names)}"
    missing = [name for name in names if not (folder / name).is_file()]
    return not missing, f"{folder}: " + (f"missing {', '.join(missing)}" if missing else ", ".join(names))


def checks(recipe: Recipe) -> list[Check]:
    """Every requirement of the recipe, in the order `make reproduce` meets them."""
    return (_data_checks(recipe) + _weight_checks(recipe) + _keyword_checks(recipe) + _machine_checks(recipe))


def _data_checks(recipe: Recipe) -> list[Check]:
    data, data_text = _given(recipe.data_dir, "DATA_DIR")
    found = [Check("DATA_DIR exists", bool(data and data.is_dir()), True, data_text)]
    reason = data / "reason_seg" / "ReasonSeg" if data else None
    for split in ("train", "val", "test"):
        folder = reason / split if reason else None
        count = len(list(folder.glob("*.json"))) if folder and folder.is_dir() else 0
        where = f"{folder} ({count} JSON files)" if folder else \
            f"DATA_DIR not set: expects reason_seg/ReasonSeg/{split}/*.json"
        found.append(Check(f"ReasonSeg {split}", count > 0, True, where))
    for dataset, refs in REFER.items():
        ok, detail = _files_present(data / "refer_seg" / dataset if data else None, (refs, "instances.json"))
        found.append(Check(f"{dataset} refs + instances", ok, True,
                           detail if data else f"DATA_DIR not set: refer_seg/{dataset}/ {detail}"))
    images = data / "refer_seg" / "images" / "mscoco" / "images" / "train2014" if data else None
    found.append(Check("COCO train2014 images", bool(images and images.is_dir() and any(images.glob("*.jpg"))),
                       True, str(images) if images else
                       "DATA_DIR not set: expects refer_seg/images/mscoco/images/train2014/*.jpg"))
    return found


def _weight_checks(recipe: Recipe) -> list[Check]:
    found = []
    lisa, lisa_text = _given(recipe.lisa_ckpt, "LISA_CKPT")
    found.append(Check("LISA_CKPT weights", bool(lisa and _has_weights(lisa)), True,
                       lisa_text if lisa else f"{lisa_text}: expects a LISA-7B-v1 folder (*.safetensors or *.bin)"))
    ok, detail = _files_present(lisa, ("tokenizer_config.json",))
    found.append(Check("LISA_CKPT tokenizer", ok, True, detail if lisa else f"{lisa_text}: {detail}"))
    clip, clip_text = _given(recipe.clip_dir, "CLIP_DIR")
    ok, detail = _files_present(clip, ("config.json",))
    found.append(Check("CLIP_DIR (clip-vit-large-patch14)", ok and _has_weights(clip), True,
                       detail if clip else f"{clip_text}: {detail} and weights"))
    sam, sam_text = _given(recipe.sam_ckpt, "SAM_CKPT")
    if sam or recipe.preset == "keyseg-7b-release":
        found.append(Check("SAM_CKPT (sam_vit_h_4b8939.pth)", bool(sam and _has_weights(sam)), True,
                           sam_text if sam else f"{sam_text}: {recipe.preset} rebuilds SAM from sam_vit_h_4b8939.pth"))
    return found


def _keyword_checks(recipe: Recipe) -> list[Check]:
    """Mining needs both LLM variables; without either, the published keyword file must be there."""
    if recipe.llm_base_url and recipe.llm_model:
        return [Check("LLM for keyword mining", True, True, f"{recipe.llm_model} at {recipe.llm_base_url}")]
    if recipe.llm_base_url or recipe.llm_model:
        unset = "LLM_BASE_URL" if recipe.llm_model else "LLM_MODEL"
        return [Check("LLM for keyword mining", False, True,
                      f"{unset} not set: set both LLM_BASE_URL and LLM_MODEL, or neither to validate the published "
                      "explanatory_key/keyword_outputs.json")]
    data, _ = _given(recipe.data_dir, "DATA_DIR")
    folder = data / "reason_seg" / "ReasonSeg" / "explanatory_key" if data else None
    ok, detail = _files_present(folder, ("keyword_outputs.json",))
    return [Check("published keyword file (no LLM set)", ok, True, detail if data else f"DATA_DIR not set: {detail}")]


def _machine_checks(recipe: Recipe) -> list[Check]:
    try:
        import torch

        available = torch.cuda.device_count()
    except Exception:  # a broken torch install is itself the finding
        available = 0
    found = [Check(f"GPUs ({recipe.gpus} wanted)", available >= recipe.gpus, True, f"{available} visible")]
    for module in TRAINING_PACKAGES:
        # find_spec, not import: importing deepspeed alone takes seconds.
        installed = importlib.util.find_spec(module) is not None
        found.append(Check(f"python package {module}", installed, True, "installed" if installed else "not installed"))
    free = shutil.disk_usage(Path.cwd()).free / 1e9
    found.append(Check(f"free disk >= {MIN_FREE_GB} GB", free >= MIN_FREE_GB, False, f"{free:.0f} GB free here"))
    return found
