"""KeywordSegFusion: conditions the [SEG] prompts of one image on its [KEY] embedding(s).

Reference-semantics.md section 6. For one image with n [SEG] embeddings (n x d) and k [KEY]
embeddings (k x d):
  1. resample the n [SEG] embeddings to `slots` (12) slots by linear interpolation along
     the token axis (so any n gives a fixed-size set);
  2. cross-attention: queries from the slots, keys and values from the [KEY] embeddings;
  3. single-head self-attention over the slots;
  4. resample back to n; the result replaces the [SEG] embeddings as SAM's sparse prompts.

`residual=False` is the release's forward. With one [KEY] the softmax over one key is 1,
so every slot becomes out_proj(value_proj(key)) and the fused prompt depends on [KEY]
alone, not on [SEG]. `residual=True` enables the residual + LayerNorm + MLP paths whose
weights the release ships but whose code it leaves commented out:
  x = norm1(slots + cross); x = norm2(x + self_attn(x)); x = x + mlp(x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resample_tokens(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """(n, d) -> (size, d) by linear interpolation along the token axis (align_corners=False)."""
    # F.interpolate works on (batch, channels, length): channels are the feature dims.
    resampled = F.interpolate(tokens.t().unsqueeze(0), size=size, mode="linear", align_corners=False)
    return resampled.squeeze(0).t()


class SingleHeadSelfAttention(nn.Module):
    """Self-attention with one head over a set of tokens (n, d) -> (n, d)."""

    def __init__(self, dim: int):
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        attended = F.scaled_dot_product_attention(
            self.q_proj(tokens).unsqueeze(0), self.k_proj(tokens).unsqueeze(0), self.v_proj(tokens).unsqueeze(0))
        return self.out_proj(attended.squeeze(0))


class KeywordSegFusion(nn.Module):
    def __init__(self, dim: int = 256, slots: int = 12, residual: bool = False, mlp_ratio: int = 4):
        super().__init__()
        self.slots = slots
        self.residual = residual
        # Cross-attention from the [SEG] slots (queries) to the [KEY] embeddings (keys/values).
        self.query_proj = nn.Linear(dim, dim)
        self.key_proj = nn.Linear(dim, dim)
        self.value_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.self_attn = SingleHeadSelfAttention(dim)
        # Only used when `residual` is True; always built so release checkpoints load strictly.
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def cross_attention(self, slots: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(s, d) slots attend to (k, d) keyword embeddings -> (s, d)."""
        attended = F.scaled_dot_product_attention(
            self.query_proj(slots).unsqueeze(0), self.key_proj(keys).unsqueeze(0), self.value_proj(keys).unsqueeze(0))
        return self.out_proj(attended.squeeze(0))

    def forward(self, seg_embeddings: torch.Tensor, key_embeddings: torch.Tensor) -> torch.Tensor:
        """Fuse one image's [SEG] embeddings (n, d) with its [KEY] embeddings (k >= 1, d) -> (n, d)."""
        if seg_embeddings.ndim != 2 or key_embeddings.ndim != 2 or len(key_embeddings) == 0:
            raise ValueError(f"expected (n, d) [SEG] and (k>=1, d) [KEY] embeddings, got "
                             f"{tuple(seg_embeddings.shape)} and {tuple(key_embeddings.shape)}")
        n = len(seg_embeddings)
        if n == 0:
            return seg_embeddings
        slots = resample_tokens(seg_embeddings, self.slots)
        cross = self.cross_attention(slots, key_embeddings)
        if self.residual:
            fused = self.norm1(slots + cross)
            fused = self.norm2(fused + self.self_attn(fused))
            fused = fused + self.mlp(fused)
        else:
            fused = self.self_attn(cross)
        return resample_tokens(fused, n)
