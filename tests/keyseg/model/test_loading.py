"""Checkpoint loading: LISA/KeySeg files, original SAM, LLaVA-HF, separate parts; loud failures.

Checkpoints are produced from a tiny random model by the REVERSE maps of
tests/helpers/lisa_checkpoints.py (our keys -> published layouts), written independently of
the forward maps in keyseg.model.keymaps; a handful of real segment-anything key names anchor
the SAM reverse map.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex

import pytest
import torch
from safetensors.torch import save_file

from keyseg.model.config import KeySegConfig
from keyseg.model.keyseg import KeySegModel
from keyseg.model.loading import (CheckpointError, LoadReport, from_lisa, from_parts, map_lisa_keys,
                                  map_original_sam_keys, read_state_dict)
from lisa_checkpoints import (KEYSEG_PREFIXES, build, original_sam_state, plain, release_checkpoint, save_sharded,
                              to_lisa)

VOCAB = 128  # the default vocabulary of lisa_checkpoints.build


# ----------------------------------------------------------------------------- builders


def mask_decoder_out(sam, image_embeddings, prompts):
    """LISA's SAM call: sparse = the prompts, dense = no-mask embedding."""
    _, channels, height, width = image_embeddings.shape
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, channels, 1, 1).expand(1, channels, height, width)
    masks, iou = sam.mask_decoder(image_embeddings=image_embeddings,
                                  image_positional_embeddings=sam.get_image_wide_positional_embeddings(),
                                  sparse_prompt_embeddings=prompts.view(1, len(prompts), 1, channels),
                                  dense_prompt_embeddings=dense, multimask_output=False)
    return masks, iou


@torch.no_grad()
def outputs(model) -> dict:
    g = torch.Generator().manual_seed(123)
    prompts = torch.randn(2, 256, generator=g)
    return {
        "projector": model.mm_projector(torch.randn(3, 32, generator=g)),
        "text_fcs": model.text_hidden_fcs[0](torch.randn(3, 64, generator=g)),
        "masks": mask_decoder_out(model.sam, torch.randn(1, 256, 8, 8, generator=g), prompts)[0],
        "sam_encoder": model.sam.vision_encoder(torch.randn(1, 3, 128, 128, generator=g)).last_hidden_state,
        "logits": model.llm(input_ids=torch.randint(0, 100, (1, 7), generator=g)).logits,
        "clip": model.vision_tower(torch.randn(1, 3, 56, 56, generator=g)).last_hidden_state,
        "fusion": model.keyword_fusion(prompts, torch.randn(1, 256, generator=g)),
    }


def assert_same_params(a, b, prefix=""):
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if k.startswith(prefix)]
    assert keys and set(keys) == {k for k in sb if k.startswith(prefix)}
    different = [k for k in keys if not torch.equal(sa[k], sb[k])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def source():
    return build(1)


# ----------------------------------------------------------------------------- LISA / KeySeg files


@pytest.mark.parametrize("kind", ["safetensors", "sharded", "bin"])
def test_from_lisa_roundtrip(tmp_path, source, kind):
    state = to_lisa(source, keyseg_under_model=(kind == "bin"))
    if kind == "safetensors":
        path = tmp_path / "keyseg.safetensors"
        save_file(state, str(path))
    elif kind == "sharded":
        path = save_sharded(state, tmp_path / "keyseg")
    else:
        path = tmp_path / "pytorch_model.bin"
        torch.save(state, path)
    target = build(2)
    before = outputs(target)
    report = from_lisa(path, target)
    assert isinstance(report, LoadReport)
    assert report.ok and not report.missing and not report.unexpected and not report.shape_mismatches
    assert report.dropped == ["model.layers.0.self_attn.rotary_emb.inv_freq"]
    assert_same_params(source, target)
    expected, got = outputs(source), outputs(target)
    for name in expected:
        assert not torch.equal(before[name], expected[name]), name  # the load changed something
        assert torch.equal(got[name], expected[name]), name
    assert "loaded" in report.format()


def test_plain_lisa_file_initialises_keyseg_modules_fresh(tmp_path, source):
    path = tmp_path / "lisa.safetensors"
    save_file(to_lisa(source, keyseg=False), str(path))
    target = build(2)
    fusion_before = plain(target.keyword_fusion.state_dict())
    report = from_lisa(path, target)
    assert {k.split(".")[0] for k in report.missing} == {"keyword_fusion", "embedding_table_proj",
                                                         "keyword_text_proj"}
    assert "initialised fresh" in report.format() and "keyword_fusion.*" in report.format()
    assert all(torch.equal(v, target.keyword_fusion.state_dict()[k]) for k, v in fusion_before.items())
    assert_same_params(source, target, "llm.")
    assert_same_params(source, target, "sam.")


def test_partial_keyseg_module_fails(tmp_path, source):
    state = to_lisa(source)
    del state["keyword_fusion.self_attn.q_proj.weight"]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"keyword_fusion\.self_attn\.q_proj\.weight"):
        from_lisa(path, build(2))


