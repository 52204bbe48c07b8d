"""A random tiny KeySeg model written in the `keyseg export` folder layout (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def write_tiny_export(folder: Path, texts: list[str], trained_on: list[str], seed: int = 0) -> Path:
    from safetensors.torch import save_file

    from keyseg.model import KeySegConfig, KeySegModel
    from keyseg.training.tokenizer import word_level_tokenizer

    tokenizer = word_level_tokenizer(texts)
    torch.manual_seed(seed)
    model = KeySegModel.from_config(KeySegConfig.tiny(vocab_size=len(tokenizer)), tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "train_config.json").write_text(json.dumps({"data": {"train": [{"split": s, "weight": 1.0}
                                                                             for s in trained_on]}}))
    return folder
