"""Build a model for a training run's checkpoint, merge LoRA, and load exported folders."""

from __future__ import annotations

import json
from pathlib import Path


def build_for_checkpoint(run_dir: Path):
    """(model, tokenizer) shaped exactly like the run's model (LoRA wrapping included)."""
    from keyseg.model import KeySegConfig, KeySegModel
    from keyseg.model.params import apply_lora
    from keyseg.training.tokenizer import load_tokenizer

    config = KeySegConfig.from_dict(json.loads((Path(run_dir) / "model_config.json").read_text()))
    tokenizer = load_tokenizer(Path(run_dir) / "tokenizer")
    model = KeySegModel.from_config(config, tokenizer)
    model = apply_lora(model, config) or model
    return model, tokenizer


def load_pretrained(folder: str | Path, device: str = "cpu"):
    """(model, tokenizer) from a folder written by `keyseg export`; every weight must match."""
    from safetensors.torch import load_file

    from keyseg.model import KeySegConfig, KeySegModel
    from keyseg.training.tokenizer import load_tokenizer

    folder = Path(folder)
    config = KeySegConfig.from_dict(json.loads((folder / "config.json").read_text()))
    tokenizer = load_tokenizer(folder / "tokenizer")
    model = KeySegModel.from_config(config, tokenizer)
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: {len(missing)} missing weights (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    return model.to(device).eval(), tokenizer


def load_for_evaluation(path: str | Path, device: str = "cpu"):
    """(model, tokenizer, provenance) from an exported folder, a training run folder (its
    latest checkpoint), its checkpoints/ folder or one checkpoint tag folder."""
    path = Path(path)
    if (path / "model.safetensors").is_file() and (path / "config.json").is_file():
        model, tokenizer = load_pretrained(path, device)
        return model, tokenizer, _provenance(path)
    from keyseg.training.checkpoints import load_zero_state_dict, resolve_checkpoint

    folder, tag, run_dir = resolve_checkpoint(path)
    model, tokenizer = build_for_checkpoint(run_dir)
    # Through keyseg's restricted loader: a checkpoint file that would run code is refused.
    model.load_state_dict(load_zero_state_dict(folder, tag))
    return model.to(device).eval(), tokenizer, _provenance(run_dir)


def _provenance(folder: Path) -> dict:
    """What the model was trained on: the training config's splits and the shard inputs."""
    provenance = {}
    if (folder / "train_config.json").is_file():
        train = json.loads((folder / "train_config.json").read_text())
        provenance["trained_on"] = [source["split"] for source in train.get("data", {}).get("train", [])]
    if (folder / "data_provenance.json").is_file():
        provenance["data"] = json.loads((folder / "data_provenance.json").read_text())
    return provenance
