"""`keyseg export CKPT OUT`: a training checkpoint -> a self-describing model folder.

Consolidates the ZeRO-partitioned weights into one fp32 state dict, merges LoRA into the
LM, and writes OUT/model.safetensors, OUT/config.json (KeySegConfig), OUT/tokenizer/,
OUT/train_config.json, OUT/data_provenance.json (what data the model saw) and
OUT/export_info.json. `keyseg.model.pretrained.load_pretrained(OUT)` reads it back.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from keyseg.io import atomic_write_json
from keyseg.training.checkpoints import load_zero_state_dict, resolve_checkpoint


@dataclass
class ExportConfig:
    checkpoint: Path  # run folder, its checkpoints/ folder, or one tag folder
    out: Path


def run(config: ExportConfig, console: Console | None = None) -> Path:
    console = console or Console(stderr=True)
    from safetensors.torch import save_file

    from keyseg.model.params import merge_lora
    from keyseg.model.pretrained import build_for_checkpoint

    folder, tag, run_dir = resolve_checkpoint(config.checkpoint)
    state = load_zero_state_dict(folder, tag)  # refuses a file that would run code when read
    model, tokenizer = build_for_checkpoint(run_dir)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder / tag}: checkpoint does not match the run's model: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]})")
    model = merge_lora(model)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors.tmp"), metadata={"format": "pt", "keyseg": "1"})
    (out / "model.safetensors.tmp").replace(out / "model.safetensors")
    atomic_write_json(out / "config.json", model.config.to_dict())
    tokenizer.save_pretrained(out / "tokenizer")
    for name in ("train_config.json", "data_provenance.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
    train_state = json.loads((folder / tag / "train_state.json").read_text())
    atomic_write_json(out / "export_info.json", {"checkpoint": str((folder / tag).resolve()), "tag": tag,
                                                 "step": train_state.get("step"), "epoch": train_state.get("epoch"),
                                                 "best_giou": train_state.get("best_giou")})
    console.print(f"exported {folder / tag} (step {train_state.get('step')}) to {out}")
    return out
