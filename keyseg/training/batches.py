"""Loader batches -> the keyword arguments of KeySegModel.forward (tokenisation included)."""

from __future__ import annotations

import torch

from keyseg.model.config import image_patches
from keyseg.model.tokens import as_reference_tokenizer


def text_token_limit(model_config, max_length: int) -> int:
    """The reference's text budget `model_max_length - 255`: 255 is what the 256 patches of
    CLIP ViT-L/14 add beyond their placeholder; a smaller tower adds fewer."""
    limit = max_length - (image_patches(model_config) - 1)
    if limit < 8:
        raise ValueError(f"max_length {max_length} leaves {limit} text tokens next to the image's "
                         f"{image_patches(model_config)} patches")
    return limit


def model_inputs(batch: dict, tokenizer, model_config, max_length: int, device, dtype: torch.dtype) -> dict:
    tokens = as_reference_tokenizer(tokenizer)
    encoded = tokens.tokenize_conversations(batch["conversations"], text_token_limit(model_config, max_length))
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
        "keyword_ids": tokens.keyword_target_ids(batch["keywords"]).to(device),
    }
