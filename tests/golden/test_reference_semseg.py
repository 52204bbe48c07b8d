"""keyseg's sem_seg samples against LISA's own, from raw files to token ids.

tests/golden/reference/semseg.json was written by make_goldens.py running LISA's
HybridDataset(dataset "sem_seg") over utils/sem_seg_dataset.py (ADE20K, COCO-Stuff,
Mapillary, PACO-LVIS, PASCAL-Part; the KeySeg release ships the same file) and
utils/dataset.py collate_fn, on tiny files it wrote and recorded in the golden. Here the
same files are written again, `keyseg prepare` reads them, each prepared record becomes a
shard sample, and keyseg's loader (SampleDecoder) is replayed with the reference's draws
(which classes, which of a part's two phrasings, which question and answer templates).
Questions, conversations, masks, input ids, labels and attention masks must be identical.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keyseg.data.conversation import ANSWERS, SHORT_QUESTIONS
from keyseg.data.samples import SampleConfig, SampleDecoder
from keyseg.io import read_jsonl
from keyseg.model.tokens import ReferenceTokenizer, add_special_tokens
from keyseg.shards.samples import build_sample_json, sample_json_bytes
from pipelines.prepare import PrepareConfig, run

GOLDEN = Path(__file__).parent / "reference"
DATA = json.loads((GOLDEN / "semseg.json").read_text(encoding="utf-8"))
TEXT_LIMIT = DATA["model_max_length"] - 255  # the reference's truncation length
CASES = DATA["cases"]
SOURCES = ("ade20k", "cocostuff", "mapillary", "paco_lvis", "pascal_part")
WIDTH, HEIGHT = DATA["size"]


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_golden_files(root: Path) -> None:
    """The files the reference read, from the golden's record of them."""
    files = DATA["files"]
    jpeg = _jpeg(WIDTH, HEIGHT)
    for source in ("ade20k", "cocostuff", "mapillary"):
        entry = files[source]
        (root / entry["label_dir"]).mkdir(parents=True, exist_ok=True)
        (root / entry["image_dir"]).mkdir(parents=True, exist_ok=True)
        for stem, rows in entry["label_maps"].items():
            Image.fromarray(np.array(rows, dtype=np.uint8)).save(root / entry["label_dir"] / f"{stem}.png")
            (root / entry["image_dir"] / f"{stem}.jpg").write_bytes(jpeg)
    (root / "mapillary" / "config_v2.0.json").write_text(json.dumps(files["mapillary"]["config_v2.0.json"]))
    for source in ("paco_lvis", "pascal_part"):
        entry = files[source]
        (root / entry["annotation_file"]).parent.mkdir(parents=True, exist_ok=True)
        (root / entry["annotation_file"]).write_text(json.dumps(entry["document"]))
        for image in entry["document"]["images"]:
            path = root / entry["image_dir"] / image["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every golden source prepared by the real stage: {(source, image path): (record, out)}."""
    root = tmp_path_factory.mktemp("semseg-golden")
    data_dir, out = root / "data", root / "out"
    write_golden_files(data_dir)
    result = run(PrepareConfig(data_dir=data_dir, out=out, show_progress=False, workers=1, sources=list(SOURCES)))
    records = {}
    for source in SOURCES:
        for record in read_jsonl(out / source / "train" / "manifest.jsonl"):
            records[(source, record["image"])] = record
    return {"records": records, "out": out, "data": data_dir, "result": result}


@pytest.fixture(scope="module")
def tokens():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(GOLDEN / "tiny_llama"), local_files_only=True)
    add_special_tokens(tokenizer)
    return ReferenceTokenizer(tokenizer)


