"""`make reproduce-check`: every path and prerequisite of `make reproduce`, checked up front.

    python -m pipelines.reproduce_check DATA_DIR LISA_CKPT CLIP_DIR SAM_CKPT GPUS [LLM_BASE_URL LLM_MODEL]

Prints one line per check and exits 1 when a required one fails, in seconds rather than
after an hour of preparing data.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

REFER = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pth", "*.pt", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


@dataclass
class ReproduceCheckConfig:
    data_dir: str
    lisa_ckpt: str
    clip_dir: str
    sam_ckpt: str = ""  # optional: LISA checkpoints carry SAM
    gpus: int = 1
    llm_base_url: str = ""
    llm_model: str = ""


def _has_weights(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".safetensors", ".bin", ".pth", ".pt")
    return path.is_dir() and any(any(path.glob(pattern)) for pattern in WEIGHT_FILES)


def checks(config: ReproduceCheckConfig) -> list[tuple[str, bool, bool, str]]:
    """(what, ok, required, detail) for every prerequisite."""
    results = []
    data = Path(config.data_dir or "/nonexistent")
    results.append(("DATA_DIR exists", data.is_dir(), True, str(data)))
    for split in ("train", "val", "test"):
        folder = data / "reason_seg" / "ReasonSeg" / split
        count = len(list(folder.glob("*.json"))) if folder.is_dir() else 0
        results.append((f"ReasonSeg {split}", count > 0, True, f"{folder} ({count} JSON files)"))
    for dataset, refs in REFER.items():
        folder = data / "refer_seg" / dataset
        ok = (folder / refs).is_file() and (folder / "instances.json").is_file()
        results.append((f"{dataset} refs + instances", ok, True, str(folder)))
    images = data / "refer_seg" / "images" / "mscoco" / "images" / "train2014"
    results.append(("COCO train2014 images", images.is_dir() and any(images.glob("*.jpg")), True, str(images)))
    lisa = Path(config.lisa_ckpt or "/nonexistent")
    results.append(("LISA_CKPT weights", _has_weights(lisa), True, str(lisa)))
    results.append(("LISA_CKPT tokenizer", (lisa / "tokenizer_config.json").is_file(), True, str(lisa)))
    clip = Path(config.clip_dir or "/nonexistent")
    results.append(("CLIP_DIR (clip-vit-large-patch14)", (clip / "config.json").is_file() and _has_weights(clip),
                    True, str(clip)))
    if config.sam_ckpt:
        results.append(("SAM_CKPT", _has_weights(Path(config.sam_ckpt)), True, config.sam_ckpt))
    llm = bool(config.llm_base_url and config.llm_model)
    results.append(("LLM for keyword mining", llm, False,
                    f"{config.llm_model} at {config.llm_base_url}" if llm else
                    "not set: the published keyword file is validated instead"))
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


def run(config: ReproduceCheckConfig, console: Console | None = None) -> bool:
    console = console or Console()
    failed = False
    for what, ok, required, detail in checks(config):
        mark = "[green]ok  [/]" if ok else ("[red]MISSING[/]" if required else "[yellow]note[/]")
        console.print(f"{mark} {what}: {detail}")
        failed |= required and not ok
    console.print("[red]reproduce-check failed: fix the MISSING items above" if failed else
                  "[green]all prerequisites found")
    return not failed


if __name__ == "__main__":
    arguments = sys.argv[1:] + [""] * 7
    config = ReproduceCheckConfig(data_dir=arguments[0], lisa_ckpt=arguments[1], clip_dir=arguments[2],
                                  sam_ckpt=arguments[3], gpus=int(arguments[4] or 1), llm_base_url=arguments[5],
                                  llm_model=arguments[6])
    sys.exit(0 if run(config) else 1)
