"""keyseg's VQA (LLaVA-Instruct) conversations and token ids against the reference's own.

tests/golden/reference/vqa.json was written by make_goldens.py running LISA's HybridDataset
(dataset "vqa", i.e. utils/vqa_dataset.py VQADataset) and utils/dataset.py collate_fn on a
tiny llava_instruct json with transformers 4.31 (the release's copies of both files give the
same output; the script checks it). keyseg rebuilds every conversation from the raw records
and tokenises it: strings, ids, labels and attention masks must be identical, and keyseg's
reader must refuse every record the reference stops on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from keyseg.data import conversation as conv
from keyseg.model.tokens import ReferenceTokenizer, add_special_tokens
from keyseg.sources.llava import LLAVA_IMAGE_DIR, llava_file, read_llava_instruct

GOLDEN = Path(__file__).parent / "reference"
DATA = json.loads((GOLDEN / "vqa.json").read_text(encoding="utf-8"))
TEXT_LIMIT = DATA["model_max_length"] - 255  # the reference's truncation length
CASES = DATA["cases"]
RECORDS = DATA["records"]
# Records the reference collates but keyseg's reader refuses, with the reason code: the
# model reads exactly one image per conversation (docs/sources_vqa.md).
REFUSED_BY_KEYSEG_ONLY = {"no-image-token": "no_image_token", "image-in-two-turns": "image_token_in_several_turns"}


@pytest.fixture(scope="module")
def tokens():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(GOLDEN / "tiny_llama"), local_files_only=True)
    add_special_tokens(tokenizer)
    return ReferenceTokenizer(tokenizer)


def test_golden_covers_the_awkward_cases():
    names = {case["name"] for case in CASES}
    assert {"image-last", "image-middle-and-spaces", "image-twice-in-one-turn", "leading-gpt-turn-dropped",
            "image-in-third-turn", "image-in-gpt-turn", "empty-gpt-turn-inside", "long-answer"} <= names
    assert {entry["stage"] for entry in DATA["rejected"]} == {"dataset", "collate"}
    assert any(len(case["items"]) > 1 for case in CASES)
    assert any(len(ids) == TEXT_LIMIT for case in CASES for ids in case["input_ids"])  # truncated


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_conversation_text_matches_the_reference(case):
    for item, expected, final in zip(case["items"], [i["dataset_conversations"] for i in case["items"]],
                                     case["conversations"]):
        turns = item["record"]["conversations"]
        assert [conv.vqa_prompt(conv.vqa_turns(turns))] == expected
        assert conv.vqa_conversation(turns) == final
        assert conv.vqa_conversation(conv.vqa_turns(turns)) == final  # cleaning twice changes nothing
    assert len(case["conversations"]) == len(case["items"])  # one conversation per record
    assert case["offset"] == list(range(len(case["items"]) + 1))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_tokens_labels_and_masks_match_the_reference(tokens, case):
    built = [conv.vqa_conversation(item["record"]["conversations"]) for item in case["items"]]
    out = tokens.tokenize_conversations(built, TEXT_LIMIT)
    assert out["input_ids"].tolist() == case["input_ids"]
    assert out["labels"].tolist() == case["labels"]
    assert out["attention_mask"].bool().tolist() == case["attention_masks"]
    assert case["seg_positions"] == [[] for _ in built] and case["key_positions"] == [[] for _ in built]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_every_item_has_no_masks(case):
    for item in case["items"]:
        assert item["masks_shape"][0] == 0 and item["label_values"] == [255.0]
        assert item["questions_are_conversations"] and not item["inference"]


def test_only_assistant_answers_are_supervised(tokens):
    """Each supervised stretch decodes to an assistant answer followed by </s>."""
    case = next(case for case in CASES if case["name"] == "unicode-and-digits")
    labels = torch.tensor(case["labels"][0])
    supervised = labels != -100
    stretches, current = [], []
    for position, keep in enumerate(supervised.tolist()):
        if keep:
            current.append(int(labels[position]))
        elif current:
            stretches.append(current)
            current = []
    if current:
        stretches.append(current)
    answers = [turn["value"] for turn in case["items"][0]["record"]["conversations"] if turn["from"] == "gpt"]
    assert [tokens.decode(ids) for ids in stretches] == [answer + "</s>" for answer in answers]


def test_long_conversation_is_longer_than_model_max_length(tokens):
    """The reference checks its label arithmetic only below model_max_length; keyseg's
    arithmetic agrees there and above (the untruncated conversation is longer)."""
    case = next(case for case in CASES if case["name"] == "long-answer")
    text = conv.vqa_conversation(case["items"][0]["record"]["conversations"])
    assert len(tokens.encode_with_image(text)) > DATA["model_max_length"]
    assert tokens.tokenize_conversations([text], None)["labels"][0, :TEXT_LIMIT].tolist() == case["labels"][0]


@pytest.mark.parametrize("entry", DATA["rejected"], ids=lambda entry: entry["name"])
def test_keyseg_refuses_what_the_reference_stops_on(entry):
    """Where the conversation is at fault keyseg's builder refuses it too; the reader (next
    test) refuses the others for their image."""
    record = RECORDS[entry["index"]]["record"]
    turns = record.get("conversations")
    if "image" in record and not RECORDS[entry["index"]]["image_missing"]:
        assert conv.vqa_turn_problem(turns) is not None
        with pytest.raises(ValueError):
            conv.vqa_conversation(turns)
    else:
        assert conv.vqa_turn_problem(turns) is None


def test_reader_keeps_exactly_the_usable_records(tmp_path):
    """The golden's raw file, with its images, through keyseg's reader."""
    path = llava_file(tmp_path, "llava_instruct_tiny")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([entry["record"] for entry in RECORDS]), encoding="utf-8")
    images = tmp_path / LLAVA_IMAGE_DIR
    images.mkdir(parents=True)
    for entry in RECORDS:
        if "image" in entry["record"] and not entry["image_missing"]:
            (images / entry["record"]["image"]).write_bytes(b"\xff\xd8\xff\xd9")
    records, issues = read_llava_instruct(tmp_path, "llava_instruct_tiny")

    collated = {case["name"]: case for case in CASES if len(case["items"]) == 1}
    kept = [entry["name"] for entry in RECORDS
            if entry["name"] in collated and entry["name"] not in REFUSED_BY_KEYSEG_ONLY]
    names = [entry["name"] for entry in RECORDS]
    assert [names[record.index] for record in records] == kept
    for record in records:
        name = names[record.index]
        assert record.image == f"coco/train2017/{RECORDS[record.index]['record']['image']}"
        assert conv.vqa_conversation(record.conversations) == collated[name]["conversations"][0]
        assert [conv.vqa_prompt(record.conversations)] == collated[name]["items"][0]["dataset_conversations"]
    refused = {entry["name"] for entry in DATA["rejected"]} | set(REFUSED_BY_KEYSEG_ONLY)
    assert len(issues) == len(refused)
    by_record = {int(re.match(r"record (\d+)", issue.reason).group(1)): issue for issue in issues}
    assert {names[index] for index in by_record} == refused
    for name, code in REFUSED_BY_KEYSEG_ONLY.items():
        assert by_record[names.index(name)].code == code
