"""`keyseg export --checkpoint CKPT --out OUT`: a training checkpoint -> an exported model folder.

Consolidates the ZeRO-partitioned weights into one fp32 state dict, merges LoRA into the
LM and writes the folder through `keyseg.model.pretrained` (which owns its layout:
model.safetensors, config.json, tokenizer/, README.md model card, the training config, the
data provenance and export_info.json). `KeySegModel.from_pretrained(OUT)` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from keyseg.runner import StageResult, activity


@dataclass
class ExportConfig:
    checkpoint: Path  # run folder, its checkpoints/ folder, or one tag folder
    out: Path
    base_model: str | None = None  # Hub id the training started from, for the model card
    show_progress: bool = True


@dataclass
class ExportResult(StageResult):
    folder: Path
    info: dict  # what export_info.json holds: the checkpoint, its step, ...


def run(config: ExportConfig, console: Console | None = None) -> ExportResult:
    from keyseg.training.export import export_checkpoint

    console = console or Console(stderr=True)
    with activity(console, config.show_progress, f"exporting {config.checkpoint}"):
        info = export_checkpoint(config.checkpoint, config.out, base_model=config.base_model)
    console.print(f"exported {escape(info['checkpoint'])} (step {info['step']}) to {escape(str(config.out))}",
                  soft_wrap=True)
    return ExportResult(folder=Path(config.out), info=info)
