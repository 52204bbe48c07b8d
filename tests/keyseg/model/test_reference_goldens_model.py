"""keyseg's fusion and losses against golden values written by the reference code itself.

tests/golden/reference/ (see its README) holds the outputs of the release's
KeywordSegFusionModule (ha-erim/KeySeg model/KISA.py:68-130, text_dim = vision_dim = 32,
hidden_dim = 16, the whole module in bfloat16 as DeepSpeed bf16 runs it), of its
dice_loss / sigmoid_ce_loss combined per batch (KISA.py:218-261, 534-544) and of its
keyword loss (KISA.py:506-528). The fusion is compared exactly: keyseg runs the same
operations on the same bfloat16 weights in the same order, so every output bit must match.
Losses are float32 and compared to 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from keyseg.model import KeywordSegFusion, keyword_alignment_loss, mask_losses
from keyseg.model.losses import dice_loss, sigmoid_bce_loss

GOLDEN = Path(__file__).parents[2] / "golden" / "reference"
KEYSEG_COMMIT = "8dbcc310801746f0a5c770966468053a3d3ca56f"
FUSION = json.loads((GOLDEN / "fusion.json").read_text())
LOSSES = json.loads((GOLDEN / "losses.json").read_text())


def tensor(values, dtype=torch.float32, columns: int | None = None) -> torch.Tensor:
    """A golden list as a tensor; an empty list with `columns` becomes (0, columns)."""
    if columns is not None and len(values) == 0:
        return torch.zeros(0, columns, dtype=dtype)
    return torch.tensor(values, dtype=dtype)


def test_goldens_record_the_reference_commit():
    for document in (FUSION, LOSSES):
        assert document["reference"]["ha-erim/KeySeg"] == KEYSEG_COMMIT


@pytest.fixture(scope="module")
def release_fusion() -> KeywordSegFusion:
    """keyseg's fusion holding the reference module's bfloat16 weights, loaded strictly."""
    fusion = KeywordSegFusion(vision_dim=FUSION["vision_dim"], slots=FUSION["upsample_size"],
                              text_dim=FUSION["text_dim"], hidden_dim=FUSION["hidden_dim"]).to(torch.bfloat16)
    state = load_file(str(GOLDEN / FUSION["weights_file"]))
    assert sorted(state) == sorted(FUSION["state_dict_keys"]) == sorted(fusion.state_dict())
    fusion.load_state_dict(state, strict=True)  # every key and shape, the 2x MLP included
    return fusion.eval()


@pytest.mark.parametrize("case", FUSION["cases"], ids=[case["name"] for case in FUSION["cases"]])
def test_fusion_matches_the_release_bit_for_bit(release_fusion, case):
    dim = FUSION["vision_dim"]
    for index, (keys, seg, expected) in enumerate(zip(case["key_embeddings"], case["seg_embeddings"],
                                                      case["outputs"], strict=True)):
        keys = tensor(keys, torch.bfloat16, FUSION["text_dim"])
        seg = tensor(seg, torch.bfloat16, dim)
        with torch.no_grad():
            got = release_fusion(seg, keys)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, tensor(expected, torch.bfloat16), rtol=0, atol=0,
                                   msg=f"{case['name']} image {index} ({len(keys)} [KEY], {len(seg)} [SEG])")


def test_the_goldens_cover_no_keyword_and_the_clamp():
    groups = [(len(keys), max_abs) for case in FUSION["cases"]
              for keys, max_abs in zip(case["key_embeddings"], case["self_attn_input_max_abs"])]
    assert any(k == 0 for k, _ in groups)  # a group without [KEY]: the release's own output
    assert any(max_abs > 1e4 for _, max_abs in groups)  # the self-attention's input is clamped
    assert "same dtype" in FUSION["float32_forward_error"]  # why keyseg casts to the parameters' dtype


MASK_CASES = LOSSES["mask_losses"]["cases"]


@pytest.mark.parametrize("case", MASK_CASES, ids=[case["name"] for case in MASK_CASES])
def test_mask_losses_match_the_release(case):
    logits = [tensor(p) for p in case["pred_masks"]]
    masks = [tensor(g).to(torch.uint8) for g in case["gt_masks"]]  # keyseg's masks are uint8
    for lg, mask, per_image in zip(logits, masks, case["per_image"], strict=True):
        target = mask.float()
        assert sigmoid_bce_loss(lg, target).mean().item() == pytest.approx(per_image["sigmoid_ce_loss"], abs=1e-5)
        assert dice_loss(lg, target).mean().item() == pytest.approx(per_image["dice_loss"], abs=1e-5)
    bce, dice = mask_losses(logits, masks)
    weights = LOSSES["mask_losses"]
    assert bce.item() == pytest.approx(case["mask_bce_loss"], abs=1e-5)
    assert dice.item() == pytest.approx(case["mask_dice_loss"], abs=1e-5)
    combined = weights["bce_loss_weight"] * bce + weights["dice_loss_weight"] * dice
    assert combined.item() == pytest.approx(case["mask_loss"], abs=1e-5)


KEYWORD = LOSSES["keyword_loss"]


@pytest.mark.parametrize("case", KEYWORD["cases"], ids=[case["name"] for case in KEYWORD["cases"]])
def test_keyword_loss_matches_the_release(case):
    keys = torch.cat([tensor(k) for k in case["key_embeddings"]])
    projected_table = tensor(case["embedding_table"]) @ tensor(case["proj_weight"]).T + tensor(case["proj_bias"])
    assert [ids[0] if ids else KEYWORD["pad_token_id"] for ids in case["input_keywords_ids_list"]] \
        == case["target_ids"]
    # keyseg's targets: the first id, -100 for no keyword; the pad id is ignored as in the release
    targets = torch.tensor([ids[0] if ids else -100 for ids in case["input_keywords_ids_list"]])
    loss = keyword_alignment_loss(keys, projected_table, targets, KEYWORD["temperature"],
                                  ignore_id=KEYWORD["pad_token_id"])
    release_targets = torch.tensor(case["target_ids"])  # the release's pad id for "no keyword" too
    same = keyword_alignment_loss(keys, projected_table, release_targets, KEYWORD["temperature"],
                                  ignore_id=KEYWORD["pad_token_id"])
    assert torch.equal(loss, same)
    if case["keyword_loss_is_nan"]:
        # Deliberate deviation (keyword_alignment_loss): nothing to align gives 0, not NaN.
        assert case["keyword_loss"] is None and loss.item() == 0.0
    else:
        assert (KEYWORD["key_loss_weight"] * loss).item() == pytest.approx(case["keyword_loss"], abs=1e-5)
