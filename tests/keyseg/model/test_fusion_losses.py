"""KeywordSegFusion, token resampling, mask losses and the keyword alignment loss.

The fusion is checked against the release's operation sequence written out step by step
here (projections, float32 attention, casts back to the parameters' dtype, the clamp), in
float32 and in bfloat16, including dims that differ (text 24, vision 32, hidden 16) and a
group without [KEY]. Golden values from the reference code itself are in
test_reference_goldens_model.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from keyseg.model import KeywordSegFusion, dice_loss, keyword_alignment_loss, mask_losses, resample_tokens, \
    sigmoid_bce_loss
from keyseg.model.losses import mask_targets


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (LayerNorms too), so no path can hide behind ones and zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module


def interpolate(tokens: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(tokens.t()[None], size=size, mode="linear", align_corners=False)[0].t()


def expected_fusion(fusion: KeywordSegFusion, seg: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The release's forward, spelled out: float32 attention, casts to the parameter dtype."""
    dtype = fusion.out_proj.weight.dtype
    slots = interpolate(seg, fusion.slots)
    q = fusion.query_proj(slots).float()
    k, v = fusion.key_proj(keys).float(), fusion.value_proj(keys).float()
    hidden = q.shape[-1]
    context = torch.softmax(q @ k.t() / hidden ** 0.5, dim=-1) @ v
    cross = fusion.out_proj(context.to(dtype))
    attn = fusion.self_attn
    x = cross.clamp(-1e4, 1e4)
    q, k, v = attn.q_proj(x).float(), attn.k_proj(x).float(), attn.v_proj(x).float()
    weights = torch.softmax((q @ k.t()) * x.shape[-1] ** -0.5, dim=-1)
    fused = attn.out_proj((weights @ v).to(dtype))
    return interpolate(fused, len(seg)).to(dtype)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_resample_to_slots_and_back(n):
    tokens = torch.randn(n, 8)
    slots = resample_tokens(tokens, 12)
    assert slots.shape == (12, 8)
    assert resample_tokens(slots, n).shape == (n, 8)
    # Linear interpolation of a constant set is the same constant.
    constant = torch.ones(n, 8) * 3
    torch.testing.assert_close(resample_tokens(constant, 12), torch.ones(12, 8) * 3)
    if n == 1:
        torch.testing.assert_close(slots, tokens.expand(12, 8))  # one token fills every slot
        torch.testing.assert_close(resample_tokens(slots, 1), tokens)


def test_resample_is_linear_interpolation_with_half_pixel_centres():
    tokens = torch.tensor([[0.0], [12.0]])
    slots = resample_tokens(tokens, 12)
    # align_corners=False: output slot j samples source position (j + 0.5) / 6 - 0.5, clamped.
    expected = torch.tensor([min(max((j + 0.5) / 6 - 0.5, 0.0), 1.0) * 12 for j in range(12)]).unsqueeze(1)
    torch.testing.assert_close(slots, expected)


def test_release_layout_and_shapes():
    fusion = KeywordSegFusion(vision_dim=256)
    shapes = {name: tuple(p.shape) for name, p in fusion.state_dict().items()}
    assert len(shapes) == 24  # the release's 24 fusion tensors
    assert shapes["mlp.0.weight"] == (512, 256) and shapes["mlp.2.weight"] == (256, 512)  # 2x, as released
    assert shapes["query_proj.weight"] == shapes["self_attn.q_proj.weight"] == (256, 256)
    mixed = KeywordSegFusion(vision_dim=32, text_dim=24, hidden_dim=16)
    shapes = {name: tuple(p.shape) for name, p in mixed.state_dict().items()}
    assert shapes["query_proj.weight"] == (16, 32) and shapes["key_proj.weight"] == (16, 24)
    assert shapes["out_proj.weight"] == (32, 16) and shapes["self_attn.v_proj.weight"] == (32, 32)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (5, 3), (3, 0)])
def test_fusion_shapes(residual, n, k):
    fusion = randomise(KeywordSegFusion(vision_dim=32, text_dim=24, hidden_dim=16, residual=residual))
    out = fusion(torch.randn(n, 32), torch.randn(k, 24))
    assert out.shape == (n, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert fusion(torch.randn(0, 32), torch.randn(k, 24)).shape == (0, 32)


@pytest.mark.parametrize("n,k", [(1, 1), (3, 2), (5, 3), (13, 1)])
def test_fusion_is_the_release_operation_sequence_in_float32(n, k):
    fusion = randomise(KeywordSegFusion(vision_dim=32, text_dim=24, hidden_dim=16))
    seg, keys = torch.randn(n, 32), torch.randn(k, 24)
    with torch.no_grad():
        torch.testing.assert_close(fusion(seg, keys), expected_fusion(fusion, seg, keys), rtol=0, atol=0)


@pytest.mark.parametrize("n,k", [(2, 1), (5, 3)])
def test_fusion_in_bfloat16_casts_where_the_release_casts(n, k):
    fusion = randomise(KeywordSegFusion(vision_dim=32, text_dim=32, hidden_dim=16)).to(torch.bfloat16)
    seg, keys = torch.randn(n, 32).to(torch.bfloat16), torch.randn(k, 32).to(torch.bfloat16)
    with torch.no_grad():
        got = fusion(seg, keys)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, expected_fusion(fusion, seg, keys), rtol=0, atol=0)
        # float32 inputs are taken in the parameters' dtype, as the release's inputs already are
        torch.testing.assert_close(fusion(seg.float(), keys.float()), got, rtol=0, atol=0)


