"""KeywordSegFusion, token resampling, mask losses and the keyword alignment loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from keyseg.model import KeywordSegFusion, dice_loss, keyword_alignment_loss, mask_losses, resample_tokens, \
    sigmoid_bce_loss


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


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (5, 3)])
def test_fusion_shapes(residual, n, k):
    torch.manual_seed(0)
    fusion = KeywordSegFusion(dim=32, slots=12, residual=residual)
    out = fusion(torch.randn(n, 32), torch.randn(k, 32))
    assert out.shape == (n, 32)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("residual", [False, True])
def test_fusion_depends_on_the_keyword(residual):
    torch.manual_seed(0)
    fusion = KeywordSegFusion(dim=32, residual=residual)
    seg = torch.randn(3, 32)
    first = fusion(seg, torch.randn(1, 32))
    second = fusion(seg, torch.randn(1, 32))
    assert not torch.allclose(first, second)


def test_release_fusion_with_one_keyword_ignores_the_seg_embeddings():
    # A documented property of the release's forward (no residual path): the softmax over a
    # single key is 1, so every slot becomes out_proj(value_proj(key)).
    torch.manual_seed(0)
    fusion = KeywordSegFusion(dim=32, residual=False)
    key = torch.randn(1, 32)
    torch.testing.assert_close(fusion(torch.randn(2, 32), key), fusion(torch.randn(2, 32), key))
    residual = KeywordSegFusion(dim=32, residual=True)
    assert not torch.allclose(residual(torch.randn(2, 32), key), residual(torch.randn(2, 32), key))


def test_fusion_release_path_matches_a_manual_computation():
    torch.manual_seed(0)
    fusion = KeywordSegFusion(dim=16, slots=12)
    seg, keys = torch.randn(3, 16), torch.randn(2, 16)
    slots = F.interpolate(seg.t()[None], size=12, mode="linear", align_corners=False)[0].t()
    q, k, v = fusion.query_proj(slots), fusion.key_proj(keys), fusion.value_proj(keys)
    cross = fusion.out_proj(torch.softmax(q @ k.t() / 16 ** 0.5, dim=-1) @ v)
    attn = fusion.self_attn
    q, k, v = attn.q_proj(cross), attn.k_proj(cross), attn.v_proj(cross)
    fused = attn.out_proj(torch.softmax(q @ k.t() / 16 ** 0.5, dim=-1) @ v)
    expected = F.interpolate(fused.t()[None], size=3, mode="linear", align_corners=False)[0].t()
    torch.testing.assert_close(fusion(seg, keys), expected)


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


def test_keyword_loss_is_zero_without_targets_and_small_when_aligned():
    table = torch.eye(6)
    assert keyword_alignment_loss(torch.randn(2, 6), table, torch.tensor([-100, -100])).item() == 0.0
    aligned = keyword_alignment_loss(table[[1, 3]] * 5, table, torch.tensor([1, 3]))
    misaligned = keyword_alignment_loss(table[[1, 3]] * 5, table, torch.tensor([2, 4]))
    assert aligned.item() < 1e-3 < misaligned.item()
