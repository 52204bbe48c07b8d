"""VQA (LLaVA-Instruct) samples: the shard format's `conversations`, the decoder's one
query per conversation, and a training batch mixing a VQA row with a ReasonSeg row.

LISA trains a VQA sample as one conversation with no [SEG] and no masks (utils/vqa_dataset.py,
utils/dataset.py collate_fn); its mask losses are sums over every mask of the batch divided
by their count (model/LISA.py), so a VQA row adds nothing to them and only the language
loss sees it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from loader_rank_worker import make_jpeg, make_sample
from tiny_keyseg import tiny_config

from keyseg.data.conversation import vqa_conversation
from keyseg.data.loader import collate
from keyseg.data.samples import CorruptSampleError, SampleConfig, SampleDecoder
from keyseg.model import KeySegModel
from keyseg.model.losses import mask_losses
from keyseg.model.tokens import IGNORE_INDEX, ReferenceTokenizer
from keyseg.shards.samples import (MAX_CONVERSATION_TURNS, MAX_TURN_CHARS, build_sample_json, check_sample_json,
                                   hf_features, sample_json_bytes)
from keyseg.training.batches import model_inputs, text_token_limit

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "reference"

TURNS = [
    {"from": "human", "value": "<image>\nWhat is the dog doing?"},
    {"from": "gpt", "value": "The dog is sitting next to the table."},
    {"from": "human", "value": "Where is the cup?"},
    {"from": "gpt", "value": "The cup is on the table."},
]
# The <image> in the second user turn: the reference moves it to the front of that turn.
LATE_IMAGE_TURNS = [
    {"from": "human", "value": "Describe the scene."},
    {"from": "gpt", "value": "A dog and a table."},
    {"from": "human", "value": "What is on the table? <image>"},
    {"from": "gpt", "value": "A cup."},
]


def vqa_json(turns=TURNS, key: str = "llava-000001", width: int = 80, height: int = 60) -> dict:
    record = {"id": key, "source": "llava_instruct_150k", "split": "train", "image": "coco/train2017/x.jpg",
              "width": width, "height": height, "targets": [], "conversations": turns}
    return build_sample_json(record, [], [])


def vqa_raw(turns=TURNS, key: str = "llava-000001", width: int = 80, height: int = 60) -> dict:
    return {"__key__": key, "jpg": make_jpeg(width, height, 3),
            "json": sample_json_bytes(vqa_json(turns, key, width, height))}


# ------------------------------------------------------------------ the shard format
def test_a_vqa_sample_has_conversations_and_no_targets_and_every_other_sample_null():
    sample = vqa_json()
    assert check_sample_json(sample) is None
    assert sample["targets"] == [] and sample["conversations"] == TURNS
    assert set(sample) == set(make_sample("refcoco", "val", 0)["json"])  # the same fields everywhere
    assert make_sample("reasonseg", "val", 0)["json"]["conversations"] is None


@pytest.mark.parametrize("conversations, reason", [
    ("hello", "conversations is 'hello' (str), expected null or a list"),
    ([], "conversations is [] (list), expected null or a list of 1 to"),
    ([{"from": "human"}], "conversations[0] is {'from': 'human'} (dict), expected an object with `from` and `value`"),
    ([{"from": "human", "value": "x", "extra": 1}], "conversations[0] is"),
    ([{"from": "system", "value": "x"}], "conversations[0].from is 'system' (str), expected 'human' or 'gpt'"),
    ([{"from": "human", "value": 5}], "conversations[0].value is 5 (int), expected a string of at most"),
    ([{"from": "human", "value": "x" * (MAX_TURN_CHARS + 1)}], "conversations[0].value is"),
    ([{"from": "human", "value": "x"}] * (MAX_CONVERSATION_TURNS + 1), "expected null or a list of 1 to"),
])
def test_check_sample_json_names_a_malformed_conversation(conversations, reason):
    sample = vqa_json()
    sample["conversations"] = conversations
    found = check_sample_json(sample)
    assert found is not None and found.startswith("bad json fields: ") and reason in found


def test_targets_and_conversations_go_one_without_the_other():
    both = make_sample("reasonseg", "val", 0)["json"]
    both["conversations"] = TURNS
    assert check_sample_json(both) == ("bad json fields: the sample has both targets and conversations, "
                                       "expected one of them")
    neither = vqa_json()
    neither["conversations"] = None
    assert check_sample_json(neither).startswith("bad json fields: targets is [] (list), expected a non-empty list")
    missing = vqa_json()
    del missing["conversations"]
    assert check_sample_json(missing) == "bad json fields: conversations is missing"


def test_hf_features_and_the_dataset_card_declare_conversations():
    from keyseg.shards.card import dataset_card

    turn = hf_features()["json"]["conversations"].feature
    assert set(turn) == {"from", "value"}
    assert set(vqa_json()) == set(hf_features()["json"])
    index = {"splits": {"llava_instruct_150k:train": {"source": "llava_instruct_150k", "split": "train",
                                                      "samples": 1, "shards": [{"path": "a/b/c.tar"}]}}}
    card = dataset_card(index)
    front = card.split("---\n")[1]
    assert "name: conversations" in front and "name: from" in front and "name: value" in front
    assert "`conversations`" in card


# ------------------------------------------------------------------ the decoder
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_vqa_sample_decodes_to_one_query_with_its_whole_conversation_and_no_masks(mode):
    decoder = SampleDecoder(SampleConfig(sam_size=128, clip_size=56, mode=mode))
    sample = decoder(vqa_raw(), random.Random(0))
    assert sample["conversations"] == [vqa_conversation(TURNS)]
    assert sample["conversations"][0].startswith(
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <im_start><image><im_end>\nWhat is the dog "
        "doing? ASSISTANT: The dog is sitting next to the table.</s>USER: Where is the cup? ASSISTANT:")
    assert sample["masks"].shape == (0, 60, 80) and sample["masks"].dtype == torch.uint8
    assert sample["keywords"] == [None] and sample["target_indices"] == [None]
    assert sample["questions"] == ["<image>\nWhat is the dog doing?"] and sample["texts"] == ["What is the dog doing?"]
    assert sample["original_size"] == (60, 80) and not sample["per_sentence"]
    assert sample["image_sam"].shape == (3, 128, 128) and sample["image_clip"].shape == (3, 56, 56)


@pytest.mark.parametrize("turns, reason", [
    ([{"from": "human", "value": "<image>\nSegment it."}, {"from": "gpt", "value": "It is [SEG]."}], "holds '[SEG]'"),
    ([{"from": "human", "value": "<image>\nKey?"}, {"from": "gpt", "value": "[KEY] dog"}], "holds '[KEY]'"),
    ([{"from": "human", "value": "<image>\nA <unk> word?"}, {"from": "gpt", "value": "Yes."}], "holds '<unk>'"),
    ([{"from": "human", "value": "What?"}, {"from": "gpt", "value": "No image."}], "0 turns of the prompt hold"),
    ([{"from": "human", "value": "<image> one"}, {"from": "gpt", "value": "<image> two"}], "2 turns of the prompt"),
    ([{"from": "human", "value": "<image> one"}, {"from": "human", "value": "two"}], "do not alternate"),
    ([{"from": "human", "value": "<image> question only"}], "does not split into one question"),
])
def test_the_decoder_refuses_conversations_the_reference_or_the_model_cannot_train(turns, reason):
    decoder = SampleDecoder(SampleConfig(sam_size=128, clip_size=56))
    with pytest.raises(CorruptSampleError, match="bad conversation: ") as error:
        decoder(vqa_raw(turns))
    assert reason in str(error.value)


# ------------------------------------------------------------------ a training batch
@pytest.fixture(scope="module")
def tiny():
    """The tiny model with the golden tests' small LLaMA tokenizer: the reference's label
    arithmetic counts one <s> per round, so multi-round conversations need a tokenizer
    that adds <s> as LLaMA's does."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(GOLDEN / "tiny_llama"), local_files_only=True)
    torch.manual_seed(0)
    return KeySegModel.from_config(tiny_config(tokenizer), tokenizer), tokenizer