def test_a_group_without_keyword_gets_the_release_output_not_its_seg_embeddings():
    fusion = randomise(KeywordSegFusion(vision_dim=32, hidden_dim=16))
    seg = torch.randn(3, 32)
    with torch.no_grad():
        out = fusion(seg, torch.zeros(0, 32))
        # Empty softmax -> zero context -> out_proj's bias in every slot -> identical rows.
        slots = fusion.out_proj.bias.expand(12, 32)
        expected = interpolate(fusion.self_attn(slots), 3)
    torch.testing.assert_close(out, expected)
    assert torch.allclose(out, out[:1].expand(3, 32)) and not torch.allclose(out, seg)
    with torch.no_grad():
        assert torch.equal(fusion(torch.randn(3, 32), torch.zeros(0, 32)), out)  # independent of [SEG]


def test_self_attention_clamps_its_input():
    attention = randomise(KeywordSegFusion(vision_dim=8)).self_attn
    tokens = torch.randn(4, 8)
    tokens[0, 0], tokens[2, 3] = 5e5, -3e6
    with torch.no_grad():
        torch.testing.assert_close(attention(tokens), attention(tokens.clamp(-1e4, 1e4)), rtol=0, atol=0)


@pytest.mark.parametrize("residual", [False, True])
def test_fusion_depends_on_the_keyword(residual):
    fusion = randomise(KeywordSegFusion(vision_dim=32, residual=residual))
    seg = torch.randn(3, 32)
    with torch.no_grad():
        assert not torch.allclose(fusion(seg, torch.randn(1, 32)), fusion(seg, torch.randn(1, 32)))


def test_release_fusion_with_one_keyword_ignores_the_seg_embeddings():
    # A property of the release's forward (no residual path): the softmax over a single key
    # is 1, so every slot becomes out_proj(value_proj(key)).
    fusion = randomise(KeywordSegFusion(vision_dim=32, residual=False))
    key = torch.randn(1, 32)
    with torch.no_grad():
        torch.testing.assert_close(fusion(torch.randn(2, 32), key), fusion(torch.randn(2, 32), key))
        residual = randomise(KeywordSegFusion(vision_dim=32, residual=True))
        assert not torch.allclose(residual(torch.randn(2, 32), key), residual(torch.randn(2, 32), key))


def test_residual_variant_uses_norms_and_the_mlp():
    fusion = randomise(KeywordSegFusion(vision_dim=16, hidden_dim=8, residual=True))
    seg, keys = torch.randn(3, 16), torch.randn(2, 16)
    with torch.no_grad():
        slots = interpolate(seg, 12)
        x = fusion.norm1(slots + fusion.cross_attention(slots, keys))
        x = fusion.norm2(x + fusion.self_attn(x))
        x = x + fusion.mlp(x)
        torch.testing.assert_close(fusion(seg, keys), interpolate(x, 3), rtol=0, atol=0)


# ----------------------------------------------------------------------------- losses


def test_bce_is_mean_over_pixels_per_mask():
    logits, targets = torch.randn(2, 5, 7), torch.randint(0, 2, (2, 5, 7)).float()
    expected = torch.stack([F.binary_cross_entropy_with_logits(logits[i], targets[i]) for i in range(2)])
    torch.testing.assert_close(sigmoid_bce_loss(logits, targets), expected)


def test_dice_matches_the_reference_formula():
    logits, targets = torch.randn(3, 6, 6), torch.randint(0, 2, (3, 6, 6)).float()
    probs = logits.sigmoid().flatten(1)
    flat = targets.flatten(1)
    numerator = 2 * (probs / 1000 * flat).sum(1)
    denominator = (probs / 1000).sum(1) + (flat / 1000).sum(1)
    torch.testing.assert_close(dice_loss(logits, targets), 1 - (numerator + 1e-6) / (denominator + 1e-6))
    perfect = dice_loss(torch.where(targets > 0, 50.0, -50.0), targets)
    assert (perfect < 1e-3).all()


def test_mask_targets_are_the_mask_values_with_ignore_as_background():
    # refCOCO: the sum of an annotation's polygon masks, 2 where two overlap (the release
    # trains on masks.float()); ReasonSeg: 1 and 255 (ignore), whose targets are mask == 1.
    mask = torch.tensor([[[0, 1, 2], [255, 1, 0]]], dtype=torch.uint8)
    targets, valid = mask_targets(mask)
    assert targets.dtype == torch.float32 and valid is None
    assert targets.tolist() == [[[0.0, 1.0, 2.0], [0.0, 1.0, 0.0]]]
    reasonseg = torch.tensor([[1, 255, 0]], dtype=torch.uint8)
    assert torch.equal(mask_targets(reasonseg)[0], (reasonseg == 1).float())
    _, valid = mask_targets(mask, ignore_255=True)
    assert valid.tolist() == [[[True, True, True], [False, True, True]]]