def test_vision_tower_absent_needs_vision_argument(tmp_path, source):
    path = tmp_path / "lisa.safetensors"
    save_file(to_lisa(source, vision=False), str(path))
    with pytest.raises(CheckpointError, match="vision="):
        from_lisa(path, build(2))

    target = build(2)
    report = from_lisa(path, target, require_vision=False)
    assert report.missing and all(k.startswith("vision_tower.") for k in report.missing)
    assert_same_params(source, target, "sam.")

    clip_folder = tmp_path / "clip"
    source.vision_tower.save_pretrained(clip_folder)
    target = build(3)
    report = from_lisa(path, target, vision=clip_folder)
    assert not report.missing
    assert_same_params(source, target)


def test_missing_required_key_fails_loudly_and_writes_nothing(tmp_path, source):
    state = to_lisa(source)
    del state["model.text_hidden_fcs.0.2.bias"]
    path = tmp_path / "missing.safetensors"
    save_file(state, str(path))
    target = build(2)
    before = plain(target.state_dict())
    with pytest.raises(CheckpointError, match=r"text_hidden_fcs\.0\.2\.bias") as info:
        from_lisa(path, target)
    assert "1 required weights missing" in str(info.value)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # atomic: nothing written


def test_unexpected_key_fails_loudly(tmp_path, source):
    state = to_lisa(source)
    state["model.mystery_head.weight"] = torch.zeros(3)
    path = tmp_path / "unexpected.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"model\.mystery_head\.weight"):
        from_lisa(path, build(2))


def test_shape_mismatch_fails_loudly(tmp_path, source):
    state = to_lisa(source)
    state["model.mm_projector.weight"] = torch.zeros(64, 31)
    path = tmp_path / "shape.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"model\.mm_projector\.weight.*\(64, 31\).*\(64, 32\)"):
        from_lisa(path, build(2))


def test_vocab_growth_copies_known_rows_and_keeps_the_new_rows(tmp_path):
    small = build(1, vocab=VOCAB - 1)  # LISA: 32004 rows; the model adds [KEY]
    path = tmp_path / "lisa.safetensors"
    save_file(to_lisa(small), str(path))
    target = build(2, vocab=VOCAB)
    fresh_rows = {name: target.state_dict()[name][-1].clone()
                  for name in ("llm.model.embed_tokens.weight", "llm.lm_head.weight")}
    report = from_lisa(path, target)
    assert len(report.resized) == 2 and any("embed_tokens" in r for r in report.resized)
    assert all(f"{VOCAB - 1} rows, model {VOCAB}" in r and "kept the model's values" in r for r in report.resized)
    for name in ("llm.model.embed_tokens.weight", "llm.lm_head.weight"):
        old, new = small.state_dict()[name], target.state_dict()[name]
        assert new.shape[0] == VOCAB and torch.equal(new[:-1], old)
        # the [KEY] row keeps the values setup_tokenizer gave it (transformers 4.31's
        # resize), not the mean of the checkpoint rows
        assert torch.equal(new[-1], fresh_rows[name])
    # a bigger checkpoint vocab than the model's is an error, never a truncation
    with pytest.raises(CheckpointError, match="embed_tokens"):
        from_lisa(path, build(3, vocab=VOCAB - 2))


