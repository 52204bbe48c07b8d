"""keyseg's conversations and token ids against golden values made by the reference code.

tests/golden/reference/conversations.json was written by make_goldens.py running the KeySeg
release's and LISA's own dataset classes and collate functions with transformers 4.31 (see
that folder's README). Here keyseg rebuilds every conversation from the same inputs and
choices, and tokenises it: strings, ids, labels, attention masks, the positions the [SEG]
and [KEY] states are read from, and the keyword targets must be identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from keyseg.data import conversation as conv
from keyseg.model.tokens import ReferenceTokenizer, add_special_tokens

GOLDEN = Path(__file__).parent / "reference"
DATA = json.loads((GOLDEN / "conversations.json").read_text())
TEXT_LIMIT = DATA["token_ids"]["model_max_length"] - 255  # the reference's truncation length
STATE_OFFSET = 256 - 2  # CLIP ViT-L/14: 256 patches replace one placeholder; the state before the token


@pytest.fixture(scope="module")
def tokens():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(GOLDEN / "tiny_llama"), local_files_only=True)
    add_special_tokens(tokenizer)
    return ReferenceTokenizer(tokenizer)


def test_added_tokens_get_the_release_ids(tokens):
    ids = DATA["token_ids"]
    tokenizer = tokens.tokenizer
    assert len(tokenizer) == ids["len_tokenizer"]  # one new token: [KEY] (vocabulary 32005 at LISA-7B-v1's size)
    for token in ("[SEG]", "[KEY]", "<im_start>", "<im_end>"):
        assert tokenizer.convert_tokens_to_ids(token) == ids[token], token
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (ids["pad"], ids["bos"], ids["eos"])
    assert "<image>" not in tokenizer.get_vocab()


@pytest.mark.parametrize("case", DATA["direct"]["tokenizer_call"], ids=lambda case: repr(case["text"])[:40])
def test_plain_encoding_matches_the_slow_tokenizer(tokens, case):
    assert tokens.encode(case["text"]) == case["input_ids"]
    assert tokens.encode(case["text"], add_bos=False) == case["input_ids_no_special"]


@pytest.mark.parametrize("case", DATA["direct"]["tokenizer_image_token"], ids=lambda case: repr(case["text"])[:40])
def test_image_prompts_match_tokenizer_image_token(tokens, case):
    assert tokens.encode_with_image(case["text"]) == case["input_ids"]


class ScriptedRandom:
    """Returns the template the reference drew, per list, in the order it drew them."""

    def __init__(self, templates: list[dict]):
        self.queues = {"question": [t["question_index"] for t in templates if t.get("question_template_used", True)],
                       "explanatory": [t["explanatory_index"] for t in templates if "explanatory_index" in t],
                       "answer": [t["answer_index"] for t in templates if "answer_index" in t]}

    def choice(self, options):
        kind = {conv.SHORT_QUESTIONS: "question", conv.LONG_QUESTIONS: "question",
                conv.EXPLANATORY_QUESTIONS: "explanatory", conv.ANSWERS: "answer"}[tuple(options)]
        return options[self.queues[kind].pop(0)]


def keyseg_conversations(case: dict) -> list[str]:
    """keyseg's conversation strings for the inputs and choices the reference recorded."""
    protocol, built = case["protocol"], []
    for item in case["items"]:
        if protocol == "keyseg-train-reasonseg":
            rng = ScriptedRandom(item["templates"])
            config = conv.ConversationConfig()
            built += [conv.reasonseg_train_query(text, item["is_sentence"], keyword, item["in_explanations"],
                                                 item["choice"], config, rng).conversation
                      for text, keyword in zip(item["sampled_sents"], item["keywords"])]
        elif protocol == "keyseg-train-refer":
            rng = ScriptedRandom(item["templates"])
            built += [conv.refer_train_query(text, True, rng).conversation for text in item["sampled_sents"]]
        elif protocol == "keyseg-eval-reasonseg":
            built.append(conv.eval_query(item["sampled_sents"][0], item["is_sentence"], conv.ConversationConfig()).conversation)
        elif protocol == "keyseg-eval-refer-release":
            built += [conv.eval_query(text, False, conv.ConversationConfig(), bare=True).conversation
                      for text in item["sampled_sents"]]
        elif protocol in ("lisa-eval-refer", "lisa-eval-refer-keyseg-collate"):
            config = conv.ConversationConfig(use_keyword=protocol.endswith("keyseg-collate"))
            built += [conv.eval_query(text, False, config).conversation for text in item["sampled_sents"]]
        else:
            raise AssertionError(f"unknown protocol {protocol}")
    return built


CASES = DATA["cases"]


def test_every_protocol_is_covered():
    assert {case["protocol"] for case in CASES} == {"keyseg-train-reasonseg", "keyseg-train-refer",
                                                    "keyseg-eval-reasonseg", "keyseg-eval-refer-release",
                                                    "lisa-eval-refer", "lisa-eval-refer-keyseg-collate"}
    assert {item["choice"] for case in CASES if case["protocol"] == "keyseg-train-reasonseg"
            for item in case["items"]} == {0, 1, 2}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_conversations_are_the_reference_strings(case):
    assert keyseg_conversations(case) == case["conversations"]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_ids_labels_and_state_positions_are_the_references(tokens, case):
    encoded = tokens.tokenize_conversations(case["conversations"], TEXT_LIMIT)
    assert encoded["input_ids"].tolist() == case["input_ids"]
    assert encoded["labels"].tolist() == case["labels"]
    assert encoded["attention_mask"].bool().tolist() == case["attention_masks"]
    for row, ids in enumerate(encoded["input_ids"]):
        seg = (ids == tokens.tokenizer.convert_tokens_to_ids("[SEG]")).nonzero()[:, 0] + STATE_OFFSET
        key = (ids == tokens.tokenizer.convert_tokens_to_ids("[KEY]")).nonzero()[:, 0] + STATE_OFFSET
        assert seg.tolist() == case["seg_positions"][row] and key.tolist() == case["key_positions"][row]


@pytest.mark.parametrize("case", [c for c in CASES if c["protocol"].startswith("keyseg-train")],
                         ids=lambda case: case["name"])
def test_keyword_targets_are_the_references(tokens, case):
    keywords = [keyword for item in case["items"] for keyword in item["keywords"]]
    targets = tokens.keyword_target_ids(keywords).tolist()
    pad = tokens.pad_id
    for keyword, ours, reference in zip(keywords, targets, case["input_keywords_ids_list"], strict=True):
        expected = reference[0] if reference else pad
        # A row without a keyword has no [KEY]: keyseg marks it -100, the reference pad; both are ignored.
        assert ours == (expected if keyword is not None else -100)


def test_a_conversation_that_breaks_the_reference_rule_is_refused(tokens):
    with pytest.raises(ValueError, match="ASSISTANT"):
        tokens.tokenize_conversations(["no separator here</s>"], TEXT_LIMIT)
    assert torch.equal(tokens.keyword_target_ids([""]), torch.tensor([tokens.pad_id]))
