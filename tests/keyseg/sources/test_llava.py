"""The LLaVA-Instruct-150k reader: safe parsing, one issue per unusable record, and the
reference's cleaning of each conversation (docs/sources_vqa.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from keyseg.data import conversation as conv
from keyseg.demo.llava import write_llava_instruct
from keyseg.sources.llava import LLAVA_IMAGE_DIR, MAX_TURNS, MAX_VALUE_CHARS, llava_file, read_llava_instruct

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "reference"
IMAGE = "000000000001.jpg"


def turn(speaker: str, value: str) -> dict:
    return {"from": speaker, "value": value}


def good(**changes) -> dict:
    record = {"id": "000000000001", "image": IMAGE,
              "conversations": [turn("human", "<image>\nWhat is this?"), turn("gpt", "A bus.")]}
    record.update(changes)
    return record


def write(root: Path, document, images=(IMAGE,)) -> Path:
    path = llava_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(document if isinstance(document, bytes) else json.dumps(document).encode("utf-8"))
    (root / LLAVA_IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    for name in images:
        (root / LLAVA_IMAGE_DIR / name).write_bytes(b"\xff\xd8\xff\xd9")
    return path


def only_issue(root: Path, record) -> tuple[str, str]:
    write(root, [good(), record])
    records, issues = read_llava_instruct(root)
    assert [r.index for r in records] == [0]
    assert len(issues) == 1 and issues[0].severity == "error"
    assert issues[0].reason.startswith("record 1")
    return issues[0].code, issues[0].reason


def test_a_good_record_is_returned_as_the_reference_uses_it(tmp_path):
    write(tmp_path, [good(conversations=[turn("gpt", "Hi!"), turn("human", "  What is this?\n<image> "),
                                         turn("gpt", "A bus. "), turn("human", "Colour?"), turn("gpt", "Red.")])])
    records, issues = read_llava_instruct(tmp_path)
    assert issues == []
    (record,) = records
    assert record.to_dict() == {"id": "000000000001", "image": "coco/train2017/000000000001.jpg", "conversations": [
        turn("human", "<image>\nWhat is this?"), turn("gpt", "A bus. "), turn("human", "Colour?"), turn("gpt", "Red.")]}
    assert conv.vqa_conversation(record.conversations) == (
        conv.SYSTEM_PROMPT + " USER: <im_start><image><im_end>\nWhat is this? ASSISTANT: A bus. </s>"
        "USER: Colour? ASSISTANT: Red.</s>")


def test_ids_are_kept_as_written_or_made_from_the_position(tmp_path):
    record_without_id = good()
    del record_without_id["id"]
    write(tmp_path, [good(id=42), record_without_id, good(id=None)])
    records, issues = read_llava_instruct(tmp_path)
    assert issues == [] and [r.id for r in records] == ["42", "#1", "#2"]


@pytest.mark.parametrize("value, cleaned", [
    ("<image>\nWhat?", "<image>\nWhat?"),
    ("What?\n<image>", "<image>\nWhat?"),
    ("  Look at <image> here.  ", "<image>\nLook at  here."),
    ("<image>", "<image>"),
    ("<image> <image>\n\n", "<image>"),
    ("A <image>B<image>C", "<image>\nA BC"),
    ("no image  ", "no image  "),  # turns without <image> are left as written
])
def test_image_token_is_moved_to_the_front_as_the_reference_does(value, cleaned):
    assert conv.vqa_message(value) == cleaned
    assert conv.vqa_message(cleaned) == cleaned


@pytest.mark.parametrize("record, code", [
    ("not a record", "bad_type"),
    ({"conversations": []}, "missing_key"),
    ({"image": IMAGE}, "missing_key"),
    (good(image=7), "bad_type"),
    (good(image=""), "bad_type"),
    (good(image="\ud800.jpg"), "bad_type"),
    (good(conversations={"from": "human"}), "bad_type"),
    (good(conversations=["hello"]), "bad_type"),
    (good(conversations=[{"from": "human"}]), "bad_type"),
    (good(conversations=[turn("human", 3), turn("gpt", "x")]), "bad_type"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "y\ud800")]), "bad_type"),
    (good(conversations=[turn("system", "<image>\nx"), turn("gpt", "y")]), "bad_role"),
    (good(conversations=[turn("human", "<image>\nx"), turn("assistant", "y")]), "bad_role"),
    (good(conversations=[]), "not_alternating"),
    (good(conversations=[turn("human", "<image>\nx"), turn("human", "y"), turn("gpt", "z")]), "not_alternating"),
    (good(conversations=[turn("gpt", "a"), turn("gpt", "<image>\nb")]), "not_alternating"),
    (good(conversations=[turn("gpt", "<image>\nalone")]), "not_alternating"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "y"), turn("human", "z")]), "bad_round"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "y"), turn("human", ""), turn("gpt", "w")]),
     "bad_round"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "")]), "bad_round"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "a</s>b")]), "bad_round"),
    (good(conversations=[turn("human", "<image>\nx ASSISTANT: y"), turn("gpt", "z")]), "bad_round"),
    (good(conversations=[turn("human", "What?"), turn("gpt", "Paris.")]), "no_image_token"),
    (good(conversations=[turn("gpt", "<image>\nHi"), turn("human", "What?"), turn("gpt", "No.")]), "no_image_token"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "y"), turn("human", "<image> z"),
                         turn("gpt", "w")]), "image_token_in_several_turns"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "It is [SEG].")]), "reserved_token"),
    (good(conversations=[turn("human", "<image>\nx <unk>"), turn("gpt", "y")]), "reserved_token"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "y"), turn("human", "z"),
                         turn("gpt", "a</s>USER: b ASSISTANT: c")]), "reserved_token"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "y")] * (MAX_TURNS // 2 + 1)), "too_long"),
    (good(conversations=[turn("human", "<image>\nx"), turn("gpt", "y" * (MAX_VALUE_CHARS + 1))]), "too_long"),
    (good(image="/etc/passwd"), "bad_path"),
    (good(image="../../llava_dataset/llava_instruct_150k.json"), "bad_path"),
    (good(image="000000000002.jpg"), "missing_image"),
    (good(image="sub"), "missing_image"),  # a folder is no image
], ids=lambda value: value if isinstance(value, str) else None)
def test_each_unusable_record_is_one_issue(tmp_path, record, code):
    (tmp_path / LLAVA_IMAGE_DIR / "sub").mkdir(parents=True)
    assert only_issue(tmp_path, record)[0] == code


def test_an_empty_assistant_turn_inside_is_kept_as_the_reference_keeps_it(tmp_path):
    turns = [turn("human", "<image>\nDog?"), turn("gpt", ""), turn("human", "Cat?"), turn("gpt", "One.")]
    write(tmp_path, [good(conversations=turns)])
    (record,), issues = read_llava_instruct(tmp_path)
    assert issues == []
    assert conv.vqa_prompt(record.conversations) == (
        conv.SYSTEM_PROMPT + " USER: <image>\nDog? ASSISTANT:USER: Cat? ASSISTANT: One.</s>")


def test_a_link_out_of_the_image_folder_is_refused(tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"\xff\xd8\xff\xd9")
    write(tmp_path, [good()])
    (tmp_path / LLAVA_IMAGE_DIR / "link.jpg").symlink_to(outside)
    assert only_issue(tmp_path, good(image="link.jpg"))[0] == "bad_path"


def test_the_image_folder_itself_may_be_a_link(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / IMAGE).write_bytes(b"\xff\xd8\xff\xd9")
    (tmp_path / "coco").mkdir()
    (tmp_path / LLAVA_IMAGE_DIR).symlink_to(shared)
    path = llava_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([good()]), encoding="utf-8")
    records, issues = read_llava_instruct(tmp_path)
    assert issues == [] and len(records) == 1


def test_images_need_not_exist_when_not_checked(tmp_path):
    write(tmp_path, [good(image="000000000002.jpg")], images=())
    records, issues = read_llava_instruct(tmp_path, check_images=False)
    assert issues == [] and records[0].image == "coco/train2017/000000000002.jpg"


@pytest.mark.parametrize("document, code", [
    (b"[{", "bad_json"),
    (b"\xff\xfe[]", "bad_json"),
    (b"[" * 100000 + b"]" * 100000, "bad_json"),
    (b'{"records": []}', "bad_json"),
    (b"1" * 5000, "bad_json"),
])
def test_a_file_that_cannot_be_read_is_one_issue(tmp_path, document, code):
    write(tmp_path, document)
    records, issues = read_llava_instruct(tmp_path)
    assert records == [] and [i.code for i in issues] == [code]
    assert issues[0].file == "llava_dataset/llava_instruct_150k.json"


def test_size_bound_and_missing_file(tmp_path):
    write(tmp_path, [good()] * 10)
    records, issues = read_llava_instruct(tmp_path, max_bytes=100)
    assert records == [] and [i.code for i in issues] == ["too_large"]
    records, issues = read_llava_instruct(tmp_path, name="llava_other")
    assert records == [] and [i.code for i in issues] == ["unreadable"]
    with pytest.raises(ValueError):
        llava_file(tmp_path, "../escape")


def test_demo_data_has_every_awkward_case_and_is_deterministic(tmp_path):
    summaries, contents = [], []
    for run in ("a", "b"):
        root = tmp_path / run
        summaries.append(write_llava_instruct(root, seed=3, n=10, width=64, height=48))
        contents.append({p.relative_to(root).as_posix(): p.read_bytes()
                         for p in sorted(root.rglob("*")) if p.is_file()})
    assert contents[0] == contents[1]
    summary = summaries[0]
    root = tmp_path / "a"
    raw = json.loads(llava_file(root).read_text(encoding="utf-8"))
    assert len(raw) == summary["records"] == 14  # 10 images, 2 second conversations, 2 awkward records
    records, issues = read_llava_instruct(root)
    assert len(records) == summary["usable"] == 12
    assert sorted((i.code, int(i.reason.split()[1])) for i in issues) == sorted([
        ("missing_image", summary["specials"]["missing_image"]), ("not_alternating", summary["specials"]["malformed"])])
    assert any(len(r.conversations) > 2 for r in records)  # multi-turn
    assert any(raw[r.index]["conversations"][0]["value"].endswith("<image>") for r in records)  # image last
    assert any(raw[r.index]["conversations"][0]["from"] == "gpt" for r in records)  # leading turn dropped
    ids = [r.id for r in records]
    assert len(set(ids)) < len(ids)  # one image, two conversations

    # A smaller run in the same folder removes the images the larger one wrote.
    write_llava_instruct(root, seed=3, n=2, width=64, height=48)
    assert sorted(os.listdir(root / LLAVA_IMAGE_DIR)) == ["000000900000.jpg", "000000900001.jpg"]


def test_demo_conversations_tokenise_with_only_the_answers_supervised(tmp_path):
    from transformers import AutoTokenizer

    from keyseg.model.tokens import ReferenceTokenizer, add_special_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(GOLDEN / "tiny_llama"), local_files_only=True)
    add_special_tokens(tokenizer)
    tokens = ReferenceTokenizer(tokenizer)
    write_llava_instruct(tmp_path, seed=0, n=5, width=48, height=40)
    records, _ = read_llava_instruct(tmp_path)
    for record in records:
        out = tokens.tokenize_conversations([conv.vqa_conversation(record.conversations)], None)
        labels = out["labels"][0].tolist()
        stretches, current = [], []
        for label in labels + [-100]:
            if label != -100:
                current.append(label)
            elif current:
                stretches.append(tokens.decode(current))
                current = []
        answers = [t["value"] + "</s>" for t in record.conversations if t["from"] == "gpt"]
        assert stretches == answers