def test_mask_losses_with_overlap_targets_equal_the_reference_formulas():
    mask = torch.tensor([[[0, 1, 2, 2], [255, 1, 0, 1]]], dtype=torch.uint8)
    logits = torch.randn(1, 2, 4)
    targets = torch.tensor([[[0.0, 1.0, 2.0, 2.0], [0.0, 1.0, 0.0, 1.0]]])
    bce, dice = mask_losses([logits], [mask])
    torch.testing.assert_close(bce, F.binary_cross_entropy_with_logits(logits, targets))
    probs = logits.sigmoid().flatten(1)
    expected_dice = 1 - (2 * (probs / 1000 * targets.flatten(1)).sum(-1) + 1e-6) / (
        (probs / 1000).sum(-1) + (targets.flatten(1) / 1000).sum(-1) + 1e-6)
    torch.testing.assert_close(dice, expected_dice[0])


def test_ignore_pixels_are_background_by_default_and_excluded_on_request():
    mask = torch.tensor([[[1, 0], [255, 255]]], dtype=torch.uint8)
    logits = torch.tensor([[[2.0, -1.0], [3.0, -3.0]]])
    bce, dice = mask_losses([logits], [mask])
    background = mask.clone()
    background[mask == 255] = 0
    bce_bg, dice_bg = mask_losses([logits], [background])
    torch.testing.assert_close((bce, dice), (bce_bg, dice_bg))

    # Excluded: the logits at ignore pixels no longer matter, and BCE averages the 2 others.
    bce_ignore, dice_ignore = mask_losses([logits], [mask], ignore_255=True)
    changed = logits.clone()
    changed[0, 1] = torch.tensor([-9.0, 9.0])
    torch.testing.assert_close(mask_losses([changed], [mask], ignore_255=True), (bce_ignore, dice_ignore))
    expected_bce = F.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(bce_ignore, expected_bce)


def test_mask_losses_average_over_every_mask_of_the_batch():
    logits = [torch.randn(2, 4, 4), torch.randn(1, 3, 5)]
    masks = [torch.randint(0, 2, (2, 4, 4), dtype=torch.uint8), torch.randint(0, 2, (1, 3, 5), dtype=torch.uint8)]
    bce, dice = mask_losses(logits, masks)
    per_mask = torch.cat([sigmoid_bce_loss(l, m.float()) for l, m in zip(logits, masks)])
    torch.testing.assert_close(bce, per_mask.mean())
    assert dice.dtype == torch.float32
    with pytest.raises(ValueError):
        mask_losses([torch.randn(1, 4, 4)], [torch.zeros(1, 4, 5, dtype=torch.uint8)])


def test_keyword_loss_is_cross_entropy_of_cosine_logits():
    torch.manual_seed(0)
    keys, table = torch.randn(3, 8), torch.randn(10, 8)
    targets = torch.tensor([4, -100, 7])
    logits = F.normalize(keys, dim=-1) @ F.normalize(table, dim=-1).t() / 0.07
    expected = F.cross_entropy(logits[[0, 2]], targets[[0, 2]])
    torch.testing.assert_close(keyword_alignment_loss(keys, table, targets, 0.07), expected)


def test_keyword_loss_ignores_the_pad_id_as_the_release_does():
    torch.manual_seed(1)
    keys, table = torch.randn(4, 8), torch.randn(10, 8)
    targets = torch.tensor([0, 5, -100, 3])  # 0: LLaMA's pad (unk) id, the release's ignore_index
    logits = F.normalize(keys, dim=-1) @ F.normalize(table, dim=-1).t() / 0.07
    expected = F.cross_entropy(logits, torch.tensor([0, 5, 0, 3]), ignore_index=0)
    torch.testing.assert_close(keyword_alignment_loss(keys, table, targets, ignore_id=0), expected)
    # without an ignore id the pad id is an ordinary target
    assert not torch.allclose(keyword_alignment_loss(keys, table, targets), expected)


def test_keyword_loss_is_zero_without_targets_and_small_when_aligned():
    # The release's mean over no target is NaN; keyseg returns 0 (a documented deviation).
    table = torch.eye(6)
    assert keyword_alignment_loss(torch.randn(2, 6), table, torch.tensor([-100, -100])).item() == 0.0
    assert keyword_alignment_loss(torch.randn(2, 6), table, torch.tensor([0, -100]), ignore_id=0).item() == 0.0
    aligned = keyword_alignment_loss(table[[1, 3]] * 5, table, torch.tensor([1, 3]))
    misaligned = keyword_alignment_loss(table[[1, 3]] * 5, table, torch.tensor([2, 4]))
    assert aligned.item() < 1e-3 < misaligned.item()
