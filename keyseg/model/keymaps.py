"""Pure key-renaming functions: published checkpoint layouts -> KeySegModel state-dict keys.

Our keys (`KeySegModel.state_dict()`): `vision_tower.*` (flat transformers-5 `CLIPVisionModel`
keys such as `vision_tower.embeddings.patch_embedding.weight`), `mm_projector.*`,
`llm.*` (the causal LM, e.g. `llm.model.layers.0...`, `llm.lm_head.weight`), `sam.*`
(transformers `SamModel` keys), `text_hidden_fcs.*`, `keyword_fusion.*`,
`embedding_table_proj.*`, `keyword_text_proj.*`.

Every mapper returns the keys it recognises renamed and passes unknown keys through
unchanged, so that `load_into` reports them as unexpected instead of silently ignoring them.
Keys dropped on purpose (buffers the installed classes recompute, the CLIP text tower, SAM's
pixel statistics, ...) are returned separately so they can be reported.
Layouts: docs/checkpoints.md.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

KEYSEG_MODULES = ("keyword_fusion.", "embedding_table_proj.", "keyword_text_proj.")
"""Top-level modules that exist only in KeySeg (optional when loading a plain LISA file)."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded as asked (missing/unexpected keys, shapes, format)."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


# ----------------------------------------------------------------------------- helpers


def _is_recomputed_buffer(key: str) -> bool:
    """Buffers that old files hold but the installed classes recompute (not in state_dict)."""
    return key.endswith("rotary_emb.inv_freq") or key.endswith("embeddings.position_ids")


