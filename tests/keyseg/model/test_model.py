"""KeySegModel on a tiny random config: shapes, splice, [SEG] gathering, gradients, LoRA, tokens."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_keyseg import build_tiny_model, make_batch, make_tiny_tokenizer

from keyseg.data.conversation import ConversationConfig, eval_query
from keyseg.model import (IGNORE_INDEX, IMAGE_TOKEN_INDEX, KeySegConfig, KeySegModel, ReferenceTokenizer,
                          add_special_tokens, apply_lora, parameter_table, print_parameter_table)
from keyseg.model.tokens import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def tiny():
    """A shared tiny model (the tiny recipe: SAM encoder trains, no LoRA). Tests must not modify it."""
    return build_tiny_model()


def capture_llm_inputs(model):
    """Record the keyword arguments of the LM's forward (a pre-hook)."""
    captured = {}
    handle = model.llm.register_forward_pre_hook(lambda module, args, kwargs: captured.update(kwargs),
                                                 with_kwargs=True)
    return captured, handle


def num_patches(model) -> int:
    return (model.config.clip_image_size // model.config.vision["patch_size"]) ** 2


# -------------------------------------------------------------------------------------------
# forward
# -------------------------------------------------------------------------------------------

def test_forward_shapes_and_losses(tiny):
    model, tokenizer = tiny
    batch = make_batch(model, tokenizer, image_sizes=((40, 60), (70, 50)), rows_per_image=(2, 1))
    out = model(**batch)

    assert [tuple(mask.shape) for mask in out["pred_masks"]] == [(2, 40, 60), (1, 70, 50)]
    assert all(mask.dtype == torch.float32 for mask in out["pred_masks"])
    assert out["seg_embeddings"].shape == (3, 256) and out["key_embeddings"].shape == (3, 256)
    assert out["seg_rows"].tolist() == [0, 1, 2] and out["key_rows"].tolist() == [0, 1, 2]
    assert [tuple(p.shape) for p in out["prompt_embeddings"]] == [(2, 256), (1, 256)]
    for name in ("loss", "ce", "bce", "dice", "key"):
        assert out[name].ndim == 0 and out[name].dtype == torch.float32 and torch.isfinite(out[name]), name
        assert out[name].item() > 0, name
    config = model.config
    expected = (config.ce_weight * out["ce"] + config.bce_weight * out["bce"] + config.dice_weight * out["dice"]
                + config.key_weight * out["key"])
    torch.testing.assert_close(out["loss"], expected)


def test_inference_needs_no_labels_or_masks(tiny):
    model, tokenizer = tiny
    conversation = eval_query("the dog", False, ConversationConfig()).conversation
    encoded = ReferenceTokenizer(tokenizer).tokenize_conversations([conversation] * 2, 128)
    batch = make_batch(model, tokenizer, image_sizes=((33, 90),), rows_per_image=(2,))
    with torch.no_grad():
        out = model(batch["images_sam"], batch["images_clip"], encoded["input_ids"], encoded["attention_mask"],
                    offsets=[0, 2], resize=batch["resize"], original_size=[(33, 90)], inference=True)
    assert "loss" not in out
    assert [tuple(mask.shape) for mask in out["pred_masks"]] == [(2, 33, 90)]


def test_mask_count_must_match_seg_tokens(tiny):
    model, tokenizer = tiny
    batch = make_batch(model, tokenizer, image_sizes=((40, 60), (70, 50)), rows_per_image=(2, 1))
    batch["masks"] = [batch["masks"][0][:1], batch["masks"][1]]
    with pytest.raises(ValueError, match=r"\[SEG\] tokens per image"):
        model(**batch)


def test_postprocess_crops_the_padding_before_resizing(tiny):
    model, _ = tiny
    size = model.config.sam_image_size  # 128; low-res masks are 32 x 32
    # An image of 40 x 80 is resized to 64 x 128: it fills the top half of the padded square.
    # Positive logits on the top half of the image = low-res rows 0..7.
    low_res = torch.full((1, 32, 32), -10.0)
    low_res[:, :8] = 10.0
    masks = model.postprocess_masks(low_res, resize=(64, 128), original_size=(40, 80))
    assert masks.shape == (1, 40, 80) and size == 128
    assert (masks[0, :18] > 0).all() and (masks[0, 22:] < 0).all()


def test_image_features_are_spliced_at_the_image_token(tiny):
    model, tokenizer = tiny
    batch = make_batch(model, tokenizer, image_sizes=((40, 60), (70, 50)), rows_per_image=(2, 1))
    captured, handle = capture_llm_inputs(model)
    try:
        with torch.no_grad():
            model(**batch, inference=True)
    finally:
        handle.remove()

    input_ids, patches = batch["input_ids"], num_patches(model)
    column = (input_ids[0] == IMAGE_TOKEN_INDEX).nonzero().item()
    with torch.no_grad():
        clip = model.vision_tower(batch["images_clip"], output_hidden_states=True).hidden_states[-2][:, 1:]
        features = model.mm_projector(clip)  # (B, P, h)
        token_embeds = model.llm.get_input_embeddings()(input_ids.clamp(min=0))
    embeds = captured["inputs_embeds"]
    assert embeds.shape[1] == input_ids.shape[1] - 1 + patches
    for row, image in enumerate([0, 0, 1]):
        torch.testing.assert_close(embeds[row, column:column + patches], features[image])
    torch.testing.assert_close(embeds[:, :column], token_embeds[:, :column])
    torch.testing.assert_close(embeds[:, column + patches:], token_embeds[:, column + 1:])
    attention = captured["attention_mask"]
    assert (attention[:, column:column + patches] == 1).all()
    torch.testing.assert_close(attention[:, column + patches:], batch["attention_mask"][:, column + 1:])

    spliced = model.splice_image_features(input_ids, batch["attention_mask"], batch["labels"], features[[0, 0, 1]])
    assert spliced.image_position == column
    assert (spliced.labels[:, column:column + patches] == IGNORE_INDEX).all()
    torch.testing.assert_close(spliced.labels[:, column + patches:], batch["labels"][:, column + 1:])
    torch.testing.assert_close(spliced.labels[:, :column], batch["labels"][:, :column])


def test_splice_rejects_rows_without_exactly_one_image_token(tiny):
    model, tokenizer = tiny
    batch = make_batch(model, tokenizer)
    input_ids = batch["input_ids"].clone()
    input_ids[0, input_ids[0] == IMAGE_TOKEN_INDEX] = tokenizer.unk_token_id
    with pytest.raises(ValueError, match="exactly one <image>"):
        model.splice_image_features(input_ids, batch["attention_mask"], None, torch.zeros(3, 16, 64))


def test_seg_and_key_embeddings_are_hidden_states_before_their_tokens(tiny):
    model, tokenizer = tiny
    batch = make_batch(model, tokenizer, image_sizes=((40, 60), (70, 50)), rows_per_image=(2, 1))
    captured, handle = capture_llm_inputs(model)
    try:
        with torch.no_grad():
            out = model(**batch, inference=True)
    finally:
        handle.remove()
    with torch.no_grad():
        hidden = model.llm(inputs_embeds=captured["inputs_embeds"], attention_mask=captured["attention_mask"],
                           output_hidden_states=True).hidden_states[-1]
        shift = num_patches(model) - 1  # positions after <image> move right by P - 1
        for name, token_id in (("seg_embeddings", model.config.seg_token_id),
                               ("key_embeddings", model.config.key_token_id)):
            expected = []
            for row in range(3):
                position = (batch["input_ids"][row] == token_id).nonzero().item() + shift
                expected.append(model.text_hidden_fcs[0](hidden[row, position - 1]))
            torch.testing.assert_close(out[name], torch.stack(expected))


def test_fusion_none_keeps_seg_embeddings_and_keyseg_changes_them():
    model, tokenizer = build_tiny_model(fusion="none")
    batch = make_batch(model, tokenizer)
    with torch.no_grad():
        out = model(**batch, inference=True)
        torch.testing.assert_close(torch.cat(out["prompt_embeddings"]), out["seg_embeddings"])
        model.config.fusion = "keyseg"
        fused = model(**batch, inference=True)
    assert not torch.allclose(torch.cat(fused["prompt_embeddings"]), fused["seg_embeddings"])


def test_images_without_a_keyword_get_the_release_output(tiny):
    # The release fuses an image with no [KEY] too: attention over no key gives a zero
    # context, so its prompts are what the fusion makes of that (docs/fidelity.md F4).
    model, tokenizer = tiny
    answers = ["Sure, it is [SEG]. [KEY] car", "[SEG].", "it is [SEG]."]
    batch = make_batch(model, tokenizer, rows_per_image=(2, 1), answers=answers)
    with torch.no_grad():
        out = model(**batch, inference=True)
        expected = model.keyword_fusion(out["seg_embeddings"][2:], out["key_embeddings"][:0])
    assert out["key_rows"].tolist() == [0]
    assert not torch.allclose(out["prompt_embeddings"][0], out["seg_embeddings"][:2])
    torch.testing.assert_close(out["prompt_embeddings"][1], expected)
    assert not torch.allclose(out["prompt_embeddings"][1], out["seg_embeddings"][2:])


def test_a_batch_mixing_rows_with_and_without_a_keyword_has_one_target_per_key(tiny):
    # One keyword target per [KEY]: a row without [KEY] has no target (the release's loss
    # would fail on the size mismatch here; docs/fidelity.md D11).
    model, tokenizer = tiny
    batch = make_batch(model, tokenizer, rows_per_image=(2, 1), keywords=["car", None, "cup"],
                       answers=["Sure, it is [SEG]. [KEY] car", "[SEG].", "it is [SEG]. [KEY] cup"])
    out = model(**batch)
    assert out["key_rows"].tolist() == [0, 2] and batch["keyword_ids"][1].item() == IGNORE_INDEX
    assert torch.isfinite(out["key"]) and out["key"].item() > 0


def test_keyseg_prompts_depend_on_the_keyword(tiny):
    model, tokenizer = tiny
    outputs = []
    # The [KEY] embedding is the state before [KEY]: vary the text between [SEG] and [KEY].
    for word in ("car", "dog"):
        batch = make_batch(model, tokenizer, rows_per_image=(1,), image_sizes=((40, 60),),
                           answers=[f"[SEG]. {word} [KEY]"])
        with torch.no_grad():
            outputs.append(model(**batch, inference=True))
    # Same [SEG] context, different [KEY] embedding -> different prompts.
    torch.testing.assert_close(outputs[0]["seg_embeddings"], outputs[1]["seg_embeddings"])
    assert not torch.allclose(outputs[0]["prompt_embeddings"][0], outputs[1]["prompt_embeddings"][0])


def test_in_inference_a_query_never_depends_on_its_batch_neighbours(tiny):
    # Three queries about one image: run together, each is fused with its own [KEY] only,
    # so its mask equals the mask it gets when asked alone.
    model, tokenizer = tiny
    answers = ["Sure, it is [SEG]. [KEY] car", "[SEG]. [KEY] dog", "it is [SEG]. [KEY] cup"]
    questions = ["What is the red car?", "Where can I sit?", "Which object holds water?"]
    batch = make_batch(model, tokenizer, image_sizes=((40, 60),), rows_per_image=(3,), answers=answers,
                       questions=questions)
    with torch.no_grad():
        together = model(**batch, inference=True)["pred_masks"][0]
        for row in range(3):
            alone_batch = dict(batch, offsets=torch.tensor([0, 1]), masks=[batch["masks"][0][row:row + 1]],
                               keyword_ids=batch["keyword_ids"][row:row + 1],
                               **{name: batch[name][row:row + 1] for name in ("input_ids", "attention_mask", "labels")})
            alone = model(**alone_batch, inference=True)["pred_masks"][0]
            torch.testing.assert_close(together[row:row + 1], alone, atol=1e-5, rtol=1e-5)
        # Training keeps the release's grouping: every [SEG] of an image meets all its [KEY]s.
        grouped = model(**batch, inference=True, fusion_by_row=False)["pred_masks"][0]
    assert not torch.allclose(grouped, together, atol=1e-4)


def test_residual_fusion_runs_end_to_end():
    model, tokenizer = build_tiny_model(fusion="keyseg_residual")
    out = model(**make_batch(model, tokenizer))
    assert [tuple(p.shape) for p in out["prompt_embeddings"]] == [(2, 256), (1, 256)]
    assert torch.isfinite(out["loss"])


# -------------------------------------------------------------------------------------------
# gradients and trainability
# -------------------------------------------------------------------------------------------

def has_grad(module) -> bool:
    return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())


