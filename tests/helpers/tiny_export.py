"""A random tiny KeySeg model written as an exported folder by keyseg's writer (no training)."""

from __future__ import annotations

from pathlib import Path

import torch


def write_tiny_export(folder: Path, texts: list[str], trained_on: list[str], seed: int = 0) -> Path:
    from keyseg.model import KeySegConfig, KeySegModel
    from keyseg.model.tokenizer import word_level_tokenizer

    tokenizer = word_level_tokenizer(texts)
    torch.manual_seed(seed)
    model = KeySegModel.from_config(KeySegConfig.tiny(vocab_size=len(tokenizer)), tokenizer)
    train_config = {"data": {"train": [{"split": split, "weight": 1.0} for split in trained_on]}}
    return model.save_pretrained(folder, tokenizer=tokenizer, train_config=train_config)