class Mapped(dict):
    """A mapped state dict that remembers each key's name in the checkpoint (`origin`),
    so that errors can name the key as the file spells it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.origin: dict[str, str] = {}

    def source(self, key: str) -> str:
        return self.origin.get(key, key)


def _source(state: Mapping[str, Tensor], key: str) -> str:
    return state.source(key) if isinstance(state, Mapped) else key


def _put(out: Mapped, new: str, old: str, value: Tensor) -> None:
    if new in out:
        raise CheckpointError(f"checkpoint keys {out.source(new)!r} and {old!r} both map to {new!r}")
    out[new] = value
    out.origin[new] = old


_LORA = re.compile(r"(^|\.)lora_(A|B|embedding_A|embedding_B|magnitude_vector)(\.|$)")


def normalise_peft_keys(state: Mapping[str, Tensor]) -> tuple[StateDict, list[str]]:
    """Undo peft wrapping of a MERGED export; refuse unmerged LoRA weights.

    Strips a leading `base_model.model.`, `.base_layer.`, and `.modules_to_save.default.`
    (the trained copy); drops `.original_module.` copies (returned as dropped).
    """
    lora = [k for k in state if _LORA.search(k)]
    if lora:
        raise CheckpointError(
            f"checkpoint holds {len(lora)} unmerged LoRA adapter weights (e.g. {lora[:3]}): "
            "merge the adapters into the base weights first (peft `merge_and_unload()`) and "
            "export the merged state dict; unmerged LoRA loading is not supported")
    out = Mapped()
    dropped: list[str] = []
    for key, value in state.items():
        new = key[len("base_model.model."):] if key.startswith("base_model.model.") else key
        if ".original_module." in new:
            dropped.append(key)
            continue
        new = new.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
        _put(out, new, _source(state, key), value)
    return out, dropped


def _vision_key(rest: str) -> str:
    """CLIP vision keys -> flat `vision_tower.*` (strip a legacy `vision_model.` prefix)."""
    if rest.startswith("vision_model."):
        rest = rest[len("vision_model."):]
    return "vision_tower." + rest


# ----------------------------------------------------------------------------- SAM

# Substring renames of checkpoints.md, in order. Entries ending in a digit only match a whole
# path component (followed by "." or the end), so "neck.1" never touches "neck.10".
_SAM_RENAMES = [
    ("image_encoder", "vision_encoder"),
    ("blocks", "layers"),
    (".norm", ".layer_norm"),
    ("patch_embed.proj", "patch_embed.projection"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
]
_SAM_PATTERNS = [
    (re.compile(re.escape(old) + (r"(?=\.|$)" if old[-1].isdigit() else "")), new) for old, new in _SAM_RENAMES
]
# MLP heads: layers.0 -> proj_in, layers.<last> -> proj_out, layers.i -> layers.(i-1)
# (for SAM's depth-3 heads exactly the documented 0/1/2 -> proj_in/layers.0/proj_out).
_SAM_MLP = re.compile(r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.layers\.(\d+)\.(.*)$")
_SAM_DROPPED = ("pixel_mean", "pixel_std")


def _map_original_sam(state: Mapping[str, Tensor]) -> tuple[StateDict, list[str]]:
    renamed: dict[str, tuple[str, Tensor]] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if key in _SAM_DROPPED:
            dropped.append(key)
            continue
        new = key
        for pattern, replacement in _SAM_PATTERNS:
            new = pattern.sub(replacement, new)
        renamed[key] = (new, value)
    depth: dict[str, int] = {}
    for new, _ in renamed.values():
        match = _SAM_MLP.match(new)
        if match:
            depth[match[1]] = max(depth.get(match[1], 0), int(match[2]))
    out = Mapped()
    for key, (new, value) in renamed.items():
        match = _SAM_MLP.match(new)
        if match:
            head, index, rest = match[1], int(match[2]), match[3]
            name = "proj_in" if index == 0 else "proj_out" if index == depth[head] else f"layers.{index - 1}"
            new = f"{head}.{name}.{rest}"
        _put(out, new, _source(state, key), value)
    shared = "prompt_encoder.shared_embedding.positional_embedding"
    if shared in out and "shared_image_embedding.positional_embedding" not in out:
        _put(out, "shared_image_embedding.positional_embedding", out.source(shared), out[shared])
    return out, dropped


def map_original_sam_keys(state: Mapping[str, Tensor]) -> StateDict:
    """Original segment-anything keys (`image_encoder.*`, ...) -> transformers `SamModel` keys.

    Drops `pixel_mean`/`pixel_std` and copies the prompt encoder's positional embedding to
    `shared_image_embedding.positional_embedding` (ViT-H: 594 keys -> 595).
    """
    return _map_original_sam(state)[0]


def is_original_sam(state: Mapping[str, Tensor]) -> bool:
    return any(k.startswith("image_encoder.") for k in state)


# ----------------------------------------------------------------------------- LISA / KeySeg

_LLAMA_BODY = ("model.embed_tokens.", "model.layers.", "model.norm.")


def map_lisa_keys(state: Mapping[str, Tensor]) -> tuple[StateDict, list[str]]:
    """LISA / KeySeg (and original-LLaVA) layout -> our keys. Returns (mapped, dropped).

    Raises `CheckpointError` for unmerged LoRA keys. Unknown keys pass through unchanged.
    """
    state, dropped = normalise_peft_keys(state)
    out = Mapped()
    sam: StateDict = {}
    for key, value in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            dropped.append(key)
        elif key.startswith("model.visual_model."):
            sam[key[len("model.visual_model."):]] = value
        elif key.startswith("model.vision_tower.vision_tower."):
            if _is_recomputed_buffer(key):
                dropped.append(key)
            else:
                _put(out, _vision_key(key[len("model.vision_tower.vision_tower."):]), _source(state, key), value)
        elif key.startswith("model.mm_projector."):
            _put(out, key[len("model."):], _source(state, key), value)
        elif key.startswith("model.text_hidden_fcs."):
            _put(out, key[len("model."):], _source(state, key), value)
        elif key.startswith(tuple("model." + m for m in KEYSEG_MODULES)):
            _put(out, key[len("model."):], _source(state, key), value)
        elif key.startswith(_LLAMA_BODY) or key.startswith("lm_head."):
            _put(out, "llm." + key, _source(state, key), value)
        else:
            _put(out, key, _source(state, key), value)  # KeySeg top-level modules, or unexpected
    if sam:
        if not is_original_sam(sam):
            raise CheckpointError("model.visual_model.* keys are not in the original segment-anything layout "
                                  f"(no image_encoder.* key; e.g. {sorted(sam)[:3]})")
        sam_mapped, sam_dropped = _map_original_sam(sam)
        dropped += ["model.visual_model." + k for k in sam_dropped]
        for key, value in sam_mapped.items():
            _put(out, "sam." + key, "model.visual_model." + sam_mapped.source(key), value)
    return out, dropped


# ----------------------------------------------------------------------------- LLaVA (transformers)

_LLAVA_HF = [
    ("model.vision_tower.", None),
    ("vision_tower.", None),
    ("model.multi_modal_projector.linear_1.", "mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "mm_projector.2."),
    ("multi_modal_projector.linear_1.", "mm_projector.0."),
    ("multi_modal_projector.linear_2.", "mm_projector.2."),
    ("model.language_model.", "llm.model."),
    ("language_model.model.", "llm.model."),
    ("language_model.lm_head.", "llm.lm_head."),
    ("lm_head.", "llm.lm_head."),
]


def is_llava_hf(state: Mapping[str, Tensor]) -> bool:
    return any("multi_modal_projector." in k or k.startswith(("language_model.", "model.language_model."))
               for k in state)


def map_llava_hf_keys(state: Mapping[str, Tensor]) -> tuple[StateDict, list[str]]:
    """transformers `LlavaForConditionalGeneration` layout (current or legacy llava-hf) -> our keys.

    Projector `linear_1/linear_2` -> `mm_projector.0/.2` (the "mlp2x_gelu" projector).
    Returns (mapped, dropped); unknown keys pass through unchanged.
    """
    state, dropped = normalise_peft_keys(state)
    out = Mapped()
    for key, value in state.items():
        if _is_recomputed_buffer(key):
            dropped.append(key)
            continue
        new = key
        for prefix, replacement in _LLAVA_HF:
            if key.startswith(prefix):
                rest = key[len(prefix):]
                new = _vision_key(rest) if replacement is None else replacement + rest
                break
        _put(out, new, _source(state, key), value)
    return out, dropped


# ----------------------------------------------------------------------------- single parts


def map_causal_lm_keys(state: Mapping[str, Tensor]) -> tuple[StateDict, list[str]]:
    """A causal-LM file (HF layout, e.g. `model.layers.*`, `lm_head.weight`) -> `llm.*`."""
    state, dropped = normalise_peft_keys(state)
    out = Mapped()
    for key, value in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            dropped.append(key)
        else:
            _put(out, "llm." + key, _source(state, key), value)
    return out, dropped


_CLIP_MODEL_ONLY = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


def map_clip_vision_keys(state: Mapping[str, Tensor]) -> tuple[StateDict, list[str]]:
    """A `CLIPVisionModel` file (flat or legacy `vision_model.*` keys) or a full `CLIPModel`
    file (its `vision_model.*` is taken; text tower and projections dropped) -> `vision_tower.*`."""
    full_clip = any(k.startswith(_CLIP_MODEL_ONLY) for k in state)
    out = Mapped()
    dropped: list[str] = []
    for key, value in state.items():
        if _is_recomputed_buffer(key) or (full_clip and key.startswith(_CLIP_MODEL_ONLY)):
            dropped.append(key)
        else:
            _put(out, _vision_key(key), _source(state, key), value)
    return out, dropped


def map_sam_keys(state: Mapping[str, Tensor]) -> tuple[StateDict, list[str]]:
    """A transformers `SamModel` file or an original segment-anything file (detected by
    `image_encoder.*` keys; a LISA-style `model.visual_model.` prefix is stripped) -> `sam.*`."""
    stripped = Mapped()
    for key, value in state.items():
        new = key
        for prefix in ("model.visual_model.", "visual_model."):
            if key.startswith(prefix):
                new = key[len(prefix):]
                break
        _put(stripped, new, key, value)
    mapped, dropped = _map_original_sam(stripped) if is_original_sam(stripped) else (stripped, [])
    out = Mapped()
    for key, value in mapped.items():
        _put(out, "sam." + key, _source(mapped, key), value)
    return out, [stripped.source(k) for k in dropped]
