"""Tiny random-init transformers models with a tokenizer built locally (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path


def build_word_tokenizer(texts: list[str]):
    from keyseg.model.tokenizer import word_level_tokenizer

    return word_level_tokenizer(texts)


def save_tiny_causal_lm(folder: Path, texts: list[str]) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(texts)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=2, eos_token_id=2, pad_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_seq2seq(folder: Path, texts: list[str]) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(texts)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=2, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