@pytest.fixture(scope="module")
def reference_model():
    """The reference recipe on tiny parts: frozen SAM encoder, LoRA on the LM."""
    model, tokenizer = build_tiny_model(train_sam_encoder=False, lora_r=8)
    apply_lora(model)
    return model, tokenizer


def test_each_loss_reaches_the_modules_it_should(reference_model):
    model, tokenizer = reference_model
    batch = make_batch(model, tokenizer)
    llm = model.llm
    lora = [p for name, p in llm.named_parameters() if "lora_" in name]
    modules = {
        "lm_head": llm.get_output_embeddings(),
        "embed_tokens": llm.get_input_embeddings(),
        "mask_decoder": model.sam.mask_decoder,
        "text_hidden_fcs": model.text_hidden_fcs,
        "keyword_fusion": model.keyword_fusion,
        "embedding_table_proj": model.embedding_table_proj,
    }
    expected = {
        "ce": {"lm_head", "embed_tokens"},
        "key": {"embed_tokens", "text_hidden_fcs", "embedding_table_proj"},
        "bce": {"embed_tokens", "text_hidden_fcs", "keyword_fusion", "mask_decoder"},
        "dice": {"embed_tokens", "text_hidden_fcs", "keyword_fusion", "mask_decoder"},
    }
    for loss_name, reached in expected.items():
        model.zero_grad(set_to_none=True)
        model(**batch)[loss_name].backward()
        got = {name for name, module in modules.items() if has_grad(module)}
        assert got == reached, loss_name
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora), loss_name
    model.zero_grad(set_to_none=True)