def test_peft_prefix_stripped_and_unmerged_lora_refused(tmp_path, source):
    state = {"base_model.model." + k: v for k, v in to_lisa(source).items()}
    path = tmp_path / "merged.safetensors"
    save_file(state, str(path))
    target = build(2)
    from_lisa(path, target)
    assert_same_params(source, target)

    state["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(4, 64)
    with pytest.raises(CheckpointError, match="merge"):
        map_lisa_keys(state)


def test_loads_into_lora_wrapped_model(tmp_path, source):
    from keyseg.model.params import apply_lora

    path = tmp_path / "keyseg.safetensors"
    save_file(to_lisa(source), str(path))
    target = build(2)
    apply_lora(target, KeySegConfig.tiny(vocab_size=VOCAB, lora_r=4))
    report = from_lisa(path, target)
    assert report.missing and all(".lora_" in k for k in report.missing)  # adapters stay fresh
    q = target.llm.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(q, source.llm.model.layers[0].self_attn.q_proj.weight)


# ----------------------------------------------------------------------------- reading


class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil.bin"
    torch.save({"w": torch.zeros(2), "payload": Evil(marker)}, zipped)
    raw = tmp_path / "evil.pth"
    raw.write_bytes(pickle.dumps(Evil(marker)))
    for path in (zipped, raw):
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            read_state_dict(path)
    assert not marker.exists()


def test_read_state_dict_variants(tmp_path):
    state = {"a": torch.arange(3.0), "b": torch.ones(2, 2)}
    torch.save({"state_dict": state, "step": torch.tensor(3)}, tmp_path / "wrapped.pt")
    assert set(read_state_dict(tmp_path / "wrapped.pt")) == {"a", "b"}
    single = tmp_path / "single"
    single.mkdir()
    save_file(state, str(single / "weights.safetensors"))
    assert torch.equal(read_state_dict(single)["b"], state["b"])

    sharded = save_sharded(state, tmp_path / "sharded", shards=2)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    index["weight_map"]["c"] = "model-00001-of-00002.safetensors"
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="in none of its shards"):
        read_state_dict(sharded)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nothing")


# ----------------------------------------------------------------------------- original SAM

REAL_SAM_KEYS = [  # names from segment-anything's sam_vit_h_4b8939.pth
    "image_encoder.pos_embed", "image_encoder.patch_embed.proj.weight", "image_encoder.blocks.0.norm1.weight",
    "image_encoder.blocks.1.attn.rel_pos_h", "image_encoder.blocks.1.mlp.lin2.bias", "image_encoder.neck.0.weight",
    "image_encoder.neck.3.bias", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "prompt_encoder.point_embeddings.3.weight", "prompt_encoder.not_a_point_embed.weight",
    "prompt_encoder.mask_downscaling.6.bias", "prompt_encoder.no_mask_embed.weight", "mask_decoder.iou_token.weight",
    "mask_decoder.mask_tokens.weight", "mask_decoder.transformer.layers.1.norm4.bias",
    "mask_decoder.transformer.layers.0.cross_attn_token_to_image.out_proj.weight",
    "mask_decoder.transformer.norm_final_attn.weight", "mask_decoder.output_upscaling.1.weight",
    "mask_decoder.output_upscaling.3.bias", "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight",
    "mask_decoder.iou_prediction_head.layers.1.bias", "pixel_mean", "pixel_std",
]


def test_original_sam_pth_loads_strictly(tmp_path, source):
    original = original_sam_state(source.sam)
    assert set(REAL_SAM_KEYS) <= set(original)
    assert len(original) == len(source.sam.state_dict()) + 1  # -1 shared copy, +2 pixel stats
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(original, path)

    mapped = map_original_sam_keys(read_state_dict(path))
    assert len(mapped) == len(source.sam.state_dict())
    fresh_sam = build(2).sam
    fresh_sam.load_state_dict(mapped, strict=True)
    assert_same_params(source.sam, fresh_sam)

    target = build(3)
    report = from_parts(target, sam=path)
    assert sorted(report.dropped) == ["pixel_mean", "pixel_std"] and not report.missing
    g = torch.Generator().manual_seed(0)
    embeddings, prompts = torch.randn(1, 256, 8, 8, generator=g), torch.randn(3, 256, generator=g)
    with torch.no_grad():
        expected = mask_decoder_out(source.sam, embeddings, prompts)
        for got in (mask_decoder_out(fresh_sam, embeddings, prompts), mask_decoder_out(target.sam, embeddings,
                                                                                        prompts)):
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


# ----------------------------------------------------------------------------- from_parts


