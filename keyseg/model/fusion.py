"""KeywordSegFusion: conditions a group of [SEG] prompts on the group's [KEY] embedding(s).

The release's forward (ha-erim/KeySeg model/KISA.py:68-130), operation for operation. For
n [SEG] embeddings (n, vision_dim) and k [KEY] embeddings (k, text_dim):
  1. resample the n [SEG] embeddings to `slots` (12) by linear interpolation along the token
     axis (so any n gives a fixed-size set);
  2. cross-attention: Q from the slots, K and V from the [KEY] embeddings, each projected to
     hidden_dim and cast to float32; scores Q K^T / sqrt(hidden_dim), softmax, context =
     weights V; the context is cast back and projected to vision_dim by out_proj;
  3. single-head self-attention over the slots (the release's LightSelfAttention,
     KISA.py:15-65): input clamped to +-1e4, q/k/v cast to float32, scores q k^T *
     dim**-0.5, softmax; the output is cast back and projected by out_proj;
  4. resample back to n; the result replaces the [SEG] embeddings as SAM's sparse prompts.

Casts. Where the release casts to bfloat16 this code casts to the dtype of the module's
parameters. In the release's training and evaluation runs the whole model is bfloat16
(DeepSpeed bf16), so the two are the same operations. With float32 parameters the
release's casts would feed bfloat16 activations into float32 Linear layers and fail; here
float32 parameters simply mean no cast.

No [KEY] embedding (k = 0): K and V are empty, the softmax runs over nothing and the
context is zero, so every slot becomes out_proj's bias before the self-attention. That is
the release's output for such a group; the [SEG] embeddings are not passed through.
One [KEY]: the softmax over one key is 1, so every slot becomes out_proj(value_proj(key))
and the fused prompts depend on [KEY] alone, not on [SEG].

`residual=True` (the variant the paper describes) enables the residual + LayerNorm + MLP
paths whose weights the release ships but whose code it leaves commented out
(KISA.py:114-121): x = norm1(slots + cross); x = norm2(x + self_attn(x)); x = x + mlp(x).
The MLP is vision_dim -> 2 * vision_dim -> vision_dim, as in the release.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLAMP = 1e4
"""The self-attention clamps its input to +-CLAMP (KISA.py:49)."""


def resample_tokens(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """(n, d) -> (size, d) by linear interpolation along the token axis (align_corners=False).

    The same call as the release (KISA.py:98-100): the tokens become (1, d, n), the channels
    being the feature dims.
    """
    resampled = F.interpolate(tokens.unsqueeze(0).transpose(1, 2), size=size, mode="linear", align_corners=False)
    return resampled.transpose(1, 2).squeeze(0)


class SingleHeadSelfAttention(nn.Module):
    """The release's LightSelfAttention with its one head: (n, d) -> (n, d)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.scale = dim ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # A batch of one (1, n, d) and one head (1, 1, n, d), as the release calls it, so the
        # matrix products run through the same kernels.
        x = torch.clamp(tokens.unsqueeze(0), min=-CLAMP, max=CLAMP)
        batch, n, dim = x.shape
        q = self.q_proj(x).to(torch.float32).view(batch, n, 1, dim).transpose(1, 2)
        k = self.k_proj(x).to(torch.float32).view(batch, n, 1, dim).transpose(1, 2)
        v = self.v_proj(x).to(torch.float32).view(batch, n, 1, dim).transpose(1, 2)
        weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        attended = (weights @ v).transpose(1, 2).contiguous().view(batch, n, dim)
        attended = attended.to(self.out_proj.weight.dtype)
        return self.out_proj(attended).squeeze(0)


class KeywordSegFusion(nn.Module):
    def __init__(self, vision_dim: int = 256, slots: int = 12, residual: bool = False,
                 text_dim: int | None = None, hidden_dim: int = 256):
        """vision_dim: width of the [SEG] embeddings (and of the output); text_dim: width of
        the [KEY] embeddings (default vision_dim); hidden_dim: width of the cross-attention
        (the release's default 256 whatever the other two are)."""
        super().__init__()
        text_dim = vision_dim if text_dim is None else text_dim
        self.slots = slots
        self.residual = residual
        # Cross-attention from the [SEG] slots (queries) to the [KEY] embeddings (keys/values).
        self.query_proj = nn.Linear(vision_dim, hidden_dim)
        self.key_proj = nn.Linear(text_dim, hidden_dim)
        self.value_proj = nn.Linear(text_dim, hidden_dim)
        self.out_proj = nn.Linear(hidden_dim, vision_dim)
        self.self_attn = SingleHeadSelfAttention(vision_dim)
        # Only used when `residual` is True; always built so release checkpoints load strictly.
        self.norm1 = nn.LayerNorm(vision_dim)
        self.norm2 = nn.LayerNorm(vision_dim)
        wide = 2 * vision_dim  # the release's MLP width
        self.mlp = nn.Sequential(nn.Linear(vision_dim, wide), nn.GELU(), nn.Linear(wide, vision_dim))

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype: where the release casts to bfloat16, this module casts to it."""
        return self.out_proj.weight.dtype

    def cross_attention(self, slots: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(s, vision_dim) slots attend to (k, text_dim) keyword embeddings -> (s, vision_dim).

        k = 0 gives a zero context (an empty softmax), i.e. out_proj's bias in every slot.
        """
        q = self.query_proj(slots).to(torch.float32)
        k = self.key_proj(keys).to(torch.float32)
        v = self.value_proj(keys).to(torch.float32)
        scores = torch.matmul(q, k.transpose(0, 1)) / (q.size(-1) ** 0.5)
        context = torch.matmul(F.softmax(scores, dim=-1), v)
        return self.out_proj(context.to(self.dtype))

    def forward(self, seg_embeddings: torch.Tensor, key_embeddings: torch.Tensor) -> torch.Tensor:
        """Fuse one group's [SEG] embeddings (n, vision_dim) with its [KEY] embeddings
        (k >= 0, text_dim) -> (n, vision_dim) in the parameters' dtype."""
        if seg_embeddings.ndim != 2 or key_embeddings.ndim != 2:
            raise ValueError(f"expected (n, d) [SEG] and (k, d) [KEY] embeddings, got "
                             f"{tuple(seg_embeddings.shape)} and {tuple(key_embeddings.shape)}")
        n = len(seg_embeddings)
        if n == 0:
            return seg_embeddings.to(self.dtype)
        # The release's inputs already have the parameters' dtype (text_hidden_fcs output).
        seg, keys = seg_embeddings.to(self.dtype), key_embeddings.to(self.dtype)
        slots = resample_tokens(seg, self.slots)
        cross = self.cross_attention(slots, keys)
        if self.residual:
            fused = self.norm1(slots + cross)
            fused = self.norm2(fused + self.self_attn(fused))
            fused = fused + self.mlp(fused)
        else:
            fused = self.self_attn(cross)
        return resample_tokens(fused, n).to(self.dtype)