def test_frozen_parts_get_no_gradient(reference_model):
    model, tokenizer = reference_model
    model.zero_grad(set_to_none=True)
    model(**make_batch(model, tokenizer))["loss"].backward()
    frozen = [model.vision_tower, model.mm_projector, model.sam.vision_encoder, model.sam.prompt_encoder,
              model.sam.shared_image_embedding]
    for module in frozen:
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    base_weights = [p for name, p in model.llm.named_parameters()
                    if "lora_" not in name and "embed_tokens" not in name and "lm_head" not in name]
    assert base_weights and all(not p.requires_grad and p.grad is None for p in base_weights)
    for module in (model.sam.mask_decoder, model.text_hidden_fcs, model.keyword_fusion, model.embedding_table_proj):
        assert all(p.requires_grad for p in module.parameters())
    model.zero_grad(set_to_none=True)


def test_lora_wraps_only_the_lm_attention_projections(reference_model):
    model, _ = reference_model
    wrapped = [name for name, module in model.named_modules() if hasattr(module, "lora_A")]
    assert len(wrapped) == 2 * 2  # 2 layers x (q_proj, v_proj)
    assert all(name.startswith("llm.") and name.rsplit(".", 1)[-1] in ("q_proj", "v_proj") for name in wrapped)
    # Modules with the same names elsewhere stay plain Linear layers.
    assert type(model.keyword_fusion.self_attn.q_proj) is torch.nn.Linear
    assert type(model.sam.mask_decoder.transformer.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert model.llm.get_output_embeddings().weight.requires_grad
    assert model.llm.get_input_embeddings().weight.requires_grad


def test_parameter_table_adds_up(reference_model, capsys):
    model, _ = reference_model
    rows = parameter_table(model)
    by_name = {name: (trainable, total) for name, trainable, total in rows}
    assert sum(total for _, _, total in rows) == sum(p.numel() for p in model.parameters())
    assert sum(trainable for _, trainable, _ in rows) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora_total = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    assert by_name["llm (LoRA)"] == (lora_total, lora_total)
    assert by_name["vision_tower"][0] == 0 and by_name["sam.vision_encoder"][0] == 0
    from rich.console import Console
    print_parameter_table(model, Console(width=120))
    assert "llm (LoRA)" in capsys.readouterr().out


def test_lower_precision_keeps_losses_in_float32():
    model, tokenizer = build_tiny_model(dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    out = model(**make_batch(model, tokenizer))
    for name in ("loss", "ce", "bce", "dice", "key"):
        assert out[name].dtype == torch.float32 and torch.isfinite(out[name]), name
    assert out["pred_masks"][0].dtype == torch.float32


def test_gradient_checkpointing_trains():
    model, tokenizer = build_tiny_model(gradient_checkpointing=True)
    model.train()
    model(**make_batch(model, tokenizer))["loss"].backward()
    assert model.llm.is_activation_checkpointing
    assert has_grad(model.llm.get_input_embeddings()) and has_grad(model.sam.vision_encoder)


# -------------------------------------------------------------------------------------------
# config and tokens
# -------------------------------------------------------------------------------------------

def test_config_round_trips_through_json(tiny):
    model, _ = tiny
    data = json.loads(json.dumps(model.config.to_dict()))
    assert KeySegConfig.from_dict(data) == model.config
    assert model.config.llm["vocab_size"] == model.llm.get_input_embeddings().num_embeddings
    with pytest.raises(ValueError, match="unknown"):
        KeySegConfig.from_dict({**data, "nope": 1})
    with pytest.raises(ValueError):
        KeySegConfig.tiny(fusion="bogus")


def test_from_config_does_not_modify_the_given_config():
    tokenizer = make_tiny_tokenizer()
    config = KeySegConfig.tiny(vocab_size=len(tokenizer))
    before = config.to_dict()
    model = KeySegModel.from_config(config, tokenizer)
    assert config.to_dict() == before and config.seg_token_id is None
    assert model.config.seg_token_id == tokenizer.convert_tokens_to_ids("[SEG]")
    assert model.config.llm["vocab_size"] == len(tokenizer) == before["llm"]["vocab_size"] + len(SPECIAL_TOKENS)


def test_labels_follow_the_reference_arithmetic():
    # The reference ignores position 0 and len(encode("... ASSISTANT: ")) - 2 instruction
    # tokens after it; the rest up to </s> is supervised. A word-level tokenizer (no <s>, no
    # token for the space after "ASSISTANT:") leaves the ":" supervised too, as the
    # reference's formula would with it; the golden tests pin the LLaMA case exactly.
    tokenizer = make_tiny_tokenizer()
    add_special_tokens(tokenizer)
    tokens = ReferenceTokenizer(tokenizer)
    conversations = ["A chat USER: <im_start><image><im_end>\nWhat is the red car? ASSISTANT: Sure, it is [SEG].[KEY] car</s>",
                     "A chat USER: <im_start><image><im_end>\nWhere can I sit? ASSISTANT: [SEG].</s>"]
    encoded = tokens.tokenize_conversations(conversations, 128)
    input_ids, labels, attention = encoded["input_ids"], encoded["labels"], encoded["attention_mask"]
    for row, answer in enumerate(["Sure, it is [SEG].[KEY] car</s>", "[SEG].</s>"]):
        supervised = labels[row][labels[row] != IGNORE_INDEX]
        assert supervised.tolist() == tokens.encode(": " + answer, add_bos=False)
        length = int(attention[row].sum())
        assert input_ids[row, length - 1].item() == tokenizer.eos_token_id
    assert attention[1, -1] == 0 and labels[1, -1] == IGNORE_INDEX  # the shorter row is padded on the right
    assert (input_ids == IMAGE_TOKEN_INDEX).sum(1).tolist() == [1, 1]
    assert "<image>" not in tokenizer.get_vocab()
    cut = tokens.tokenize_conversations(conversations, 10)
    assert cut["input_ids"].shape == (2, 10) and torch.equal(cut["input_ids"], input_ids[:, :10])


def test_keyword_target_ids_take_the_first_sub_token():
    tokenizer = make_tiny_tokenizer()
    add_special_tokens(tokenizer)
    ids = ReferenceTokenizer(tokenizer).keyword_target_ids(["car", None, "", "red car"])
    assert ids.tolist() == [tokenizer.convert_tokens_to_ids("car"), IGNORE_INDEX, tokenizer.pad_token_id,
                            tokenizer.convert_tokens_to_ids("red")]
    assert ids.dtype == torch.long


def test_state_dict_layout_matches_the_published_names(tiny):
    model, _ = tiny
    keys = set(model.state_dict())
    for key in ("mm_projector.weight", "text_hidden_fcs.0.0.weight", "text_hidden_fcs.0.2.bias",
                "keyword_fusion.query_proj.weight", "keyword_fusion.self_attn.out_proj.bias",
                "keyword_fusion.norm2.weight", "keyword_fusion.mlp.0.weight", "keyword_fusion.mlp.2.weight",
                "embedding_table_proj.weight", "keyword_text_proj.weight", "llm.lm_head.weight",
                "llm.model.embed_tokens.weight", "sam.mask_decoder.iou_token.weight",
                "sam.prompt_encoder.no_mask_embed.weight", "vision_tower.post_layernorm.weight"):
        assert key in keys, key
    assert model.keyword_fusion.mlp[0].out_features == 2 * 256  # the release: 256 -> 512 -> 256
    assert model.sam.mask_decoder.config.layer_norm_eps == 1e-5

    mlp_model, _ = build_tiny_model(projector="mlp2x_gelu")
    assert {"mm_projector.0.weight", "mm_projector.2.weight"} <= set(mlp_model.state_dict())