def test_from_parts_llm_vision_sam_folders(tmp_path, source):
    source.llm.save_pretrained(tmp_path / "llm")
    source.sam.save_pretrained(tmp_path / "sam")  # save_pretrained keeps one of SAM's tied keys
    # a full CLIPModel state dict: the vision half is taken, the rest dropped
    clip = {"vision_model." + k: v for k, v in plain(source.vision_tower.state_dict()).items()}
    clip.update({"text_model.embeddings.token_embedding.weight": torch.zeros(10, 16),
                 "visual_projection.weight": torch.zeros(8, 32), "text_projection.weight": torch.zeros(8, 16),
                 "logit_scale": torch.tensor(2.0), "vision_model.embeddings.position_ids": torch.arange(17)[None]})
    save_file(clip, str(tmp_path / "clip.safetensors"))

    target = build(2)
    untouched = plain(target.text_hidden_fcs.state_dict())
    report = from_parts(target, llm=tmp_path / "llm", vision=tmp_path / "clip.safetensors", sam=tmp_path / "sam")
    assert not report.missing
    assert "logit_scale" in report.dropped and "vision_model.embeddings.position_ids" in report.dropped
    for prefix in ("llm.", "vision_tower.", "sam."):
        assert_same_params(source, target, prefix)
    assert all(torch.equal(v, target.text_hidden_fcs.state_dict()[k]) for k, v in untouched.items())

    incomplete = plain(source.llm.state_dict())
    del incomplete["model.norm.weight"]
    save_file(incomplete, str(tmp_path / "llm_incomplete.safetensors"))
    with pytest.raises(CheckpointError, match=r"llm\.model\.norm\.weight"):
        from_parts(build(3), llm=tmp_path / "llm_incomplete.safetensors")