class ReplayedDraws(random.Random):
    """Answers the loader's random calls with the draws the reference made for one item."""

    def __init__(self, drawn: list[int], texts: list[str], item: dict):
        super().__init__(0)
        self.drawn, self.texts = drawn, list(texts)
        self.templates = [(SHORT_QUESTIONS, q) for q in item["question_templates"]]
        self.templates = [pair for q, a in zip(self.templates, item["answer_templates"])
                          for pair in (q, (ANSWERS, a))]

    def sample(self, population, k, **kwargs):
        assert len(self.drawn) == k
        return list(self.drawn)

    def randrange(self, stop, *args):
        return self.texts.pop(0)

    def choice(self, seq):
        templates, index = self.templates.pop(0)
        assert seq is templates
        return seq[index]


def target_of(record: dict, name: str) -> tuple[int, int]:
    """(target index, text index) of the only target the reference's name can be."""
    found = [(t, target["texts"].index(name)) for t, target in enumerate(record["targets"]) if name in target["texts"]]
    assert len(found) == 1, (name, record["targets"])
    return found[0]


def decode(prepared: dict, item: dict) -> dict:
    """keyseg's loader on the prepared record of the item's image, with the reference's draws."""
    record = prepared["records"][(item["source"], item["image"])]
    masks = [np.array(Image.open(prepared["out"] / target["mask"])) for target in record["targets"]]
    raw = {"__key__": record["id"], "jpg": (prepared["data"] / record["image"]).read_bytes(),
           "json": sample_json_bytes(build_sample_json(record, masks, [None] * len(masks)))}
    picked = [target_of(record, name) for name in item["sampled_classes"]]
    drawn = [t for t, _ in picked]
    if len(record["targets"]) < 3:
        assert drawn == list(range(len(record["targets"])))  # the reference keeps them all, in order
    rng = ReplayedDraws(drawn, [i for _, i in picked], item)
    sample = SampleDecoder(SampleConfig(sam_size=64, clip_size=32, num_queries=3))(raw, rng)
    assert not rng.templates and not rng.texts  # every draw of the reference was used
    return sample


def test_golden_covers_every_source_and_the_awkward_cases():
    items = [item for case in CASES for item in case["items"]]
    assert {item["source"] for item in items} == set(SOURCES)
    classes = {name for item in items for name in item["sampled_classes"]}
    assert {"flag", "street sign"} <= classes  # the last ADE20K class; a COCO id COCO never used
    assert any(name.startswith("the ") and " of the " in name for name in classes)  # both part phrasings
    assert {"dog tail", "car wheel", "trash_can"} <= classes
    assert any(len(item["sampled_classes"]) < 3 for item in items)
    assert any(len(case["items"]) == 2 for case in CASES)


def test_images_the_reference_never_returns_are_left_out(prepared):
    returned = {(item["source"], item["image"]) for case in CASES for item in case["items"]}
    assert returned <= set(prepared["records"])
    # ADE_train_00000004 is all ignore: the reference draws another image, keyseg warns
    assert not any("ADE_train_00000004" in image for _, image in prepared["records"])
    assert any(issue["file"].endswith("ADE_train_00000004.png") for issue in prepared["result"].issues)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_loader_questions_conversations_and_masks_match_the_reference(prepared, case):
    conversations = []
    for item in case["items"]:
        sample = decode(prepared, item)
        assert sample["questions"] == item["questions"]
        assert sample["texts"] == item["sampled_classes"]
        assert sample["keywords"] == [None] * len(item["questions"])
        expected = np.array([[list(map(int, row)) for row in mask] for mask in item["masks"]], dtype=np.uint8)
        assert np.array_equal(sample["masks"].numpy(), expected)
        conversations += sample["conversations"]
    assert conversations == case["conversations"]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_tokens_labels_and_masks_match_the_reference(prepared, tokens, case):
    conversations = [c for item in case["items"] for c in decode(prepared, item)["conversations"]]
    out = tokens.tokenize_conversations(conversations, TEXT_LIMIT)
    assert out["input_ids"].tolist() == case["input_ids"]
    assert out["labels"].tolist() == case["labels"]
    assert out["attention_mask"].bool().tolist() == case["attention_masks"]
