"""KeySegConfig: everything needed to build a KeySeg model, as one JSON-safe dataclass.

The three pretrained parts (CLIP vision tower, causal LM, SAM) are described by the keyword
arguments of their transformers configs, so a config can describe both the published
7B model and the tiny CPU model the tests use. `KeySegConfig.lisa_7b()` is the architecture
of LISA-7B-v1 and of the KeySeg release, `KeySegConfig.tiny()` the test model. The training
defaults are the paper's method (the `keyseg-7b` preset); the `keyseg-7b-release` preset
sets the fields in which the release differs (docs/presets.md lists every difference).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

FUSION_MODES = ("keyseg", "keyseg_residual", "none")
PROJECTORS = ("linear", "mlp2x_gelu")
DTYPES = ("float32", "bfloat16", "float16")
NEW_MODULE_INITS = ("torch", "normal")
HF_CONFIG_KEYS = frozenset({
    "model_type", "architectures", "transformers_version", "_name_or_path", "torch_dtype", "id2label",
    "label2id", "return_dict", "output_hidden_states", "output_attentions", "is_encoder_decoder",
    "chunk_size_feed_forward", "problem_type",
})
"""Keys of an exported config.json (or of one saved again by transformers'
`PretrainedConfig.save_pretrained`) that are not KeySegConfig fields."""

LISA_7B_V1_VOCAB = 32004
"""Rows of LISA-7B-v1's embedding table: LLaMA's 32000 + <im_patch>, <im_start>, <im_end>, [SEG]."""
KEYSEG_7B_VOCAB = LISA_7B_V1_VOCAB + 1
"""The KeySeg release's vocabulary: LISA-7B-v1's plus [KEY] (ha-erim/KeySeg finetune.py:204-213)."""


@dataclass
class KeySegConfig:
    # --- the pretrained parts (transformers config keyword arguments) ---------------------
    llm: dict = field(default_factory=dict)
    """Causal LM config as a dict including "model_type" (e.g. "llama"); built with
    `AutoConfig.for_model`. "vocab_size" is updated to the tokenizer's size when the special
    tokens are added."""
    vision: dict = field(default_factory=dict)
    """`CLIPVisionConfig` keyword arguments (CLIP ViT-L/14 at 224 px for LISA-7B)."""
    sam: dict = field(default_factory=dict)
    """`SamConfig` keyword arguments: "vision_config", "prompt_encoder_config" and
    "mask_decoder_config" dicts. The mask decoder's layer_norm_eps is forced to 1e-5 (the
    original two-way transformer's LayerNorm default) unless given explicitly."""

    # --- how the parts are connected -------------------------------------------------------
    projector: str = "linear"
    """"linear" (LISA-7B-v1: one Linear) or "mlp2x_gelu" (LLaVA-1.5: Linear-GELU-Linear)."""
    vision_feature_layer: int = -2
    """CLIP hidden-state index whose patch tokens (CLS dropped) feed the projector."""
    out_dim: int = 256
    """Width of the [SEG]/[KEY] embeddings: SAM's prompt embedding size."""

    # --- keyword fusion and keyword loss ---------------------------------------------------
    fusion: str = "keyseg"
    """"keyseg" (the release), "keyseg_residual" (adds the residual/LayerNorm/MLP paths that
    the release defines but leaves commented out) or "none" (plain LISA prompts)."""
    fusion_slots: int = 12
    """Number of slots the [SEG] embeddings of one image are interpolated to before fusion."""
    new_module_init: str = "torch"
    """How the modules KeySeg adds to LISA (`keyword_fusion`, `embedding_table_proj`,
    `keyword_text_proj`) start: "torch" (PyTorch's Linear/LayerNorm defaults) or "normal":
    Linear weights ~ N(0, the LM's initializer_range), biases 0, which is what transformers
    4.31's `from_pretrained` gives the release's modules that LISA-7B-v1 does not hold
    (LlamaPreTrainedModel._init_weights). Applied by `KeySegModel.from_config`."""
    key_temperature: float = 0.07
    """Temperature of the cosine-similarity logits of the keyword alignment loss."""

    # --- loss weights (KeySeg release; LISA uses ce 1.0, bce 2.0, dice 0.5) -----------------
    ce_weight: float = 1e-4
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    key_weight: float = 1.0
    loss_ignore_255: bool = False
    """False (reference): ignore pixels (255) count as background in BCE and Dice.
    True: they are excluded from both losses."""

    # --- which parts train (docs/fidelity.md, "Recipe"; docs/presets.md) --------------------
    train_vision_tower: bool = False
    train_projector: bool = False
    train_sam_encoder: bool = False
    train_prompt_encoder: bool = False
    """Also covers SAM's shared positional embedding, which the prompt encoder owns."""
    train_mask_decoder: bool = True
    train_lm_head: bool = True
    train_embed_tokens: bool = True
    train_llm: bool = False
    """Fully fine-tune the rest of the LM (its layers and final norm). The reference trains
    LoRA adapters instead and keeps these frozen."""
    train_fusion: bool = True
    """`keyword_fusion` (the release keeps it at its initial values but for LoRA adapters on
    its self-attention, see `lora_fusion`)."""
    train_embedding_table_proj: bool = True
    """The vocabulary projection of the keyword loss (the release keeps it at its initial
    values). `keyword_text_proj` never trains: no forward uses it, the release's neither; it
    exists so that release checkpoints load strictly."""
    train_text_hidden_fcs: bool = True

    # --- LoRA ------------------------------------------------------------------------------
    lora_r: int = 8
    """LoRA rank; 0 disables LoRA."""
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    """Linear module names (last name part) that get adapters inside the LM, never SAM's or
    CLIP's modules of the same name."""
    lora_fusion: bool = False
    """Also put adapters on the fusion's Linear layers named in `lora_targets` (its
    self-attention q_proj and v_proj). The release does: its name search takes every Linear
    whose name contains q_proj or v_proj outside SAM, CLIP, the projector and
    text_hidden_fcs (ha-erim/KeySeg finetune.py:265-285)."""

    # --- runtime ---------------------------------------------------------------------------
    gradient_checkpointing: bool = False
    dtype: str = "float32"
    """Parameter dtype: "float32", "bfloat16" or "float16". Losses are computed in float32."""
    sam_image_size: int = 1024
    """Side of SAM's padded square input; must equal the SAM vision config's image_size."""
    clip_image_size: int = 224
    """Side of CLIP's square input; must equal the CLIP vision config's image_size."""

    # --- token ids, filled in by `keyseg.model.tokens.add_special_tokens` ------------------
    seg_token_id: int | None = None
    key_token_id: int | None = None
    im_start_token_id: int | None = None
    im_end_token_id: int | None = None
    pad_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {self.fusion!r}")
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {self.projector!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.new_module_init not in NEW_MODULE_INITS:
            raise ValueError(f"new_module_init must be one of {NEW_MODULE_INITS}, got {self.new_module_init!r}")
        # JSON turns tuples into lists; keep one type so configs compare equal after a round trip.
        self.lora_targets = tuple(self.lora_targets)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe deep copy (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["lora_targets"] = list(self.lora_targets)
        return copy.deepcopy(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "KeySegConfig":
        """Also reads an exported folder's config.json: its model_type must be "keyseg" (or
        absent, as in folders exported before it was written) and the keys transformers adds
        when it saves a config are dropped."""
        model_type = data.get("model_type", "keyseg")
        if model_type != "keyseg":
            raise ValueError(f'model_type {model_type!r} is not a KeySeg config (expected "keyseg")')
        data = {key: value for key, value in data.items() if key not in HF_CONFIG_KEYS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            # Loud rather than silently dropping a setting from a saved run.
            raise ValueError(f"unknown KeySegConfig fields: {unknown}")
        return cls(**copy.deepcopy(data))

    @classmethod
    def lisa_7b(cls, **overrides: Any) -> "KeySegConfig":
        """The architecture of LISA-7B-v1 / the KeySeg release (weights are loaded separately).

        LLaMA-7B (vocab 32000 before the added tokens; the tokenizer decides the final size,
        KEYSEG_7B_VOCAB with LISA-7B-v1's), CLIP ViT-L/14 at 224 px, SAM ViT-H.
        """
        config = cls(
            llm=dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                     num_hidden_layers=32, num_attention_heads=32, max_position_embeddings=2048,
                     rms_norm_eps=1e-6, tie_word_embeddings=False),
            vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                        image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
            sam=dict(
                vision_config=dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                                   global_attn_indexes=[7, 15, 23, 31], image_size=1024, patch_size=16,
                                   window_size=14, output_channels=256),
                prompt_encoder_config=dict(image_size=1024, patch_size=16, hidden_size=256),
                mask_decoder_config=dict(layer_norm_eps=1e-5),
            ),
        )
        return dataclasses.replace(config, **overrides)

    @classmethod
    def tiny(cls, vocab_size: int = 128, **overrides: Any) -> "KeySegConfig":
        """A tiny random-init model that runs a forward pass on CPU in milliseconds.

        `vocab_size` is the base tokenizer's size; the special tokens are added on top.
        The SAM encoder is initialised with std 0.02 and trained: with transformers' default
        1e-10 init a random SAM encoder outputs a constant, and masks could not be learned.
        """
        config = cls(
            llm=dict(model_type="llama", vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                     num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512),
            vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                        image_size=56, patch_size=14),
            sam=dict(
                vision_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   global_attn_indexes=[1], image_size=128, patch_size=16, window_size=14,
                                   output_channels=256, mlp_dim=256, initializer_range=0.02),
                prompt_encoder_config=dict(image_size=128, patch_size=16, hidden_size=256),
                mask_decoder_config=dict(layer_norm_eps=1e-5),
            ),
            sam_image_size=128,
            clip_image_size=56,
            train_sam_encoder=True,
            lora_r=0,
        )
        return dataclasses.replace(config, **overrides)


def image_patches(config: KeySegConfig) -> int:
    """Number of CLIP patch features that replace the one <image> placeholder of a row."""
    patch = int(config.vision.get("patch_size", 32))
    return (config.clip_image_size // patch) ** 2