def tiny_llava(seed: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    tiny = KeySegConfig.tiny(vocab_size=VOCAB)
    text = {k: v for k, v in tiny.llm.items() if k != "model_type"}
    config = LlavaConfig(vision_config=CLIPVisionConfig(**tiny.vision).to_dict(),
                         text_config=LlamaConfig(**text).to_dict(), image_token_index=VOCAB - 1)
    llava = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for parameter in llava.parameters():
            parameter.normal_(0.0, 0.1)
    return llava


@pytest.mark.parametrize("layout", ["current", "legacy_folder"])
def test_from_parts_llava(tmp_path, layout):
    llava = tiny_llava(5)
    if layout == "current":  # LlavaForConditionalGeneration.state_dict() names
        path = tmp_path / "llava.safetensors"
        save_file(plain(llava.state_dict()), str(path))
    else:  # save_pretrained writes the legacy llava-hf names (language_model.model.*, ...)
        path = tmp_path / "llava"
        llava.save_pretrained(path)
    target = build(2, projector="mlp2x_gelu")
    report = from_parts(target, llava=path)
    assert not report.missing and not report.unexpected

    got, want = target.state_dict(), llava.state_dict()
    pairs = {"mm_projector.0.weight": "model.multi_modal_projector.linear_1.weight",
             "mm_projector.2.bias": "model.multi_modal_projector.linear_2.bias",
             "llm.lm_head.weight": "lm_head.weight",
             "llm.model.layers.1.mlp.down_proj.weight": "model.language_model.layers.1.mlp.down_proj.weight",
             "vision_tower.encoder.layers.2.self_attn.q_proj.weight":
                 "model.vision_tower.encoder.layers.2.self_attn.q_proj.weight"}
    for ours, theirs in pairs.items():
        assert torch.equal(got[ours], want[theirs]), ours
    loaded = {k for k in got if k.startswith(("vision_tower.", "mm_projector.", "llm."))}
    assert len(loaded) == len(want)
    x = torch.randn(4, 32)
    with torch.no_grad():
        assert torch.equal(target.mm_projector(x), llava.model.multi_modal_projector(x))
        ids = torch.randint(0, 100, (1, 6))
        ours = target.llm(input_ids=ids).logits
        theirs = llava.lm_head(llava.model.language_model(input_ids=ids).last_hidden_state)
        assert torch.allclose(ours, theirs, atol=1e-6)

    with pytest.raises(CheckpointError, match="mm_projector"):  # a linear projector cannot take it
        from_parts(build(3), llava=path)


# ----------------------------------------------------------------------------- published layouts

# The release's KeywordSegFusionModule (ha-erim/KeySeg model/KISA.py:68-88) with
# text_dim = vision_dim = fusion_dim = 256 and hidden_dim = 256: every tensor and its shape.
RELEASE_FUSION_SHAPES = {
    **{f"{name}.{part}": shape for name in ("query_proj", "key_proj", "value_proj", "out_proj")
       for part, shape in (("weight", (256, 256)), ("bias", (256,)))},
    **{f"self_attn.{name}.{part}": shape for name in ("q_proj", "k_proj", "v_proj", "out_proj")
       for part, shape in (("weight", (256, 256)), ("bias", (256,)))},
    "norm1.weight": (256,), "norm1.bias": (256,), "norm2.weight": (256,), "norm2.bias": (256,),
    "mlp.0.weight": (512, 256), "mlp.0.bias": (512,), "mlp.2.weight": (256, 512), "mlp.2.bias": (256,),
}


def check_release_layout(state: dict, model, keyseg: bool = True) -> None:
    """The key names and shapes the reference modules define, for the parts keyseg adds to LLaMA/SAM."""
    hidden, vocab = model.config.llm["hidden_size"], model.config.llm["vocab_size"]
    top_level = {k for k in state if not k.startswith("model.")}
    expected_top = {"lm_head.weight"}
    if keyseg:
        expected_top |= {f"keyword_fusion.{k}" for k in RELEASE_FUSION_SHAPES}
        expected_top |= {f"{m}.{p}" for m in ("keyword_text_proj", "embedding_table_proj") for p in ("weight", "bias")}
    assert top_level == expected_top
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["lm_head.weight"] == shapes["model.embed_tokens.weight"] == (vocab, hidden)
    assert shapes["model.text_hidden_fcs.0.0.weight"] == (hidden, hidden)
    assert shapes["model.text_hidden_fcs.0.2.weight"] == (256, hidden)
    assert shapes["model.mm_projector.weight"] == (hidden, model.config.vision["hidden_size"])
    assert not any(k.startswith("model.vision_tower.") or k.endswith(("pixel_mean", "pixel_std")) for k in state)
    if keyseg:
        assert {k[len("keyword_fusion."):]: shapes[k] for k in shapes if k.startswith("keyword_fusion.")} \
            == RELEASE_FUSION_SHAPES
        assert shapes["embedding_table_proj.weight"] == shapes["keyword_text_proj.weight"] == (256, hidden)


@pytest.mark.parametrize("files", ["bin_shards", "safetensors_shards"])
@pytest.mark.parametrize("keyseg", [True, False], ids=["keyseg_release", "lisa_7b_v1"])
def test_published_layouts_load_strictly(tmp_path, source, keyseg, files):
    state = release_checkpoint(source, keyseg=keyseg)
    check_release_layout(state, source, keyseg=keyseg)
    path = save_sharded(state, tmp_path / "release", shards=2, bin_files=files == "bin_shards")
    clip = tmp_path / "clip"
    source.vision_tower.save_pretrained(clip)
    target = build(2)
    report = from_lisa(path, target, vision=clip)
    assert not report.unexpected and not report.shape_mismatches and not report.missing_required
    assert sorted(report.dropped) == sorted(k for k in state if k.endswith("inv_freq"))
    if keyseg:
        assert not report.missing
        assert_same_params(source, target)
    else:  # LISA-7B-v1 has no KeySeg module: those start fresh, everything else is loaded
        assert {k.split(".")[0] for k in report.missing} == set(p[:-1] for p in KEYSEG_PREFIXES)
        for prefix in ("llm.", "sam.", "vision_tower.", "mm_projector.", "text_hidden_fcs."):
            assert_same_params(source, target, prefix)


def test_the_old_4x_fusion_mlp_does_not_load(tmp_path, source):
    state = release_checkpoint(source)
    state["keyword_fusion.mlp.0.weight"] = torch.zeros(1024, 256)
    state["keyword_fusion.mlp.0.bias"] = torch.zeros(1024)
    state["keyword_fusion.mlp.2.weight"] = torch.zeros(256, 1024)
    path = tmp_path / "old.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="3 shape mismatches"):
        from_lisa(path, build(2), require_vision=False)


def test_release_start_replaces_sam_and_keeps_text_hidden_fcs_fresh(tmp_path, source):
    # ha-erim/KeySeg finetune.py:250-251: after LISA-7B-v1 is loaded, SAM is rebuilt from
    # sam_vit_h_4b8939.pth and text_hidden_fcs is made anew.
    lisa = tmp_path / "lisa.safetensors"
    save_file(release_checkpoint(source, keyseg=False), str(lisa))
    sam_source = build(7)
    sam_path = tmp_path / "sam_vit_tiny.pth"
    torch.save(original_sam_state(sam_source.sam), sam_path)
    target = build(2)
    fcs_before = plain(target.text_hidden_fcs.state_dict())
    report = from_lisa(lisa, target, require_vision=False, sam=sam_path, fresh=["text_hidden_fcs"])
    assert_same_params(sam_source, target, "sam.")
    assert all(torch.equal(v, target.text_hidden_fcs.state_dict()[k]) for k, v in fcs_before.items())
    assert_same_params(source, target, "llm.")
    assert_same_params(source, target, "mm_projector.")
    assert any("sam= replaces" in note for note in report.notes)
    assert any("text_hidden_fcs.*" in note for note in report.notes)
    with pytest.raises(CheckpointError, match="no module"):
        from_lisa(lisa, build(3), require_vision=False, fresh=["text_fcs"])


def test_release_lora_also_adapts_the_fusion_self_attention_and_merges(tmp_path, source):
    from keyseg.model.params import apply_lora, apply_trainability, merge_lora

    config = KeySegConfig.tiny(vocab_size=VOCAB, lora_r=4, lora_fusion=True, train_fusion=False,
                               train_embedding_table_proj=False)
    target = build(2, lora_r=4, lora_fusion=True, train_fusion=False, train_embedding_table_proj=False)
    apply_trainability(target, config)
    apply_lora(target, config)
    trainable = {n for n, p in target.keyword_fusion.named_parameters() if p.requires_grad}
    assert trainable == {f"self_attn.{m}.lora_{ab}.default.weight" for m in ("q_proj", "v_proj") for ab in "AB"}
    assert not any(p.requires_grad for p in target.embedding_table_proj.parameters())
    assert not any(p.requires_grad for p in target.keyword_text_proj.parameters())

    path = tmp_path / "keyseg.safetensors"
    save_file(release_checkpoint(source), str(path))
    report = from_lisa(path, target, require_vision=False)
    assert report.missing and all(".lora_" in k or k.startswith("vision_tower.") for k in report.missing)
    assert torch.equal(target.keyword_fusion.self_attn.q_proj.base_layer.weight,
                       source.keyword_fusion.self_attn.q_proj.weight)

    with torch.no_grad():  # as if trained: adapters that change the output
        for name, parameter in target.keyword_fusion.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    seg, keys = torch.randn(3, 256), torch.randn(2, 256)
    target.eval()  # no LoRA dropout
    with torch.no_grad():
        adapted = target.keyword_fusion(seg, keys)
        merge_lora(target)
        merged = target.keyword_fusion(seg, keys)
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)
    assert target.config.lora_r == 0
    assert set(target.keyword_fusion.state_dict()) == set(source.keyword_fusion.state_dict())


