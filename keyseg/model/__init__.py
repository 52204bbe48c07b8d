"""The KeySeg model: LLaVA + SAM with [SEG] and [KEY] tokens (see keyseg.model.keyseg)."""

from keyseg.model.config import KeySegConfig
from keyseg.model.fusion import KeywordSegFusion, resample_tokens
from keyseg.model.keyseg import KeySegModel, build_projector, build_sam_config
from keyseg.model.losses import dice_loss, keyword_alignment_loss, mask_losses, sigmoid_bce_loss
from keyseg.model.params import (apply_lora, apply_trainability, lora_target_names, parameter_table,
                                 print_parameter_table)
from keyseg.model.tokens import (IGNORE_INDEX, IMAGE_TOKEN_INDEX, SPECIAL_TOKENS, ReferenceTokenizer,
                                 add_special_tokens)

__all__ = [
    "IGNORE_INDEX", "IMAGE_TOKEN_INDEX", "KeySegConfig", "KeySegModel", "KeywordSegFusion", "ReferenceTokenizer",
    "SPECIAL_TOKENS", "add_special_tokens", "apply_lora", "apply_trainability", "build_projector",
    "build_sam_config", "dice_loss", "keyword_alignment_loss", "lora_target_names", "mask_losses",
    "parameter_table", "print_parameter_table", "resample_tokens", "sigmoid_bce_loss",
]
