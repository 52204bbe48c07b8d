"""A training run's checkpoint as a model: built, loaded, or exported as a model folder.

A run folder holds `model_config.json`, `tokenizer/`, `train_config.json`,
`data_provenance.json` and `checkpoints/` (DeepSpeed ZeRO shards, read through
`keyseg.training.checkpoints`). `export_checkpoint` turns one of its checkpoints into the
exported folder whose layout `keyseg.model.pretrained` owns; `keyseg export` and
`keyseg train` call it.
"""

from __future__ import annotations

import json
from pathlib import Path

from keyseg.errors import DataError
from keyseg.model.pretrained import (PROVENANCE_FILE, TRAIN_CONFIG_FILE, is_pretrained_folder, load_pretrained,
                                     save_pretrained)
from keyseg.training.checkpoints import load_zero_state_dict, resolve_checkpoint


def build_for_checkpoint(run_dir: Path):
    """(model, tokenizer) shaped exactly like the run's model (LoRA wrapping included)."""
    from keyseg.model import KeySegConfig, KeySegModel
    from keyseg.model.params import apply_lora
    from keyseg.model.tokenizer import load_tokenizer

    config = KeySegConfig.from_dict(json.loads((Path(run_dir) / "model_config.json").read_text()))
    tokenizer = load_tokenizer(Path(run_dir) / "tokenizer")
    model = KeySegModel.from_config(config, tokenizer)
    model = apply_lora(model, config) or model
    return model, tokenizer


def load_checkpoint(path: str | Path):
    """(model, tokenizer, checkpoints folder, tag, run folder) for a training run, its
    checkpoints/ folder or one tag folder; the weights go through keyseg's restricted loader
    (a checkpoint file that would run code is refused) and must all match."""
    folder, tag, run_dir = resolve_checkpoint(Path(path))
    state = load_zero_state_dict(folder, tag)
    model, tokenizer = build_for_checkpoint(run_dir)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(folder / tag, f"checkpoint does not match the run's model: {len(missing)} missing "
                                      f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    return model, tokenizer, folder, tag, run_dir


def export_checkpoint(checkpoint: str | Path, out: str | Path, base_model: str | None = None) -> dict:
    """A training checkpoint -> an exported folder at `out` (LoRA merged); returns export_info."""
    from keyseg.model.params import merge_lora

    model, tokenizer, folder, tag, run_dir = load_checkpoint(checkpoint)
    model = merge_lora(model)
    train_state = json.loads((folder / tag / "train_state.json").read_text())
    export_info = {"checkpoint": str((folder / tag).resolve()), "tag": tag, "step": train_state.get("step"),
                   "epoch": train_state.get("epoch"), "best_giou": train_state.get("best_giou")}
    save_pretrained(model, tokenizer, out, train_config=_read_json(run_dir / TRAIN_CONFIG_FILE),
                    data_provenance=_read_json(run_dir / PROVENANCE_FILE), export_info=export_info,
                    base_model=base_model)
    return export_info


def load_for_evaluation(path: str | Path, placement=None):
    """(model, tokenizer, provenance) from an exported folder, a training run folder (its
    latest checkpoint), its checkpoints/ folder or one checkpoint tag folder, placed by a
    `keyseg.model.devices.Placement` (default: the CPU in float32)."""
    from keyseg.model.devices import place_model, resolve_placement

    path = Path(path)
    placement = placement or resolve_placement()
    if is_pretrained_folder(path):
        model, tokenizer = load_pretrained(path, "cpu")
        return place_model(model, placement), tokenizer, _provenance(path)
    model, tokenizer, _, _, run_dir = load_checkpoint(path)
    return place_model(model.eval(), placement), tokenizer, _provenance(run_dir)


def _provenance(folder: Path) -> dict:
    """What the model was trained on: the training config's splits and the shard inputs
    (an exported folder and a run folder name these files alike)."""
    provenance = {}
    train = _read_json(folder / TRAIN_CONFIG_FILE)
    if train is not None:
        provenance["trained_on"] = [source["split"] for source in train.get("data", {}).get("train", [])]
    data = _read_json(folder / PROVENANCE_FILE)
    if data is not None:
        provenance["data"] = data
    return provenance


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