def test_new_token_rows_are_drawn_as_transformers_4_31_resizes():
    from keyseg.model.tokenizer import word_level_tokenizer

    tokenizer = word_level_tokenizer(["a chat between a curious human and an assistant"] * 2)
    base = len(tokenizer)
    torch.manual_seed(0)
    model = KeySegModel(KeySegConfig.tiny(vocab_size=base))
    before = {name: model.state_dict()[name].clone() for name in ("llm.model.embed_tokens.weight",
                                                                  "llm.lm_head.weight")}
    model.setup_tokenizer(tokenizer)
    added = len(tokenizer) - base
    assert added >= 2
    std = model.llm.config.initializer_range
    for name, old in before.items():
        weight = model.state_dict()[name]
        assert weight.shape[0] == base + added and torch.equal(weight[:base], old)
        new = weight[base:]
        # N(0, initializer_range): not the mean row of transformers 5, not copies of each other
        assert 0.5 * std < new.std().item() < 1.5 * std and abs(new.mean().item()) < std
        assert not torch.allclose(new[0], new[1]) and not torch.allclose(new[0], old.mean(0), atol=std / 4)


def test_new_module_init_normal_is_transformers_init_weights():
    from keyseg.model.tokenizer import word_level_tokenizer

    tokenizer = word_level_tokenizer(["a few words"])
    torch.manual_seed(0)
    model = KeySegModel.from_config(KeySegConfig.tiny(vocab_size=len(tokenizer), new_module_init="normal"), tokenizer)
    std = model.llm.config.initializer_range
    for module in (model.keyword_fusion, model.embedding_table_proj, model.keyword_text_proj):
        for layer in (m for m in module.modules() if isinstance(m, torch.nn.Linear)):
            assert torch.count_nonzero(layer.bias) == 0
            assert 0.8 * std < layer.weight.std().item() < 1.2 * std
    assert torch.equal(model.keyword_fusion.norm1.weight, torch.ones(256))
