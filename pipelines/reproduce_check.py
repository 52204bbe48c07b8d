"""`make reproduce-check`: every path and prerequisite of `make reproduce`, checked up front.

    python -m pipelines.reproduce_check DATA_DIR LISA_CKPT CLIP_DIR SAM_CKPT GPUS [LLM_BASE_URL LLM_MODEL [PRESET]]

Prints one line per check and exits 1 when a required one fails, in seconds rather than
after an hour of preparing data.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

REFER = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pth", "*.pt", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


@dataclass
class ReproduceCheckConfig:
    data_dir: str
    lisa_ckpt: str
    clip_dir: str
    sam_ckpt: str = ""  # keyseg-7b-release rebuilds SAM from it; keyseg-7b keeps LISA's
    gpus: int = 1
    llm_base_url: str = ""
    llm_model: str = ""
    preset: str = "keyseg-7b-release"


def _has_weights(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".safetensors", ".bin", ".pth", ".pt")
    return path.is_dir() and any(any(path.glob(pattern)) for pattern in WEIGHT_FILES)


def _given(value: str, name: str) -> tuple[Path | None, str]:
    """(path, how to print it): an unset variable is said to be unset, not shown as a path."""
    return (Path(value), value) if value else (None, f"{name} not set")


def _files_present(folder: Path | None, names: tuple[str, ...]) -> tuple[bool, str]:
    if folder is None:
        return False, f"expects {', '.join(names)}"
    missing = [name for name in names if not (folder / name).is_file()]
    return not missing, f"{folder}: " + (f"missing {', '.join(missing)}" if missing else ", ".join(names))


def checks(config: ReproduceCheckConfig) -> list[tuple[str, bool, bool, str]]:
    """(what, ok, required, detail) for every prerequisite."""
    results = []
    data, data_text = _given(config.data_dir, "DATA_DIR")
    results.append(("DATA_DIR exists", bool(data and data.is_dir()), True, data_text))
    reason = data / "reason_seg" / "ReasonSeg" if data else None
    for split in ("train", "val", "test"):
        folder = reason / split if reason else None
        count = len(list(folder.glob("*.json"))) if folder and folder.is_dir() else 0
        where = f"{folder} ({count} JSON files)" if folder else f"DATA_DIR not set: expects reason_seg/ReasonSeg/{split}/*.json"
        results.append((f"ReasonSeg {split}", count > 0, True, where))
    for dataset, refs in REFER.items():
        ok, detail = _files_present(data / "refer_seg" / dataset if data else None, (refs, "instances.json"))
        results.append((f"{dataset} refs + instances", ok, True,
                        detail if data else f"DATA_DIR not set: refer_seg/{dataset}/ {detail}"))
    images = data / "refer_seg" / "images" / "mscoco" / "images" / "train2014" if data else None
    results.append(("COCO train2014 images", bool(images and images.is_dir() and any(images.glob("*.jpg"))), True,
                    str(images) if images else "DATA_DIR not set: expects refer_seg/images/mscoco/images/train2014/*.jpg"))
    lisa, lisa_text = _given(config.lisa_ckpt, "LISA_CKPT")
    results.append(("LISA_CKPT weights", bool(lisa and _has_weights(lisa)), True,
                    lisa_text if lisa else f"{lisa_text}: expects a LISA-7B-v1 folder (*.safetensors or *.bin)"))
    ok, detail = _files_present(lisa, ("tokenizer_config.json",))
    results.append(("LISA_CKPT tokenizer", ok, True, detail if lisa else f"{lisa_text}: {detail}"))
    clip, clip_text = _given(config.clip_dir, "CLIP_DIR")
    ok, detail = _files_present(clip, ("config.json",))
    results.append(("CLIP_DIR (clip-vit-large-patch14)", ok and _has_weights(clip), True,
                    detail if clip else f"{clip_text}: {detail} and weights"))
    sam, sam_text = _given(config.sam_ckpt, "SAM_CKPT")
    if sam or config.preset == "keyseg-7b-release":
        results.append(("SAM_CKPT (sam_vit_h_4b8939.pth)", bool(sam and _has_weights(sam)), True,
                        sam_text if sam else f"{sam_text}: {config.preset} rebuilds SAM from sam_vit_h_4b8939.pth"))
    results += _keyword_checks(config, reason)
    try:
        import torch

        available = torch.cuda.device_count()
    except Exception:  # a broken torch install is itself the finding
        available = 0
    results.append((f"GPUs ({config.gpus} wanted)", available >= config.gpus, True, f"{available} visible"))
    for module in ("deepspeed", "peft", "webdataset"):
        import importlib.util

        # find_spec, not import: importing deepspeed alone takes seconds.
        found = importlib.util.find_spec(module) is not None
        results.append((f"python package {module}", found, True, "installed" if found else "not installed"))
    free = shutil.disk_usage(Path.cwd()).free / 1e9
    results.append(("free disk >= 100 GB", free >= 100, False, f"{free:.0f} GB free here"))
    return results


def _keyword_checks(config: ReproduceCheckConfig, reason: Path | None) -> list[tuple[str, bool, bool, str]]:
    """Mining needs both LLM variables; without either, the published keyword file must be there."""
    if config.llm_base_url and config.llm_model:
        return [("LLM for keyword mining", True, True, f"{config.llm_model} at {config.llm_base_url}")]
    if config.llm_base_url or config.llm_model:
        unset = "LLM_BASE_URL" if config.llm_model else "LLM_MODEL"
        return [("LLM for keyword mining", False, True,
                 f"{unset} not set: set both LLM_BASE_URL and LLM_MODEL, or neither to validate the published "
                 "explanatory_key/keyword_outputs.json")]
    ok, detail = _files_present(reason / "explanatory_key" if reason else None, ("keyword_outputs.json",))
    return [("published keyword file (no LLM set)", ok, True, detail if reason else f"DATA_DIR not set: {detail}")]


def run(config: ReproduceCheckConfig, console: Console | None = None) -> bool:
    console = console or Console()
    failed = False
    for what, ok, required, detail in checks(config):
        mark = "[green]ok  [/]" if ok else ("[red]MISSING[/]" if required else "[yellow]note[/]")
        console.print(f"{mark} {what}: {escape(detail)}", soft_wrap=True)
        failed |= required and not ok
    console.print("[red]reproduce-check failed: fix the MISSING items above" if failed else
                  "[green]all prerequisites found")
    return not failed


if __name__ == "__main__":
    arguments = sys.argv[1:] + [""] * 8
    config = ReproduceCheckConfig(data_dir=arguments[0], lisa_ckpt=arguments[1], clip_dir=arguments[2],
                                  sam_ckpt=arguments[3], gpus=int(arguments[4] or 1), llm_base_url=arguments[5],
                                  llm_model=arguments[6], preset=arguments[7] or "keyseg-7b-release")
    sys.exit(0 if run(config) else 1)
