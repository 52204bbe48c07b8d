"""Loader batches -> the keyword arguments of KeySegModel.forward (tokenisation included)."""

from __future__ import annotations

import torch

from keyseg.model import keyword_token_ids, tokenize_conversations


def model_inputs(batch: dict, tokenizer, max_length: int, device, dtype: torch.dtype) -> dict:
    encoded = tokenize_conversations(tokenizer, batch["questions"], batch["answers"], max_length)
    return {
        "images_sam": batch["image_sam"].to(device=device, dtype=dtype),
        "images_clip": batch["image_clip"].to(device=device, dtype=dtype),
        "input_ids": encoded["input_ids"].to(device),
        "attention_mask": encoded["attention_mask"].to(device),
        "labels": encoded["labels"].to(device),
        "offsets": batch["offsets"].to(device),
        "masks": [mask.to(device) for mask in batch["masks"]],
        "resize": batch["resize"],
        "original_size": batch["original_size"],
        "keyword_ids": keyword_token_ids(tokenizer, batch["keywords"]).to(device),
    }
