"""Tiny checkpoints in the published LISA / KeySeg layouts, built from a random keyseg model.

The maps here go the REVERSE way (our keys -> published layouts), written independently of
the forward maps in keyseg.model.keymaps, so a test that loads what these write checks the
loader against a second implementation. `write_release_folder` writes a whole folder as the
LISA-7B-v1 release ships it (sharded weights with an index, config.json, tokenizer files).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from keyseg.model.config import KeySegConfig
from keyseg.model.keyseg import KeySegModel

KEYSEG_PREFIXES = ("keyword_fusion.", "embedding_table_proj.", "keyword_text_proj.")
# The tokens LISA-7B-v1's tokenizer adds to LLaMA's, in its order (ids 32000..32003 there).
LISA_ADDED_TOKENS = ["<im_patch>", "<im_start>", "<im_end>", "[SEG]"]


def build(seed: int, vocab: int = 128, **overrides) -> KeySegModel:
    """A tiny KeySegModel whose every parameter is random (so no two seeds share a value)."""
    torch.manual_seed(seed)
    model = KeySegModel(KeySegConfig.tiny(vocab_size=vocab, **overrides)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.1)
    return model


def plain(state) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def sam_to_original(key: str) -> str | None:
    """transformers SamModel key -> segment-anything key (None: no counterpart)."""
    if key == "shared_image_embedding.positional_embedding":
        return None  # transformers' copy of the prompt encoder's Gaussian matrix
    part, rest = key.split(".", 1)
    if part == "vision_encoder":
        rest = re.sub(r"^layers\.(\d+)\.layer_norm(\d)\.", r"layers.\1.norm\2.", rest)
        rest = re.sub(r"^layers\.", "blocks.", rest)
        rest = rest.replace("patch_embed.projection.", "patch_embed.proj.")
        for index, name in enumerate(["conv1", "layer_norm1", "conv2", "layer_norm2"]):
            rest = rest.replace(f"neck.{name}.", f"neck.{index}.")
        return "image_encoder." + rest
    if part == "prompt_encoder":
        rest = rest.replace("shared_embedding.positional_embedding", "pe_layer.positional_encoding_gaussian_matrix")
        rest = re.sub(r"^point_embed\.", "point_embeddings.", rest)  # not not_a_point_embed
        for index, name in zip([0, 1, 3, 4, 6], ["conv1", "layer_norm1", "conv2", "layer_norm2", "conv3"]):
            rest = rest.replace(f"mask_embed.{name}.", f"mask_downscaling.{index}.")
        return "prompt_encoder." + rest
    assert part == "mask_decoder", key
    rest = re.sub(r"\.layer_norm(\d)\.", r".norm\1.", rest)
    rest = rest.replace("transformer.layer_norm_final_attn.", "transformer.norm_final_attn.")
    for index, name in zip([0, 1, 3], ["upscale_conv1", "upscale_layer_norm", "upscale_conv2"]):
        rest = rest.replace(f"{name}.", f"output_upscaling.{index}.")
    head = re.match(r"^(iou_prediction_head|output_hypernetworks_mlps\.\d+)\.(proj_in|layers\.0|proj_out)\.(.*)$",
                    rest)
    if head:
        layer = {"proj_in": 0, "layers.0": 1, "proj_out": 2}[head[2]]
        rest = f"{head[1]}.layers.{layer}.{head[3]}"
    return "mask_decoder." + rest


def original_sam_state(sam) -> dict:
    state = {sam_to_original(k): v for k, v in plain(sam.state_dict()).items() if sam_to_original(k)}
    state["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    state["pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    return state


def to_lisa(model, vision=True, keyseg=True, keyseg_under_model=False) -> dict:
    """Our state dict -> LISA/KeySeg release layout (+ an old rotary buffer)."""
    out = {}
    for key, value in plain(model.state_dict()).items():
        if key.startswith("llm."):
            out[key[len("llm."):]] = value  # llm.model.* -> model.*, llm.lm_head -> lm_head
        elif key.startswith("sam."):
            original = sam_to_original(key[len("sam."):])
            if original:
                out["model.visual_model." + original] = value
        elif key.startswith("vision_tower."):
            if vision:
                out["model.vision_tower.vision_tower.vision_model." + key[len("vision_tower."):]] = value
        elif key.startswith(("mm_projector.", "text_hidden_fcs.")):
            out["model." + key] = value
        elif key.startswith(KEYSEG_PREFIXES):
            if keyseg:
                out[("model." if keyseg_under_model else "") + key] = value
        else:
            raise AssertionError(f"test reverse map does not know {key}")
    out["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.arange(0, 8, dtype=torch.float32)
    return out


def release_checkpoint(model, keyseg: bool = True) -> dict:
    """`LISAForCausalLM.save_pretrained` of the release (or of LISA-7B-v1 with keyseg=False).

    transformers 4.31 keeps every layer's rotary `inv_freq` buffer; the vision tower is absent
    (built with delay_load, ha-erim/KeySeg model/llava/model/llava_arch.py:34) and SAM's
    pixel statistics are non-persistent buffers.
    """
    state = to_lisa(model, vision=False, keyseg=keyseg)
    layers = model.config.llm["num_hidden_layers"]
    state.update({f"model.layers.{i}.self_attn.rotary_emb.inv_freq": torch.arange(0, 8, dtype=torch.float32)
                  for i in range(layers)})
    return state


def save_sharded(state: dict, folder, shards: int = 3, bin_files: bool = False):
    """A sharded checkpoint with its index: safetensors shards, or with `bin_files`
    transformers 4.31's default `save_pretrained` output (pytorch_model-*.bin shards)."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    prefix, suffix = ("pytorch_model", "bin") if bin_files else ("model", "safetensors")
    weight_map = {}
    for index in range(shards):
        name = f"{prefix}-{index + 1:05d}-of-{shards:05d}.{suffix}"
        part = {k: state[k] for k in keys[index::shards]}
        if bin_files:
            torch.save(part, folder / name)
        else:
            save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / f"{prefix}.{suffix}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def write_release_tokenizer(folder: Path, texts: list[str], keyseg: bool) -> int:
    """Tokenizer files as LISA-7B-v1's slow `LlamaTokenizer` saves them (tokenizer.model,
    tokenizer_config.json, special_tokens_map.json, added_tokens.json; no tokenizer.json), with
    a small byte-fallback BPE SentencePiece model trained on `texts` in place of LLaMA's.
    LISA's added tokens follow the base vocabulary; a KeySeg release adds [KEY] after them
    (ha-erim/KeySeg finetune.py:204-213). Returns the vocabulary size (the embedding rows)."""
    import io

    import sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=proto, vocab_size=500, hard_vocab_limit=False, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True, character_coverage=1.0, minloglevel=2)
    (folder / "tokenizer.model").write_bytes(proto.getvalue())
    base = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue()).get_piece_size()
    added = LISA_ADDED_TOKENS + (["[KEY]"] if keyseg else [])
    (folder / "added_tokens.json").write_text(json.dumps({token: base + i for i, token in enumerate(added)}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "add_bos_token": True, "add_eos_token": False, "model_max_length": 512, "padding_side": "right",
         "legacy": False, "clean_up_tokenization_spaces": False, "sp_model_kwargs": {}}))
    return base + len(added)


def write_release_folder(folder: Path, model, keyseg: bool, bin_files: bool = True, shards: int = 2) -> Path:
    """`model` saved as the release folder ships: weight shards + index (pytorch_model-0000x-of-
    0000y.bin by default, as LISA-7B-v1) and a LLaVA config.json. The tokenizer files are
    `write_release_tokenizer`'s (the model's vocabulary must be its size)."""
    save_sharded(release_checkpoint(model, keyseg=keyseg), folder, shards=shards, bin_files=bin_files)
    llm = model.config.llm
    config = {"architectures": ["LISAForCausalLM"], "model_type": "llava", "hidden_size": llm["hidden_size"],
              "intermediate_size": llm["intermediate_size"], "num_hidden_layers": llm["num_hidden_layers"],
              "num_attention_heads": llm["num_attention_heads"], "vocab_size": llm["vocab_size"],
              "mm_vision_tower": "openai/clip-vit-large-patch14", "torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