def mixed_batch(model, vqa_turns=TURNS):
    """A collated batch: a VQA sample, then a ReasonSeg train sample (one query)."""
    config = SampleConfig(sam_size=model.config.sam_image_size, clip_size=model.config.clip_image_size,
                          num_queries=1)
    decoder = SampleDecoder(config)
    reason = make_sample("reasonseg", "train", 4)
    reason_raw = {"__key__": reason["key"], "jpg": reason["jpg"], "json": sample_json_bytes(reason["json"])}
    return collate([decoder(vqa_raw(vqa_turns), random.Random(1)), decoder(reason_raw, random.Random(2))])


@pytest.mark.parametrize("turns", [TURNS, LATE_IMAGE_TURNS], ids=["image-first", "image-in-a-later-turn"])
def test_a_vqa_row_trains_the_language_loss_only_next_to_a_reasonseg_row(tiny, turns):
    model, tokenizer = tiny
    batch = mixed_batch(model, turns)
    assert batch["offsets"].tolist() == [0, 1, 2] and [len(mask) for mask in batch["masks"]] == [0, 1]
    max_length = 512
    inputs = model_inputs(batch, tokenizer, model.config, max_length, "cpu", torch.float32)

    # The VQA row's labels are exactly those of its conversation tokenised alone.
    tokens = ReferenceTokenizer(tokenizer)
    limit = text_token_limit(model.config, max_length)
    alone = tokens.tokenize_conversations([vqa_conversation(turns)], limit)
    width = alone["labels"].shape[1]
    assert inputs["labels"][0, :width].tolist() == alone["labels"][0].tolist()
    assert (inputs["labels"][0, width:] == IGNORE_INDEX).all()
    assert inputs["input_ids"][0, :width].tolist() == alone["input_ids"][0].tolist()
    assert (alone["labels"][0] != IGNORE_INDEX).any()  # the answers are supervised
    assert inputs["keyword_ids"][0].item() == IGNORE_INDEX

    model.train()
    torch.manual_seed(0)
    outputs = model(**inputs)
    for name in ("loss", "ce", "bce", "dice", "key"):
        assert torch.isfinite(outputs[name]), name
    assert outputs["pred_masks"][0].shape == (0, 60, 80)
    # The mask losses are those of the ReasonSeg image alone: the VQA image adds no mask
    # and does not count in the average.
    bce, dice = mask_losses(outputs["pred_masks"][1:], inputs["masks"][1:], model.config.loss_ignore_255)
    assert outputs["bce"].item() == bce.item() and outputs["dice"].item() == dice.item()
    assert outputs["bce"] > 0
    outputs["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)


def test_a_batch_of_vqa_rows_only_has_zero_mask_losses(tiny):
    model, tokenizer = tiny
    decoder = SampleDecoder(SampleConfig(sam_size=model.config.sam_image_size,
                                         clip_size=model.config.clip_image_size))
    batch = collate([decoder(vqa_raw(TURNS, "a")), decoder(vqa_raw(LATE_IMAGE_TURNS, "b", 50, 70))])
    inputs = model_inputs(batch, tokenizer, model.config, 512, "cpu", torch.float32)
    outputs = model(**inputs)
    assert outputs["bce"].item() == 0.0 and outputs["dice"].item() == 0.0 and outputs["key"].item() == 0.0
    assert torch.isfinite(outputs["ce"]) and outputs["ce"] > 0
    assert outputs["loss"].item() == pytest.approx(model.config.ce_weight * outputs["ce"].item())


def test_rows_with_the_image_in_different_columns_are_spliced_row_by_row(tiny):
    """Each row's patch features replace its own <image>, as LLaVA splices row by row."""
    from keyseg.model.tokens import IMAGE_TOKEN_INDEX

    model, tokenizer = tiny
    batch = mixed_batch(model, LATE_IMAGE_TURNS)
    inputs = model_inputs(batch, tokenizer, model.config, 512, "cpu", torch.float32)
    input_ids = inputs["input_ids"]
    columns = [(row == IMAGE_TOKEN_INDEX).nonzero().item() for row in input_ids]
    assert columns[0] > columns[1]
    features = torch.randn(2, 16, model.llm.get_input_embeddings().embedding_dim)
    with torch.no_grad():
        spliced = model.splice_image_features(input_ids, inputs["attention_mask"], inputs["labels"], features)
        embeds = model.llm.get_input_embeddings()(input_ids.clamp(min=0))
    assert spliced.image_position is None and spliced.image_columns == columns
    for row, column in enumerate(columns):
        torch.testing.assert_close(spliced.inputs_embeds[row, column:column + 16], features[row])
        torch.testing.assert_close(spliced.inputs_embeds[row, :column], embeds[row, :column])
        torch.testing.assert_close(spliced.inputs_embeds[row, column + 16:], embeds[row, column + 1:])
        assert (spliced.labels[row, column:column + 16] == IGNORE_INDEX).all()
        assert spliced.labels[row, column + 16:].tolist() == inputs["labels"][row, column + 1:].tolist()
        assert spliced.attention_mask[row, column:column + 16].tolist() == [1] * 16
        assert spliced.token_ids[row, :column].tolist() == input_ids[row, :column].tolist()


def test_collate_keeps_the_vqa_row_out_of_the_mask_lists():
    decoder = SampleDecoder(SampleConfig(sam_size=128, clip_size=56))
    sample = decoder(vqa_raw())
    reason = make_sample("reasonseg", "val", 1)
    batch = collate([sample, decoder({"__key__": reason["key"], "jpg": reason["jpg"],
                                      "json": sample_json_bytes(reason["json"])})])
    assert batch["keywords"][0] is None and batch["sources"] == ["llava_instruct_150k", "reasonseg"]
    assert batch["masks"][0].shape[0] == 0 and np.array_equal(batch["masks"][1][0].numpy(), reason["masks"][0])
    assert json.loads(vqa_raw()["json"])["conversations"] == TURNS
