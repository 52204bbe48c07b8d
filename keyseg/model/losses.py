"""KeySeg's mask and keyword losses, always in float32.

The release's formulas (ha-erim/KeySeg model/KISA.py:218-261 for Dice and BCE, 506-544 for
the keyword loss and the averaging). Mask losses are computed per mask at the original
image resolution and averaged over every mask of the batch, so each mask weighs the same
whatever image it belongs to (the release sums per-mask losses and divides by the number
of masks). The release computes them in its bf16 activations' dtype where this module
uses float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

IGNORE_LABEL = 255


def mask_targets(mask: torch.Tensor, ignore_255: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """float32 targets and, with `ignore_255`, the boolean map of pixels that count.

    The targets are the mask's values as floats with ignore pixels (255) set to 0: the
    release trains on `masks.float()` (ha-erim/KeySeg utils/reason_refer.py:174), where a
    ReasonSeg mask is already `mask == 1` and a refCOCO mask is the sum of the annotation's
    polygon masks (2 where two polygons overlap). Without `ignore_255` (the reference)
    ignore pixels are plain background and no map is returned.
    """
    ignore = mask == IGNORE_LABEL
    targets = mask.float().masked_fill(ignore, 0.0)
    valid = ~ignore if ignore_255 else None
    return targets, valid


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-mask BCE with logits, averaged over the (valid) pixels: (Q, H, W) -> (Q,)."""
    logits, targets = logits.float().flatten(1), targets.float().flatten(1)
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if valid is None:
        return per_pixel.mean(1)
    weights = valid.flatten(1).float()
    # A mask with no valid pixel contributes 0 instead of 0/0.
    return (per_pixel * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None,
              scale: float = 1000.0, eps: float = 1e-6) -> torch.Tensor:
    """Per-mask Dice loss on sigmoid probabilities: (Q, H, W) -> (Q,).

    Sums are divided by `scale` before the ratio (LISA's formulation: it keeps the sums of
    large masks in a comfortable range), so `eps` acts on the scaled sums.
    """
    probs, targets = logits.float().sigmoid().flatten(1), targets.float().flatten(1)
    if valid is not None:
        weights = valid.flatten(1).float()
        probs, targets = probs * weights, targets * weights
    numerator = 2 * (probs / scale * targets).sum(1)
    denominator = (probs / scale).sum(1) + (targets / scale).sum(1)
    return 1 - (numerator + eps) / (denominator + eps)


def mask_losses(pred_masks: Sequence[torch.Tensor], gt_masks: Sequence[torch.Tensor],
                ignore_255: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(bce, dice): each the mean of its per-mask losses over all masks of the batch.

    `pred_masks[i]` are logits (Q_i, H_i, W_i), `gt_masks[i]` uint8 (Q_i, H_i, W_i): the
    target value (1, or 2 where refCOCO polygons overlap) and 255 = ignore.
    """
    bce_terms, dice_terms = [], []
    for logits, mask in zip(pred_masks, gt_masks, strict=True):
        if logits.shape != mask.shape:
            raise ValueError(f"predicted masks {tuple(logits.shape)} and targets {tuple(mask.shape)} differ")
        targets, valid = mask_targets(mask, ignore_255)
        bce_terms.append(sigmoid_bce_loss(logits, targets, valid))
        dice_terms.append(dice_loss(logits, targets, valid))
    if not bce_terms or sum(len(t) for t in bce_terms) == 0:
        zero = pred_masks[0].new_zeros((), dtype=torch.float32) if pred_masks else torch.zeros(())
        return zero, zero
    return torch.cat(bce_terms).mean(), torch.cat(dice_terms).mean()


def keyword_alignment_loss(key_embeddings: torch.Tensor, projected_table: torch.Tensor,
                           target_ids: torch.Tensor, temperature: float = 0.07,
                           ignore_id: int | None = None) -> torch.Tensor:
    """Cross-entropy of cosine-similarity logits between [KEY] embeddings and the vocabulary.

    key_embeddings (K, d); projected_table (V, d): the LM's input-embedding table projected to
    d; target_ids (K,): the keyword's first sub-token id. A row is ignored when its target is
    -100 or `ignore_id`: the release's CrossEntropyLoss ignores the pad id (LLaMA's unk, 0),
    which is also its target for a query without a keyword, so a keyword whose first
    sub-token is the pad id never counts (KISA.py:520-527).

    When no row has a target the release's mean over nothing is NaN; this returns 0 instead,
    a deliberate deviation so that one keyword-less batch cannot poison the weights.
    """
    keep = target_ids != -100
    if ignore_id is not None:
        keep &= target_ids != ignore_id
    if not bool(keep.any()):
        return projected_table.new_zeros((), dtype=torch.float32)
    keys = F.normalize(key_embeddings[keep].float(), dim=-1)
    table = F.normalize(projected_table.float(), dim=-1)
    logits = torch.matmul(keys, table.T) / temperature
    return F.cross_entropy(logits, target_ids[keep])
