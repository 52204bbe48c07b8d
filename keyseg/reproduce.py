"""What `make reproduce` needs before it starts, and the check that it is all there.

Each requirement is checked from paths and installed packages only (no data is read, no
model loaded), so a missing file is found in seconds rather than after an hour of
preparing data. An unset variable is said to be unset, never shown as a path.

Three recipes (`RECIPE`): `keyseg` trains KeySeg (PRESET) from LISA-7B-v1; `lisa` trains
LISA itself (the lisa-7b preset) from a LLaVA folder on LISA's whole data mixture;
`lisa+keyseg` does that, then trains KeySeg (PRESET) from the LISA it made.
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
RECIPES = ("keyseg", "lisa", "lisa+keyseg")


class DatasetFiles(NamedTuple):
    """What a reader of LISA's mixture opens under DATA_DIR (LISA's dataset folder layout):
    files that must exist, and patterns that must each match at least one file."""

    what: str
    files: tuple[str, ...]
    patterns: tuple[str, ...]


# Every dataset of the lisa-7b mixture beyond KeySeg's (ReasonSeg, refCOCO/+/g and COCO
# train2014 are checked for every recipe), where dvlab-research/LISA's readers open them:
# utils/sem_seg_dataset.py:20-125, utils/refer_seg_dataset.py:51-81, utils/vqa_dataset.py:60-62,
# utils/reason_seg_dataset.py:74-82.
LISA_DATASETS = (
    DatasetFiles("ADE20K (sem_seg)", (), ("ade20k/images/training/*.jpg", "ade20k/annotations/training/*.png")),
    DatasetFiles("COCO-Stuff (sem_seg)", (), ("cocostuff/train2017/*.png", "coco/train2017/*.jpg")),
    DatasetFiles("PASCAL-Part (sem_seg)", ("vlpart/pascal_part/train.json",),
                 ("vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages/*.jpg",)),
    DatasetFiles("PACO-LVIS (sem_seg)", ("vlpart/paco/annotations/paco_lvis_v1_train.json",),
                 ("coco/train2017/*.jpg",)),
    DatasetFiles("Mapillary Vistas (sem_seg)", ("mapillary/config_v2.0.json",),
                 ("mapillary/training/v2.0/labels/*.png", "mapillary/training/images/*.jpg")),
    DatasetFiles("refCLEF (refer_seg)", ("refer_seg/refclef/refs(unc).p", "refer_seg/refclef/instances.json"),
                 ("refer_seg/images/saiapr_tc-12/*",)),
    DatasetFiles("LLaVA-Instruct-150k (vqa)", ("llava_dataset/llava_instruct_150k.json",), ("coco/train2017/*.jpg",)),
    DatasetFiles("ReasonSeg explanatory answers (reason_seg)", ("reason_seg/ReasonSeg/explanatory/train.json",), ()),
)


@dataclass
class Recipe:
    """The inputs of `make reproduce`; an empty string is an unset Makefile variable."""

    data_dir: str = ""
    recipe: str = "keyseg"  # RECIPES
    lisa_ckpt: str = ""  # the keyseg recipe starts from it
    llava_dir: str = ""  # the lisa recipes start from it (LLaVA-Lightning-7B-v1-1 or another LLaVA folder)
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
    if recipe.recipe not in RECIPES:
        return [Check("RECIPE", False, True, f"{recipe.recipe!r} is not one of {', '.join(RECIPES)}")]
    lisa = recipe.recipe != "keyseg"
    keyseg = recipe.recipe != "lisa"
    return (_data_checks(recipe) + (_lisa_data_checks(recipe) if lisa else [])
            + (_llava_checks(recipe) if lisa else []) + _weight_checks(recipe)
            + (_keyword_checks(recipe) if keyseg else []) + _machine_checks(recipe))


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


def _lisa_data_checks(recipe: Recipe) -> list[Check]:
    """The datasets of LISA's mixture that KeySeg's own recipe does not use."""
    data, _ = _given(recipe.data_dir, "DATA_DIR")
    found = []
    for dataset in LISA_DATASETS:
        expected = ", ".join(dataset.files + dataset.patterns)
        if data is None:
            found.append(Check(dataset.what, False, True, f"DATA_DIR not set: expects {expected}"))
            continue
        missing = [name for name in dataset.files if not (data / name).is_file()]
        missing += [pattern for pattern in dataset.patterns if next(data.glob(pattern), None) is None]
        found.append(Check(dataset.what, not missing, True,
                           f"{data}: " + (f"missing {', '.join(missing)}" if missing else expected)))
    return found


def _llava_checks(recipe: Recipe) -> list[Check]:
    llava, llava_text = _given(recipe.llava_dir, "LLAVA_DIR")
    found = [Check("LLAVA_DIR weights", bool(llava and _has_weights(llava)), True,
                   llava_text if llava else f"{llava_text}: expects a LLaVA folder, e.g. LLaVA-Lightning-7B-v1-1 "
                                            "(*.safetensors or *.bin)")]
    ok, detail = _files_present(llava, ("tokenizer_config.json",))
    found.append(Check("LLAVA_DIR tokenizer", ok, True, detail if llava else f"{llava_text}: {detail}"))
    return found


def _weight_checks(recipe: Recipe) -> list[Check]:
    found = []
    if recipe.recipe == "keyseg":  # the lisa recipes make their own LISA
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
    # LISA starts from LLaVA, which has no SAM; the release rebuilds SAM after loading LISA.
    needs_sam = f"recipe {recipe.recipe} (lisa-7b) starts SAM from" if recipe.recipe != "keyseg" else \
        f"{recipe.preset} rebuilds SAM from" if recipe.preset == "keyseg-7b-release" else None
    if sam or needs_sam:
        found.append(Check("SAM_CKPT (sam_vit_h_4b8939.pth)", bool(sam and _has_weights(sam)), True,
                           sam_text if sam else f"{sam_text}: {needs_sam} sam_vit_h_4b8939.pth"))
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
