"""Produce golden values by running the KeySeg and LISA reference code.

Not run by users or CI. It needs the reference environment and work trees
described in README.md beside this file:

    $REFENV/bin/python tests/golden/reference/make_goldens.py \
        --keyseg $REF/KeySeg --lisa $REF/LISA --out tests/golden/reference

The reference dataset classes read files, so a tiny fake dataset is written to
a temporary folder first. Every golden JSON file names the reference commits
and library versions it was made with.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import pickle
import random
import subprocess
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
IMAGE_SIZE = 1024  # finetune.py --image_size default
NUM_CLASSES_PER_SAMPLE = 3  # finetune.py --num_classes_per_sample default
MODEL_MAX_LENGTH = 512  # finetune.py --model_max_length default

# ---------------------------------------------------------------------------
# Fake dataset content
# ---------------------------------------------------------------------------

LONG_SENTENCE = (
    " ".join(
        f"In step {step} the chef moves the red cup near the window and then looks at the clock."
        for step in range(1, 19)
    )
    + " Which object ends up closest to the window at the end?"
)

# ReasonSeg train images: LabelMe json ("text", "is_sentence", "shapes") plus
# an optional entry in explanatory_key/keyword_outputs.json.
REASON_TRAIN = [
    {
        "image": "train_handle.jpg",
        "is_sentence": True,
        "text": [
            "What part of the car would you hold to open the door?",
            "Which thing do you pull to get into the car?",
            "Where do you put your hand to open it?",
            "The part that opens the door of the white car.",
        ],
        "explanation": {
            "query": "What part of the car would you hold to open the door?",
            "outputs": "The handle is attached to the door, so you pull it to open the car.",
            "keyword": "handle",
        },
    },
    {
        "image": "train_fridge.jpg",
        "is_sentence": True,
        "text": [
            "What keeps food cold?",
            "Which object in the kitchen is used to keep food cold for a long time?",
        ],
        "explanation": {
            "query": "What keeps food cold?",
            "outputs": "A refrigerator keeps food cold because it cools the air inside.",
            "keyword": "Refrigerator Door",
        },
    },
    {
        "image": "train_omega.jpg",
        "is_sentence": True,
        "text": ["Which lamp gives light in the dark room, 2 of them?"],
        "explanation": {
            "query": "Which lamp gives light in the dark room, 2 of them?",
            "outputs": "The lamp gives light in the dark room.",
            "keyword": "\u03a9mega lamp",
        },
    },
    {
        "image": "train_emptykey.jpg",
        "is_sentence": True,
        "text": ["Something that tells the time on the wall of the station."],
        "explanation": {
            "query": "Something that tells the time on the wall of the station.",
            "outputs": "The clock on the wall shows the hours and the minutes.",
            "keyword": "",
        },
    },
    {
        "image": "train_nokeyfield.jpg",
        "is_sentence": True,
        "text": ["What could a child use to reach the cookies on the top shelf?"],
        "explanation": {
            "query": "What could a child use to reach the cookies on the top shelf?",
            "outputs": "The stool is short and sturdy, so a child can stand on it.",
        },
    },
    {
        "image": "train_unlisted.jpg",
        "is_sentence": True,
        "text": [
            "The animal that is most likely to catch the mouse in this picture.",
            "Which animal is hunting?",
        ],
        "explanation": None,
    },
    {
        "image": "train_phrase.jpg",
        "is_sentence": False,
        "text": ["The Red Umbrella", "umbrella, left side", "Girl's Umbrella"],
        "explanation": {
            "query": "The Red Umbrella",
            "outputs": "The umbrella is red and it is on the left.",
            "keyword": "umbrella",
        },
    },
    {
        "image": "train_long.jpg",
        "is_sentence": True,
        "text": [LONG_SENTENCE],
        "explanation": {
            "query": LONG_SENTENCE,
            "outputs": "The cup is moved near the window in every step.",
            "keyword": "cup",
        },
    },
]

# ReasonSeg val images (ValDataset only reads text[0]).
REASON_VAL = [
    {"image": "val_sentence.jpg", "is_sentence": True,
     "text": ["What part of the car would you hold to open the door?", "unused second sentence"]},
    {"image": "val_phrase.jpg", "is_sentence": False, "text": ["Red Umbrella, Left"]},
    {"image": "val_digits.jpg", "is_sentence": True,
     "text": ["In 2019, 3 people bought 12 red apples; which fruit did they buy?"]},
    {"image": "val_unicode.jpg", "is_sentence": True,
     "text": ["O\u00f9 est le caf\u00e9 \u03a9mega, the lamp near the window?"]},
    {"image": "val_spaces.jpg", "is_sentence": False, "text": ["  the  lamp  "]},
    {"image": "val_long.jpg", "is_sentence": True, "text": [LONG_SENTENCE]},
]

# refCOCO (splitBy unc): images, and refs with their sentences and split.
REFER_IMAGES = [
    (101, "train"), (102, "train"), (103, "train"), (104, "val"), (105, "val"), (106, "testA"),
]
REFER_REFS = [
    # ref_id, ann_id, image_id, split, sentences
    (1, 1001, 101, "train", ["Man In Red Shirt", "guy on the left, holding a bat!"]),
    (2, 1002, 101, "train", ["woman with 2 dogs", "the lady near the 3rd bench"]),
    (3, 1003, 102, "train", ["Black Horse"]),
    (4, 1004, 103, "train", ["zebra in the middle"]),
    (5, 1005, 103, "train", ["the Front Sheep on the right"]),
    (6, 1006, 104, "val", ["Blue chair by the window", "chair near window"]),
    (7, 1007, 104, "val", ["TV screen"]),
    (8, 1008, 105, "val", ["  left most person  "]),
    (9, 1009, 105, "val", ["pizza slice, bottom right", "The Second Slice (from left)", "slice #2"]),
    (10, 1010, 106, "testA", ["person in the back"]),
]

CLIP_PREPROCESSOR_CONFIG = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}

# Tokenizer inputs for the direct cases.
DIRECT_TEXTS = [
    "", " ", "[SEG]", " [SEG] ", "a [SEG] b", "a[SEG]b", "[SEG][KEY]", "[SEG] [KEY]",
    "It is [SEG]. [KEY].</s>", "Sure, [SEG].[KEY] handle</s>", "[SEG].[KEY] </s>",
    "<im_start><im_end>", "<im_end>\nWhat is it?", "<im_end>\n What is it?",
    "<im_start> <im_end> x", "foo</s>bar", "foo </s> bar", "</s></s>", "<s>text", "<unk>",
    "<im_patch>", "na\u00efve caf\u00e9 \u65e5\u672c \u03a9mega", "12345 and 3.14 and 2019",
    "  two leading spaces", "trailing spaces  ", "tab\tand\nnewline", "\n\nWhat",
    "\u2581literal underline", "USER", " ASSISTANT:", "Refrigerator Door", "\u03a9mega lamp",
]
DIRECT_IMAGE_TEXTS = [
    "<image>", "<image>\nfoo", "A <image> B", "x<image>y<image>z",
    "<im_start><image><im_end>", "<im_start><image><im_end>\nWhat is the lamp?",
    "USER: <im_start><image><im_end>\n What is it? ASSISTANT: [SEG]. [KEY].",
]

# ---------------------------------------------------------------------------
# Environment helpers
# ---------------------------------------------------------------------------


def git_commit(checkout: Path) -> str:
    return subprocess.check_output(["git", "-C", str(checkout), "rev-parse", "HEAD"], text=True).strip()


def install_torchvision_stand_in() -> None:
    """Provide the two torchvision functions the reference datasets use.

    The PyPI torchvision wheel that matches torch 2.13 is a CUDA build whose
    extension cannot load next to the CPU torch here, so `import torchvision`
    fails. The reference code only needs `resize`/`to_pil_image` (SAM's
    ResizeLongestSide, image tensors are not part of the goldens) and names
    from torchvision.ops.boxes at import time (SAM's mask generator, unused).
    """
    # transformers records at import time whether torchvision is installed;
    # import it first so it keeps seeing "not installed".
    import transformers  # noqa: F401

    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    from PIL import Image

    def to_pil_image(pic):
        return Image.fromarray(np.asarray(pic))

    def resize(img, size):
        height, width = size
        return img.resize((width, height), Image.BILINEAR)

    def unavailable(*args, **kwargs):
        raise NotImplementedError("torchvision stand-in: not needed for the goldens")

    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = resize
    functional.to_pil_image = to_pil_image
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms = unavailable
    boxes.box_area = unavailable
    root.transforms, transforms.functional, root.ops, ops.boxes = transforms, functional, ops, boxes
    sys.modules.update({
        "torchvision": root, "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional, "torchvision.ops": ops,
        "torchvision.ops.boxes": boxes,
    })


def forget_reference_packages() -> None:
    """Drop the `model` and `utils` packages so the other checkout can be imported."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("model", "utils"):
            del sys.modules[name]


def import_reference(checkout: Path, **modules: str) -> types.SimpleNamespace:
    """The named modules of one reference checkout (its `model`/`utils` packages, not the other's)."""
    forget_reference_packages()
    sys.path.insert(0, str(checkout))
    try:
        return types.SimpleNamespace(**{name: importlib.import_module(module) for name, module in modules.items()})
    finally:
        sys.path.remove(str(checkout))


def import_keyseg(checkout: Path) -> types.SimpleNamespace:
    return import_reference(checkout, conversation="model.llava.conversation", mm_utils="model.llava.mm_utils",
                            utils="utils.utils", reason_seg_key="utils.reason_seg_key_dataset",
                            refer_seg="utils.refer_seg_dataset", reason_refer="utils.reason_refer", kisa="model.KISA")


def import_lisa(checkout: Path) -> types.SimpleNamespace:
    return import_reference(checkout, conversation="model.llava.conversation", utils="utils.utils",
                            dataset="utils.dataset")


def load_tokenizer(folder: Path, utils_module):
    """Load the tokenizer the way ha-erim/KeySeg finetune.py:195-213 does."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(folder),
        cache_dir=None,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
        use_fast=False,
    )
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.add_tokens("[SEG]")
    tokenizer.add_tokens("[KEY]")
    tokenizer.add_tokens([utils_module.DEFAULT_IM_START_TOKEN, utils_module.DEFAULT_IM_END_TOKEN],
                         special_tokens=True)
    return tokenizer


# ---------------------------------------------------------------------------
# Fake dataset files
# ---------------------------------------------------------------------------


def write_image(path: Path, width: int = 48, height: int = 40) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[5:30, 6:36] = (30, 120, 220)
    cv2.imwrite(str(path), image)


def labelme_shapes() -> list[dict]:
    return [
        {"label": "target", "points": [[6, 5], [35, 5], [35, 29], [6, 29]]},
        {"label": "ignore", "points": [[0, 0], [4, 0], [4, 4], [0, 4]]},
        {"label": "flag", "points": [[40, 30], [46, 30], [46, 38]]},
    ]


def write_reason_seg_split(root: Path, split: str, entries: list[dict]) -> None:
    folder = root / "reason_seg" / "ReasonSeg" / split
    for entry in entries:
        write_image(folder / entry["image"])
        anno = {"text": entry["text"], "is_sentence": entry["is_sentence"], "shapes": labelme_shapes()}
        (folder / entry["image"].replace(".jpg", ".json")).write_text(json.dumps(anno), encoding="utf-8")


def write_explanations(root: Path) -> None:
    items = []
    for entry in REASON_TRAIN:
        if entry["explanation"] is not None:
            items.append({"image": entry["image"], **entry["explanation"]})
    folder = root / "reason_seg" / "ReasonSeg" / "explanatory_key"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keyword_outputs.json").write_text(json.dumps(items), encoding="utf-8")


def refer_file_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}.jpg"


def write_refcoco(root: Path) -> None:
    refer_root = root / "refer_seg"
    data_dir = refer_root / "refcoco"
    data_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, refs = [], [], []
    for image_id, _ in REFER_IMAGES:
        write_image(refer_root / "images/mscoco/images/train2014" / refer_file_name(image_id))
        images.append({"id": image_id, "file_name": refer_file_name(image_id), "height": 40, "width": 48})
    sent_id = 0
    for ref_id, ann_id, image_id, split, sentences in REFER_REFS:
        x0 = 2 + 3 * (ref_id % 5)
        annotations.append({
            "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "segmentation": [[x0, 4, x0 + 20, 4, x0 + 20, 30, x0, 30]],
            "bbox": [x0, 4, 20, 26], "area": 520.0,
        })
        sent_dicts = []
        for sent in sentences:
            sent_dicts.append({"sent_id": sent_id, "sent": sent, "raw": sent, "tokens": sent.split()})
            sent_id += 1
        refs.append({
            "ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "category_id": 1,
            "split": split, "sentences": sent_dicts, "sent_ids": [s["sent_id"] for s in sent_dicts],
            "file_name": refer_file_name(image_id).replace(".jpg", f"_{ann_id}.jpg"),
        })
    with open(data_dir / "refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle)
    instances = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (data_dir / "instances.json").write_text(json.dumps(instances), encoding="utf-8")


def write_fake_dataset(root: Path) -> Path:
    write_reason_seg_split(root, "train", REASON_TRAIN)
    write_reason_seg_split(root, "val", REASON_VAL)
    write_explanations(root)
    write_refcoco(root)
    clip_dir = root / "clip"
    clip_dir.mkdir(parents=True, exist_ok=True)
    (clip_dir / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR_CONFIG), encoding="utf-8")
    return clip_dir


# ---------------------------------------------------------------------------
# Recording helpers
# ---------------------------------------------------------------------------


class ChoiceRecorder:
    """Log which list and index every `random.choice` call drew.

    It calls the real `random.choice`, so the random stream is unchanged.
    """

    def __init__(self, named_lists: dict[str, list]):
        self.named_lists = named_lists
        self.draws: list[tuple[str, int]] = []

    def __enter__(self):
        self.real_choice = random.choice
        random.choice = self._choice
        return self

    def __exit__(self, *exc):
        random.choice = self.real_choice

    def _choice(self, seq):
        value = self.real_choice(seq)
        for name, known in self.named_lists.items():
            if seq is known:
                self.draws.append((name, seq.index(value)))
                break
        else:
            self.draws.append(("other", [i for i, v in enumerate(seq) if v is value][0]))
        return value


def token_mask_positions(input_ids: torch.Tensor, token_id: int) -> list[list[int]]:
    """Indices where ha-erim/KeySeg model/KISA.py:414-420 sets its token mask.

    Restated on CPU (the reference builds the padding with `.cuda()`): compare
    input_ids[:, 1:], append one False column, prepend 255 False columns.
    """
    mask = input_ids[:, 1:] == token_id
    mask = torch.cat([mask, torch.zeros((mask.shape[0], 1)).bool()], dim=1)
    mask = torch.cat([torch.zeros((mask.shape[0], 255)).bool(), mask], dim=1)
    return [torch.nonzero(row).flatten().tolist() for row in mask]


def token_offsets(input_ids: torch.Tensor, token_id: int, offset: torch.Tensor) -> list[int]:
    """Per-image split points of the flattened token embeddings (ha-erim/KeySeg model/KISA.py:459-468)."""
    mask = input_ids[:, 1:] == token_id
    counts = mask.int().sum(-1).cumsum(-1)
    return torch.cat([torch.zeros(1).long(), counts], dim=0)[offset].tolist()


def human_message(conversation: str, conv) -> str:
    """The USER message of a one-round llava_v1 prompt."""
    prefix = conv.system + conv.sep + conv.roles[0] + ": "
    assert conversation.startswith(prefix), conversation
    end = conversation.rindex(conv.sep + conv.roles[1] + ": ")
    return conversation[len(prefix):end]


def collate_record(out: dict, tokenizer, seg_id: int, key_id: int) -> dict:
    input_ids = out["input_ids"]
    return {
        "conversations": list(out["conversation_list"]),
        "input_ids": input_ids.tolist(),
        "labels": out["labels"].tolist(),
        "attention_masks": out["attention_masks"].tolist(),
        "offset": out["offset"].tolist(),
        "input_keywords_ids_list": [list(ids) for ids in out["input_keywords_ids_list"]]
        if "input_keywords_ids_list" in out else None,
        "inference": bool(out["inference"]),
        "seg_positions": token_mask_positions(input_ids, seg_id),
        "key_positions": token_mask_positions(input_ids, key_id),
        "seg_token_offset": token_offsets(input_ids, seg_id, out["offset"]),
        "key_token_offset": token_offsets(input_ids, key_id, out["offset"]),
    }


def template_index(text: str, templates: list[str], **fields) -> int | None:
    matches = [i for i, t in enumerate(templates) if t.format(**fields) == text]
    return matches[0] if matches else None


# ---------------------------------------------------------------------------
# conversations.json
# ---------------------------------------------------------------------------


def eval_reasonseg_cases(ks, tokenizer, root, clip_dir, seg_id, key_id) -> list[dict]:
    dataset = ks.reason_seg_key.ValDataset(str(root), tokenizer, str(clip_dir), "ReasonSeg|val", IMAGE_SIZE)
    dataset.images = sorted(dataset.images)  # glob order depends on the file system
    collate = partial(ks.reason_seg_key.collate_fn_val, tokenizer=tokenizer, conv_type="llava_v1",
                      use_mm_start_end=True, local_rank=0)
    by_name = {e["image"]: e for e in REASON_VAL}
    conv = ks.conversation.default_conversation
    items = []
    for idx in range(len(dataset)):
        item = dataset[idx]
        entry = by_name[Path(item[0]).name]
        items.append((item, {
            "image": entry["image"], "text": entry["text"], "is_sentence": entry["is_sentence"],
            "sampled_sents": [entry["text"][0]],
            "dataset_conversations": list(item[3]),
            "questions": [human_message(c, conv) for c in item[3]],
        }))
    cases = []
    for item, raw in items:
        out = collate([item])
        cases.append({"name": "eval-reasonseg-" + raw["image"][:-4], "protocol": "keyseg-eval-reasonseg",
                      "items": [raw], **collate_record(out, tokenizer, seg_id, key_id)})
    # One batch of two, to show padding and offsets (finetune.py uses val batch size 1).
    pair = [items[0], items[-1]]
    out = collate([p[0] for p in pair])
    cases.append({"name": "eval-reasonseg-batch-sentence-long", "protocol": "keyseg-eval-reasonseg",
                  "items": [p[1] for p in pair], **collate_record(out, tokenizer, seg_id, key_id)})
    return cases


def eval_refer_release_cases(ks, tokenizer, root, clip_dir, seg_id, key_id) -> list[dict]:
    dataset = ks.refer_seg.ReferSegValDataset(str(root), tokenizer, str(clip_dir), "refcoco|unc|val", IMAGE_SIZE)
    collate = partial(ks.reason_seg_key.collate_fn_val, tokenizer=tokenizer, conv_type="llava_v1",
                      use_mm_start_end=True, local_rank=0)
    conv = ks.conversation.default_conversation
    cases = []
    for idx in range(len(dataset)):
        ref = dataset.refs[idx]
        item = dataset[idx]
        raw = {
            "image": Path(item[0]).name, "ref_id": ref["ref_id"],
            "sentences": [s["sent"] for s in ref["sentences"]],
            "sampled_sents": [ref["sentences"][0]["sent"].strip().lower()],
            "dataset_conversations": list(item[3]),
            "questions": [human_message(c, conv) for c in item[3]],
        }
        out = collate([item])
        cases.append({"name": f"eval-refer-release-ref{ref['ref_id']}", "protocol": "keyseg-eval-refer-release",
                      "items": [raw], **collate_record(out, tokenizer, seg_id, key_id)})
    return cases


def lisa_eval_refer_cases(ks, lisa, tokenizer, root, clip_dir, seg_id, key_id) -> list[dict]:
    # LISA's ValDataset takes the refer_seg folder itself as base_image_dir.
    dataset = lisa.dataset.ValDataset(str(root / "refer_seg"), tokenizer, str(clip_dir), "refcoco|unc|val",
                                      IMAGE_SIZE)
    lisa_collate = partial(lisa.dataset.collate_fn, tokenizer=tokenizer, conv_type="llava_v1",
                           use_mm_start_end=True, local_rank=0)
    keyseg_collate = partial(ks.reason_seg_key.collate_fn_val, tokenizer=tokenizer, conv_type="llava_v1",
                             use_mm_start_end=True, local_rank=0)
    conv = lisa.conversation.default_conversation
    cases = []
    for idx in range(len(dataset)):
        info = dataset.refer_seg_ds["images"][idx]
        refs = dataset.refer_seg_ds["img2refs"][info["id"]]
        item = dataset[idx]
        raw = {
            "image": Path(item[0]).name,
            "ref_ids": [r["ref_id"] for r in refs],
            "sentences": [s["sent"] for r in refs for s in r["sentences"]],
            "sampled_sents": [s["sent"].strip().lower() for r in refs for s in r["sentences"]],
            "dataset_conversations": list(item[3]),
            "questions": [human_message(c, conv) for c in item[3]],
        }
        stem = Path(item[0]).stem
        # Both collates rewrite the conversation list in place; give each a copy.
        out = lisa_collate([item[:3] + (list(item[3]),) + item[4:]])
        cases.append({"name": f"lisa-eval-refer-{stem}", "protocol": "lisa-eval-refer",
                      "items": [raw], **collate_record(out, tokenizer, seg_id, key_id)})
        out = keyseg_collate([item[:3] + (list(item[3]),) + item[4:]])
        cases.append({"name": f"lisa-eval-refer-keyseg-collate-{stem}",
                      "protocol": "lisa-eval-refer-keyseg-collate",
                      "items": [raw], **collate_record(out, tokenizer, seg_id, key_id)})
    return cases


def reason_train_raw(item, draws, ks, explained_images) -> dict:
    """Describe one ReasonSegKeyDataset item, template choices included."""
    u = ks.utils
    image_name = Path(item[0]).name
    entry = next(e for e in REASON_TRAIN if e["image"] == image_name)
    questions, sampled, keywords = item[7], item[8], item[10]
    is_sentence = entry["is_sentence"]
    question_list_name = "LONG_QUESTION_LIST" if is_sentence else "SHORT_QUESTION_LIST"
    explained = image_name in explained_images
    per_sentence = []
    draw_iter = iter(draws)
    choice = None
    for text, question in zip(sampled, questions):
        # The reference picks `choice` once per item; images without an
        # explanation entry always take choice 0.
        if not explained:
            sentence_choice = 0
        elif question == u.DEFAULT_IMAGE_TOKEN + "\n" + text:
            sentence_choice = 2
        elif any(question == u.DEFAULT_IMAGE_TOKEN + "\n" + text + " " + e for e in u.EXPLANATORY_QUESTION_LIST):
            sentence_choice = 1
        else:
            sentence_choice = 0
        choice = sentence_choice if choice is None else choice
        assert choice == sentence_choice
        name, q_index = next(draw_iter)
        assert name == question_list_name
        record = {"text": text, "question_list": question_list_name, "question_index": q_index}
        if sentence_choice == 0:
            fields = {"sent": text} if is_sentence else {"class_name": text.lower()}
            assert template_index(question, getattr(u, question_list_name), **fields) == q_index
            name, record["answer_index"] = next(draw_iter)
            assert name == "ANSWER_LIST"
            record["question_template_used"] = True
        elif sentence_choice == 1:
            name, record["answer_index"] = next(draw_iter)
            assert name == "ANSWER_LIST"
            name, record["explanatory_index"] = next(draw_iter)
            assert name == "EXPLANATORY_QUESTION_LIST"
            record["question_template_used"] = False
        else:
            record["question_template_used"] = False
        per_sentence.append(record)
    assert next(draw_iter, None) is None
    return {
        "image": image_name,
        "text": entry["text"],
        "is_sentence": is_sentence,
        "explanation": entry["explanation"],
        "in_explanations": explained,
        "sampled_sents": list(sampled),
        "choice": choice,
        "templates": per_sentence,
        "keywords": list(keywords),
        "questions": list(questions),
        "dataset_conversations": list(item[3]),
    }


def refer_train_raw(item, draws, dataset) -> dict:
    image_name = Path(item[0]).name
    ds_data = dataset.refer_seg_data["refcoco"]
    info = next(i for i in ds_data["images"] if Path(i["file_name"]).name == image_name)
    refs = ds_data["img2refs"][info["id"]]
    draw_iter = iter(draws)
    assert next(draw_iter)[0] == "other"  # dataset name
    assert next(draw_iter)[0] == "other"  # image
    per_sentence = []
    for text in item[8]:
        name, q_index = next(draw_iter)
        assert name == "SHORT_QUESTION_LIST"
        name, a_index = next(draw_iter)
        assert name == "ANSWER_LIST"
        per_sentence.append({"text": text, "question_list": "SHORT_QUESTION_LIST",
                             "question_index": q_index, "answer_index": a_index})
    return {
        "image": image_name,
        "sentences": [s["sent"] for r in refs for s in r["sentences"]],
        "sampled_sents": list(item[8]),
        "templates": per_sentence,
        "keywords": list(item[10]),
        "questions": list(item[7]),
        "dataset_conversations": list(item[3]),
    }


def unique_items(drawn: list[tuple]) -> list[tuple]:
    """Keep the first of items whose conversations and keywords repeat an earlier one."""
    seen, unique = set(), []
    for item, raw in drawn:
        key = (tuple(item[3]), tuple(map(str, raw["keywords"])))
        if key not in seen:
            seen.add(key)
            unique.append((item, raw))
    return unique


def train_reasonseg_cases(ks, tokenizer, root, clip_dir, seg_id, key_id) -> list[dict]:
    u = ks.utils
    named = {"SHORT_QUESTION_LIST": u.SHORT_QUESTION_LIST, "LONG_QUESTION_LIST": u.LONG_QUESTION_LIST,
             "EXPLANATORY_QUESTION_LIST": u.EXPLANATORY_QUESTION_LIST, "ANSWER_LIST": u.ANSWER_LIST}
    collate = partial(ks.reason_refer.collate_fn, tokenizer=tokenizer, conv_type="llava_v1",
                      use_mm_start_end=True, local_rank=0)
    explained = {e["image"] for e in REASON_TRAIN if e["explanation"] is not None}
    cases = []
    for explanatory, seed, calls in ((1.0, 0, 14), (0.0, 1, 18)):
        hybrid = ks.reason_refer.HybridDataset(
            str(root), tokenizer, str(clip_dir), samples_per_epoch=100, precision="bf16",
            image_size=IMAGE_SIZE, num_classes_per_sample=NUM_CLASSES_PER_SAMPLE, exclude_val=False,
            dataset="reason_seg", sample_rate=[1], reason_seg_data="ReasonSeg|train", explanatory=explanatory)
        inner = hybrid.all_datasets[0]
        images = sorted(inner.reason_seg_data[0])  # glob order depends on the file system
        inner.reason_seg_data = (images, [p.replace(".jpg", ".json") for p in images])
        random.seed(seed)
        np.random.seed(seed)
        drawn = []
        for call in range(calls):
            with ChoiceRecorder(named) as recorder:
                item = hybrid[call]
            raw = reason_train_raw(item, recorder.draws, ks, explained)
            raw.update({"explanatory": explanatory, "seed": seed, "call": call})
            drawn.append((item, raw))
        # One single-item batch per distinct item, then two-item batches as
        # finetune.py uses (batch size 2): two short items, and (once) a short
        # item with the long one, whose batch the collate truncates.
        unique = unique_items(drawn)
        short = [d for d in unique if LONG_SENTENCE not in d[1]["sampled_sents"]]
        long_items = [d for d in unique if LONG_SENTENCE in d[1]["sampled_sents"]]
        batches = [[d] for d in unique] + [short[0:2]]
        if explanatory == 0.0:
            batches.append([short[2], long_items[0]])
        for batch in batches:
            out = collate([b[0][:3] + (list(b[0][3]),) + b[0][4:] for b in batch])
            calls_named = "+".join(str(b[1]["call"]) for b in batch)
            cases.append({"name": f"train-reasonseg-expl{explanatory:g}-call{calls_named}",
                          "protocol": "keyseg-train-reasonseg",
                          "items": [b[1] for b in batch], **collate_record(out, tokenizer, seg_id, key_id)})
    return cases


def train_refer_cases(ks, tokenizer, root, clip_dir, seg_id, key_id) -> list[dict]:
    u = ks.utils
    named = {"SHORT_QUESTION_LIST": u.SHORT_QUESTION_LIST, "ANSWER_LIST": u.ANSWER_LIST}
    collate = partial(ks.reason_refer.collate_fn, tokenizer=tokenizer, conv_type="llava_v1",
                      use_mm_start_end=True, local_rank=0)
    hybrid = ks.reason_refer.HybridDataset(
        str(root), tokenizer, str(clip_dir), samples_per_epoch=100, precision="bf16",
        image_size=IMAGE_SIZE, num_classes_per_sample=NUM_CLASSES_PER_SAMPLE, exclude_val=False,
        dataset="refer_seg", sample_rate=[1], refer_seg_data="refcoco")
    inner = hybrid.all_datasets[0]
    seed = 2
    random.seed(seed)
    np.random.seed(seed)
    drawn = []
    for call in range(8):
        with ChoiceRecorder(named) as recorder:
            item = hybrid[call]
        raw = refer_train_raw(item, recorder.draws, inner)
        raw.update({"seed": seed, "call": call})
        drawn.append((item, raw))
    unique = unique_items(drawn)
    cases = []
    for batch in [[d] for d in unique] + [unique[0:2]]:
        out = collate([b[0][:3] + (list(b[0][3]),) + b[0][4:] for b in batch])
        calls_named = "+".join(str(b[1]["call"]) for b in batch)
        cases.append({"name": f"train-refer-call{calls_named}", "protocol": "keyseg-train-refer",
                      "items": [b[1] for b in batch], **collate_record(out, tokenizer, seg_id, key_id)})
    return cases


def direct_tokenizer_cases(ks, tokenizer) -> dict:
    texts = []
    for text in DIRECT_TEXTS:
        with_special = tokenizer(text).input_ids
        without = tokenizer(text, add_special_tokens=False).input_ids
        texts.append({"text": text, "input_ids": with_special, "input_ids_no_special": without,
                      "tokens": tokenizer.convert_ids_to_tokens(with_special)})
    image_texts = []
    for text in DIRECT_IMAGE_TEXTS:
        ids = ks.mm_utils.tokenizer_image_token(text, tokenizer)
        image_texts.append({"text": text, "input_ids": ids})
    return {"tokenizer_call": texts, "tokenizer_image_token": image_texts}


def check_coverage(cases: list[dict]) -> None:
    """Fail loudly if the seeded draws stopped covering the paths the goldens promise."""
    train = [i for c in cases if c["protocol"] == "keyseg-train-reasonseg" for i in c["items"]]
    choices = {(i["in_explanations"], i["choice"]) for i in train}
    assert {(True, 0), (True, 1), (True, 2), (False, 0)} <= choices, choices
    keywords = {k for i in train for k in i["keywords"]}
    for needed in ("handle", "", "\u03a9mega lamp", None, "Refrigerator Door", "umbrella", "cup"):
        assert needed in keywords, needed
    assert any(len(i["sampled_sents"]) == 3 for i in train)
    assert any(not i["is_sentence"] for i in train)
    truncated = [c for c in cases if c["inference"] is False and len(c["input_ids"][0]) == MODEL_MAX_LENGTH - 255]
    assert truncated, "no truncated train case"
    refer = [i for c in cases if c["protocol"] == "keyseg-train-refer" for i in c["items"]]
    assert any(len(i["sampled_sents"]) == 3 for i in refer)
    assert len({i["image"] for i in refer}) == 3


# ---------------------------------------------------------------------------
# templates.json
# ---------------------------------------------------------------------------


def templates_golden(ks, lisa) -> dict:
    names = ["SHORT_QUESTION_LIST", "LONG_QUESTION_LIST", "EXPLANATORY_QUESTION_LIST", "ANSWER_LIST"]
    lists = {name: list(getattr(ks.utils, name)) for name in names}
    differences = {name: list(getattr(lisa.utils, name)) for name in names
                   if list(getattr(lisa.utils, name)) != lists[name]}
    conv = ks.conversation.conv_templates["llava_v1"]
    lisa_conv = lisa.conversation.conv_templates["llava_v1"]
    conversation = {
        "name": "llava_v1", "system": conv.system, "roles": list(conv.roles), "sep": conv.sep,
        "sep2": conv.sep2, "sep_style": conv.sep_style.name, "version": conv.version,
    }
    lisa_conversation = {
        "name": "llava_v1", "system": lisa_conv.system, "roles": list(lisa_conv.roles), "sep": lisa_conv.sep,
        "sep2": lisa_conv.sep2, "sep_style": lisa_conv.sep_style.name, "version": lisa_conv.version,
    }
    empty = ks.conversation.conv_templates["llava_v1"].copy()
    empty.append_message(empty.roles[0], "{question}")
    empty.append_message(empty.roles[1], "{answer}")
    return {
        **lists,
        "lisa_differences": differences,
        "llava_v1": conversation,
        "lisa_llava_v1_same": conversation == lisa_conversation,
        "llava_v1_one_round_prompt": empty.get_prompt(),
        "image_tokens": {
            "DEFAULT_IMAGE_TOKEN": ks.utils.DEFAULT_IMAGE_TOKEN,
            "DEFAULT_IM_START_TOKEN": ks.utils.DEFAULT_IM_START_TOKEN,
            "DEFAULT_IM_END_TOKEN": ks.utils.DEFAULT_IM_END_TOKEN,
            "DEFAULT_IMAGE_PATCH_TOKEN": ks.utils.DEFAULT_IMAGE_PATCH_TOKEN,
            "IMAGE_TOKEN_INDEX": ks.utils.IMAGE_TOKEN_INDEX,
            "IGNORE_INDEX": ks.utils.IGNORE_INDEX,
        },
        # Strings written inline in the reference code rather than as constants.
        "inline": {
            "eval_sentence_question": {
                "format": "<image>\n {sent} Please output segmentation mask.",
                "where": "ha-erim/KeySeg utils/reason_seg_key_dataset.py:726-732; dvlab-research/LISA utils/dataset.py:394-400",
            },
            "eval_phrase_question": {
                "format": "<image>\n What is {phrase} in this image? Please output segmentation mask.",
                "where": "ha-erim/KeySeg utils/reason_seg_key_dataset.py:733-741; dvlab-research/LISA utils/dataset.py:402-409",
            },
            "refer_release_eval_question": {
                "format": "<image>\n{sent}",
                "where": "ha-erim/KeySeg utils/refer_seg_dataset.py:136-140",
            },
            "train_answer_in_conversation": {
                "format": "[SEG].",
                "where": "ha-erim/KeySeg utils/reason_seg_key_dataset.py:543 (every choice; answers built at 518-533 are never used)",
            },
            "eval_collate_key_suffix": {
                "replace": ["</s>", " [KEY].</s>"],
                "where": "ha-erim/KeySeg utils/reason_seg_key_dataset.py:204-205 (collate_fn_val, only when [KEY] is absent)",
            },
            "train_collate_key_suffix": {
                "replace": ["</s>", "[KEY] {keyword}</s>"],
                "where": "ha-erim/KeySeg utils/reason_refer.py:166-167 (only when the keyword is not None)",
            },
            "image_token_replacement": {
                "replace": ["<image>", "<im_start><image><im_end>"],
                "where": "ha-erim/KeySeg utils/reason_refer.py:183-186",
            },
        },
    }


# ---------------------------------------------------------------------------
# fusion.json + fusion_weights.safetensors
# ---------------------------------------------------------------------------

FUSION_DIM = 32
FUSION_HIDDEN = 16
FUSION_CASES = [
    # name, [(n_key, n_seg) per image], scale
    ("one-image-seg1-key1", [(1, 1)], 1.0),
    ("one-image-seg3-key0", [(0, 3)], 1.0),
    ("one-image-seg5-key3", [(3, 5)], 1.0),
    ("one-image-seg3-key1", [(1, 3)], 1.0),
    ("three-images", [(1, 1), (3, 5), (0, 3)], 1.0),
    ("large-values-clamp", [(1, 3), (3, 1)], 3.0e5),
]


def bf16_list(tensor: torch.Tensor) -> list:
    return tensor.to(torch.float32).tolist()


def fusion_golden(ks) -> tuple[dict, dict]:
    torch.manual_seed(1234)
    module = ks.kisa.KeywordSegFusionModule(text_dim=FUSION_DIM, vision_dim=FUSION_DIM, hidden_dim=FUSION_HIDDEN)
    module.eval()

    # In float32 the forward casts context to bfloat16 and feeds it to a
    # float32 Linear, which fails; record the error to back that claim.
    probe_keys = [torch.randn(1, FUSION_DIM, generator=torch.Generator().manual_seed(1))]
    probe_segs = [torch.randn(2, FUSION_DIM, generator=torch.Generator().manual_seed(2))]
    try:
        with torch.no_grad():
            module(probe_keys, probe_segs)
        float32_error = None
    except RuntimeError as error:
        float32_error = str(error).splitlines()[0]

    module = module.to(torch.bfloat16)
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    generator = torch.Generator().manual_seed(99)
    cases = []
    for name, shapes, scale in FUSION_CASES:
        keys, segs = [], []
        for n_key, n_seg in shapes:
            keys.append((torch.randn(n_key, FUSION_DIM, generator=generator) * scale).to(torch.bfloat16))
            segs.append((torch.randn(n_seg, FUSION_DIM, generator=generator) * scale).to(torch.bfloat16))
        seen_inputs = []
        hook = module.self_attn.register_forward_pre_hook(
            lambda _mod, args: seen_inputs.append(float(args[0].abs().max())))
        with torch.no_grad():
            outputs = module(keys, segs)
        hook.remove()
        cases.append({
            "name": name,
            "key_embeddings": [bf16_list(k) for k in keys],
            "seg_embeddings": [bf16_list(s) for s in segs],
            "outputs": [bf16_list(o) for o in outputs],
            "output_dtype": str(outputs[0].dtype),
            # Largest |value| entering LightSelfAttention, whose first step
            # clamps to [-1e4, 1e4] (ha-erim/KeySeg model/KISA.py:49).
            "self_attn_input_max_abs": seen_inputs,
        })
    golden = {
        "module": "KeywordSegFusionModule (ha-erim/KeySeg model/KISA.py:68-130)",
        "text_dim": FUSION_DIM, "vision_dim": FUSION_DIM, "hidden_dim": FUSION_HIDDEN,
        "upsample_size": module.upsample_size,
        "init": "torch.manual_seed(1234), then the module's default init, then .to(torch.bfloat16)",
        "dtype": "bfloat16",
        "float32_forward_error": float32_error,
        "weights_file": "fusion_weights.safetensors",
        "state_dict_keys": list(state.keys()),
        "cases": cases,
    }
    return golden, state


# ---------------------------------------------------------------------------
# losses.json
# ---------------------------------------------------------------------------

BCE_LOSS_WEIGHT = 2.0  # finetune.py --bce_loss_weight default
DICE_LOSS_WEIGHT = 0.5  # finetune.py --dice_loss_weight default
KEY_LOSS_WEIGHT = 1.0  # finetune.py --key_loss_weight default
TEMPERATURE = 0.07  # finetune.py --temperature default
PAD_TOKEN_ID = 0  # the pad token is <unk>, id 0


def floats(tensor: torch.Tensor) -> list:
    return tensor.detach().to(torch.float64).tolist()


def scalar(tensor: torch.Tensor) -> float | None:
    value = float(tensor.detach())
    return None if math.isnan(value) else value


def mask_loss_case(ks, name: str, mask_counts: list[int], height: int, width: int, gen) -> dict:
    preds, gts = [], []
    for count in mask_counts:
        preds.append(torch.randn(count, height, width, generator=gen) * 4.0)
        gts.append((torch.rand(count, height, width, generator=gen) > 0.6).float())
    if name == "with-empty-and-full-targets":
        gts[0][0].zero_()
        gts[-1][-1].fill_(1.0)
    per_image = []
    # Combination as in ha-erim/KeySeg model/KISA.py:534-544.
    mask_bce_loss = 0
    mask_dice_loss = 0
    num_masks = 0
    for pred_mask, gt_mask in zip(preds, gts):
        bce = ks.kisa.sigmoid_ce_loss(pred_mask, gt_mask, num_masks=gt_mask.shape[0])
        dice = ks.kisa.dice_loss(pred_mask, gt_mask, num_masks=gt_mask.shape[0])
        per_image.append({"sigmoid_ce_loss": scalar(bce), "dice_loss": scalar(dice)})
        mask_bce_loss += bce * gt_mask.shape[0]
        mask_dice_loss += dice * gt_mask.shape[0]
        num_masks += gt_mask.shape[0]
    mask_bce_loss /= (num_masks + 1e-8)
    mask_dice_loss /= (num_masks + 1e-8)
    mask_loss = BCE_LOSS_WEIGHT * mask_bce_loss + DICE_LOSS_WEIGHT * mask_dice_loss
    return {
        "name": name,
        "pred_masks": [floats(p) for p in preds],
        "gt_masks": [floats(g) for g in gts],
        "per_image": per_image,
        "mask_bce_loss": scalar(mask_bce_loss),
        "mask_dice_loss": scalar(mask_dice_loss),
        "mask_loss": scalar(mask_loss),
    }


def keyword_loss_case(name: str, key_counts: list[int], keyword_ids: list[list[int]], gen,
                      vocab: int = 40, table_dim: int = 24, key_dim: int = 16) -> dict:
    key_embedding = [torch.randn(n, key_dim, generator=gen) for n in key_counts]
    table = torch.randn(vocab, table_dim, generator=gen)
    proj = torch.nn.Linear(table_dim, key_dim)
    with torch.no_grad():
        proj.weight.copy_(torch.randn(key_dim, table_dim, generator=gen) * 0.2)
        proj.bias.copy_(torch.randn(key_dim, generator=gen) * 0.1)
        # Restates ha-erim/KeySeg model/KISA.py:506-528 (inline in model_forward).
        keyword_loss = 0
        if len(key_embedding) > 0:
            embedding_table_proj = proj(table)
            key_embedding_flattened = torch.cat(key_embedding, dim=0)
            key_embedding_norm = torch.nn.functional.normalize(key_embedding_flattened, dim=-1)
            table_norm = torch.nn.functional.normalize(embedding_table_proj, dim=-1)
            logits = torch.matmul(key_embedding_norm, table_norm.T) / TEMPERATURE
            target_ids = [ids[0] if len(ids) > 0 else PAD_TOKEN_ID for ids in keyword_ids]
            target_ids = torch.tensor(target_ids, dtype=torch.long, device=logits.device)
            loss_fn = torch.nn.CrossEntropyLoss(ignore_index=PAD_TOKEN_ID)
            keyword_loss = loss_fn(logits, target_ids) * KEY_LOSS_WEIGHT
    value = float(keyword_loss)
    return {
        "name": name,
        "key_embeddings": [floats(k) for k in key_embedding],
        "embedding_table": floats(table),
        "proj_weight": floats(proj.weight),
        "proj_bias": floats(proj.bias),
        "input_keywords_ids_list": keyword_ids,
        "target_ids": target_ids.tolist(),
        "logits": floats(logits),
        "keyword_loss": None if math.isnan(value) else value,
        "keyword_loss_is_nan": math.isnan(value),
    }


def losses_golden(ks) -> dict:
    gen = torch.Generator().manual_seed(7)
    mask_cases = [
        mask_loss_case(ks, "one-image-one-mask", [1], 6, 5, gen),
        mask_loss_case(ks, "three-images-1-3-2-masks", [1, 3, 2], 6, 5, gen),
        mask_loss_case(ks, "with-empty-and-full-targets", [2, 1], 4, 7, gen),
    ]
    key_cases = [
        keyword_loss_case("two-images-mixed-targets", [2, 3], [[5, 9], [0], [], [17], [3, 4, 5]], gen),
        keyword_loss_case("one-image-all-real", [3], [[1], [39], [20, 21]], gen),
        keyword_loss_case("all-targets-pad", [2], [[], [0]], gen),
    ]
    return {
        "mask_losses": {
            "functions": "dice_loss, sigmoid_ce_loss (ha-erim/KeySeg model/KISA.py:218-261)",
            "combination": "ha-erim/KeySeg model/KISA.py:534-544",
            "bce_loss_weight": BCE_LOSS_WEIGHT,
            "dice_loss_weight": DICE_LOSS_WEIGHT,
            "cases": mask_cases,
        },
        "keyword_loss": {
            "lines": "ha-erim/KeySeg model/KISA.py:506-528",
            "temperature": TEMPERATURE,
            "key_loss_weight": KEY_LOSS_WEIGHT,
            "pad_token_id": PAD_TOKEN_ID,
            "note": "keyword_loss null with keyword_loss_is_nan true: every target is the ignored pad id",
            "cases": key_cases,
        },
    }


# ---------------------------------------------------------------------------
# vqa.json: LLaVA-Instruct-150k conversations through LISA's VQADataset and collate
# ---------------------------------------------------------------------------

VQA_FILE = "llava_instruct_tiny"  # llava_dataset/<name>.json, passed as `vqa_data`
VQA_LONG_ANSWER = " ".join(
    ["The red bus waits at the corner while people with umbrellas cross the wet street."] * 45)
# The raw records, in file order. `expect` is what the reference does with each: "ok" (it
# collates), or the stage where it stops ("dataset": VQADataset.__getitem__, "collate":
# collate_fn). Images named here are written unless `image_missing`.
VQA_RECORDS = [
    {"name": "two-rounds-image-first", "expect": "ok", "record": {
        "id": "000000000101", "image": "000000000101.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the bus?"},
            {"from": "gpt", "value": "The bus is red."},
            {"from": "human", "value": "How many people are crossing the street?"},
            {"from": "gpt", "value": "Three people are crossing, two of them with umbrellas."}]}},
    {"name": "image-last", "expect": "ok", "record": {
        "id": "000000000102", "image": "000000000102.jpg", "conversations": [
            {"from": "human", "value": "What is unusual about this picture?\n<image>"},
            {"from": "gpt", "value": "A cat is sitting on top of a parked car."}]}},
    {"name": "image-middle-and-spaces", "expect": "ok", "record": {
        "id": "000000000103", "image": "000000000103.jpg", "conversations": [
            {"from": "human", "value": "  Look at <image> and tell me:\n\n which objects are blue?  "},
            {"from": "gpt", "value": "  The kite and the bench are blue.\n"},
            {"from": "human", "value": "Anything else?\n"},
            {"from": "gpt", "value": "No.\n\nNothing else is blue."}]}},
    {"name": "image-twice-in-one-turn", "expect": "ok", "record": {
        "id": "000000000104", "image": "000000000104.jpg", "conversations": [
            {"from": "human", "value": "<image>\nCompare the left side <image> with the right."},
            {"from": "gpt", "value": "The left side is brighter (about 20% more light)."}]}},
    {"name": "leading-gpt-turn-dropped", "expect": "ok", "record": {
        "id": "000000000105", "image": "000000000105.jpg", "conversations": [
            {"from": "gpt", "value": "Hello! Ask me about the image."},
            {"from": "human", "value": "<image>\nWhere was this photo taken?"},
            {"from": "gpt", "value": "At a train station, judging by the platform."}]}},
    {"name": "image-in-third-turn", "expect": "ok", "record": {
        "id": "000000000106", "image": "000000000106.jpg", "conversations": [
            {"from": "human", "value": "I will show you a photo."},
            {"from": "gpt", "value": "Sure, go ahead."},
            {"from": "human", "value": "Here it is: <image> What animal is this?"},
            {"from": "gpt", "value": "It is a zebra."}]}},
    {"name": "image-in-gpt-turn", "expect": "ok", "record": {
        "id": "000000000107", "image": "000000000107.jpg", "conversations": [
            {"from": "human", "value": "Describe the scene."},
            {"from": "gpt", "value": "Here is what I see <image> a quiet harbour."}]}},
    {"name": "unicode-and-digits", "expect": "ok", "record": {
        "id": "000000000108", "image": "000000000108.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat does the café sign say? Ωmega?"},
            {"from": "gpt", "value": "It says \"Café 1984 – open 7 days\"."},
            {"from": "human", "value": "Is it open on Sunday?"},
            {"from": "gpt", "value": "Yes."},
            {"from": "human", "value": "Thanks!"},
            {"from": "gpt", "value": "You're welcome."}]}},
    {"name": "long-answer", "expect": "ok", "record": {
        "id": "000000000109", "image": "000000000109.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image in detail."},
            {"from": "gpt", "value": VQA_LONG_ANSWER},
            {"from": "human", "value": "Summarise that in one line."},
            {"from": "gpt", "value": "A red bus waits while people cross in the rain."}]}},
    {"name": "empty-gpt-turn-inside", "expect": "ok", "record": {
        "id": "000000000110", "image": "000000000110.jpg", "conversations": [
            {"from": "human", "value": "<image>\nIs there a dog?"},
            {"from": "gpt", "value": ""},
            {"from": "human", "value": "And a cat?"},
            {"from": "gpt", "value": "There is one cat on the sofa."}]}},
    {"name": "no-image-token", "expect": "ok", "record": {
        "id": "000000000111", "image": "000000000111.jpg", "conversations": [
            {"from": "human", "value": "What is the capital of France?"},
            {"from": "gpt", "value": "Paris."}]}},
    {"name": "image-in-two-turns", "expect": "ok", "record": {
        "id": "000000000112", "image": "000000000112.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "A lighthouse."},
            {"from": "human", "value": "And now? <image>"},
            {"from": "gpt", "value": "The same lighthouse at night."}]}},
    {"name": "same-id-second-conversation", "expect": "ok", "record": {
        "id": "000000000101", "image": "000000000101.jpg", "conversations": [
            {"from": "human", "value": "<image>\nIs it raining?"},
            {"from": "gpt", "value": "Yes, the street is wet and people hold umbrellas."}]}},
    {"name": "bad-role", "expect": "dataset", "record": {
        "id": "000000000120", "image": "000000000101.jpg", "conversations": [
            {"from": "system", "value": "<image>\nBe brief."},
            {"from": "gpt", "value": "Ok."}]}},
    {"name": "not-alternating", "expect": "dataset", "record": {
        "id": "000000000121", "image": "000000000101.jpg", "conversations": [
            {"from": "human", "value": "<image>\nFirst question?"},
            {"from": "human", "value": "Second question?"},
            {"from": "gpt", "value": "One answer."}]}},
    {"name": "ends-with-human", "expect": "collate", "record": {
        "id": "000000000122", "image": "000000000101.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "A bus."},
            {"from": "human", "value": "Which colour?"}]}},
    {"name": "empty-human-turn", "expect": "collate", "record": {
        "id": "000000000123", "image": "000000000101.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "A bus."},
            {"from": "human", "value": ""},
            {"from": "gpt", "value": "Still a bus."}]}},
    {"name": "eos-inside-answer", "expect": "collate", "record": {
        "id": "000000000124", "image": "000000000101.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "A bus.</s>And more text."}]}},
    {"name": "only-gpt", "expect": "collate", "record": {
        "id": "000000000125", "image": "000000000101.jpg", "conversations": [
            {"from": "gpt", "value": "<image>\nI am alone."}]}},
    {"name": "no-turns", "expect": "dataset", "record": {
        "id": "000000000126", "image": "000000000101.jpg", "conversations": []}},
    {"name": "image-missing", "expect": "dataset", "image_missing": True, "record": {
        "id": "000000000127", "image": "000000000127.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "Nothing."}]}},
    {"name": "no-image-key", "expect": "dataset", "record": {
        "id": "000000000128", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "Nothing."}]}},
]
# Batches of several records (indices into VQA_RECORDS); single-record batches are added
# for every record the reference collates.
VQA_BATCHES = [
    ("pair-padding", ["two-rounds-image-first", "image-last"]),
    ("pair-truncated", ["image-last", "long-answer"]),
    ("three-mixed-image-branches", ["no-image-token", "image-in-gpt-turn", "unicode-and-digits"]),
]


def write_vqa_dataset(root: Path) -> None:
    folder = root / "llava_dataset"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{VQA_FILE}.json").write_text(json.dumps([r["record"] for r in VQA_RECORDS]), encoding="utf-8")
    names = {r["record"]["image"] for r in VQA_RECORDS if "image" in r["record"] and not r.get("image_missing")}
    for name in sorted(names):
        write_image(root / "coco" / "train2017" / name, width=56, height=44)


def seed_for_index(index: int, count: int) -> int:
    """The first seed for which `random.randint(0, count - 1)` gives `index`: VQADataset
    picks its record with exactly that call (LISA utils/vqa_dataset.py:84)."""
    seed = 0
    while True:
        random.seed(seed)
        if random.randint(0, count - 1) == index:
            return seed
        seed += 1


def vqa_items(dataset_module, root: Path, clip_dir: Path, tokenizer) -> tuple[dict, list[dict]]:
    """Each record through HybridDataset(dataset="vqa") of one checkout: the item it returns,
    or where it stopped and with which exception."""
    hybrid = dataset_module.HybridDataset(
        str(root), tokenizer, str(clip_dir), samples_per_epoch=100, precision="fp32", image_size=IMAGE_SIZE,
        num_classes_per_sample=NUM_CLASSES_PER_SAMPLE, exclude_val=False, dataset="vqa", sample_rate=[1],
        vqa_data=VQA_FILE)
    count = len(VQA_RECORDS)
    items, rejected = {}, []
    for index, spec in enumerate(VQA_RECORDS):
        seed = seed_for_index(index, count)
        random.seed(seed)
        np.random.seed(seed)
        try:
            item = hybrid[0]
        except Exception as error:  # the reference's own failure, recorded as data
            rejected.append({"name": spec["name"], "index": index, "stage": "dataset",
                             "error": type(error).__name__})
            continue
        items[spec["name"]] = (index, seed, item)
    return items, rejected


def vqa_item_record(spec: dict, index: int, seed: int, item: tuple) -> dict:
    return {
        "name": spec["name"], "index": index, "seed": seed, "record": spec["record"],
        "image": Path(item[0]).name,
        "dataset_conversations": list(item[3]),
        "masks_shape": list(item[4].shape),
        "label_values": sorted(set(item[5].flatten().tolist())),
        "questions_are_conversations": list(item[7]) == list(item[3]) and list(item[8]) == list(item[3]),
        "inference": bool(item[9]),
    }


def vqa_golden(lisa, keyseg_checkout: Path, tokenizer, root: Path, clip_dir: Path, seg_id: int, key_id: int) -> dict:
    write_vqa_dataset(root)
    collate = partial(lisa.dataset.collate_fn, tokenizer=tokenizer, conv_type="llava_v1", use_mm_start_end=True,
                      local_rank=0)
    items, rejected = vqa_items(lisa.dataset, root, clip_dir, tokenizer)
    by_name = {spec["name"]: spec for spec in VQA_RECORDS}

    def run(names: list[str]) -> dict:
        # The collate rewrites the conversation list in place: give it copies.
        batch = [items[n][2][:3] + (list(items[n][2][3]),) + items[n][2][4:] for n in names]
        return collate(batch)

    cases = []
    for spec in VQA_RECORDS:
        if spec["name"] not in items:
            continue
        try:
            out = run([spec["name"]])
        except Exception as error:
            rejected.append({"name": spec["name"], "index": items[spec["name"]][0], "stage": "collate",
                             "error": type(error).__name__})
            continue
        cases.append({"name": spec["name"], "items": [vqa_item_record(spec, *items[spec["name"]])],
                      **collate_record(out, tokenizer, seg_id, key_id)})
    for name, names in VQA_BATCHES:
        out = run(names)
        cases.append({"name": name, "items": [vqa_item_record(by_name[n], *items[n]) for n in names],
                      **collate_record(out, tokenizer, seg_id, key_id)})
    rejected.sort(key=lambda r: r["index"])
    for entry in rejected:
        assert by_name[entry["name"]]["expect"] == entry["stage"], entry
    for spec in VQA_RECORDS:
        assert (spec["name"] in {c["name"] for c in cases}) == (spec["expect"] == "ok"), spec["name"]

    # The release ships the same utils/vqa_dataset.py and utils/dataset.py; run its copy too.
    release = import_reference(keyseg_checkout, conversation="model.llava.conversation", dataset="utils.dataset")
    release.conversation.default_conversation = release.conversation.conv_templates["llava_v1"]
    release_items, release_rejected = vqa_items(release.dataset, root, clip_dir, tokenizer)
    assert [r["name"] for r in release_rejected] == [r["name"] for r in rejected if r["stage"] == "dataset"]
    collated = {spec["name"] for spec in VQA_RECORDS if spec["expect"] == "ok"}
    for name, (index, seed, item) in items.items():
        assert list(release_items[name][2][3]) == list(item[3]), name
        if name not in collated:
            continue
        ours = collate_record(run([name]), tokenizer, seg_id, key_id)
        theirs = release.dataset.collate_fn([item[:3] + (list(item[3]),) + item[4:]], tokenizer=tokenizer,
                                            conv_type="llava_v1", use_mm_start_end=True, local_rank=0)
        assert collate_record(theirs, tokenizer, seg_id, key_id) == ours, name
    return {
        "tokenizer": "tiny_llama (loaded as ha-erim/KeySeg finetune.py:195-213 does)",
        "dataset": "dvlab-research/LISA utils/dataset.py HybridDataset(dataset='vqa') over utils/vqa_dataset.py "
                   "VQADataset; collate_fn of utils/dataset.py with conv_type llava_v1, use_mm_start_end True",
        "same_in_release": True,
        "model_max_length": tokenizer.model_max_length,
        "records": [{"name": s["name"], "expect": s["expect"], "image_missing": bool(s.get("image_missing")),
                     "record": s["record"]} for s in VQA_RECORDS],
        "rejected": rejected,
        "cases": cases,
    }


# ---------------------------------------------------------------------------
# semseg.json: label-map and part sources through LISA's SemSegDataset and collate
# ---------------------------------------------------------------------------

SEMSEG_WIDTH, SEMSEG_HEIGHT = 24, 18
SEMSEG_SEEDS = 8  # seeds tried per source; repeated draws are dropped
# Label maps as a background value and rectangles (value, x0, y0, x1, y1) painted in order,
# in the values the files hold (before the reference's per-source remapping).
SEMSEG_LABEL_MAPS = {
    "ade20k": {
        # raw 0 and raw 255 are both ignore after the shift; raw 150 is the last class
        "ADE_train_00000001": (1, [(3, 0, 0, 24, 6), (150, 2, 8, 8, 14), (0, 18, 12, 24, 18), (13, 10, 8, 16, 16)]),
        "ADE_train_00000002": (0, [(5, 0, 0, 12, 18), (21, 12, 4, 20, 10)]),
        "ADE_train_00000003": (2, [(255, 0, 0, 6, 6), (7, 6, 0, 12, 6), (12, 12, 0, 18, 9), (33, 0, 9, 9, 18),
                                   (150, 15, 12, 24, 18)]),
        "ADE_train_00000004": (0, []),  # nothing but ignore: the reference draws again
    },
    "cocostuff": {
        # names, looked up in LISA's class list: "-" classes become ignore
        "000000000201": ("grass", [("person", 2, 2, 10, 16), ("street sign", 12, 2, 16, 6),
                                   ("building-other", 16, 0, 24, 8), (255, 0, 14, 6, 18)]),
        "000000000202": ("wall-other", [("dog", 4, 6, 14, 16), ("tree", 14, 0, 24, 18)]),
        "000000000203": ("wall-brick", [("cup", 3, 3, 9, 9), ("sky", 9, 0, 24, 3)]),
    },
    "mapillary": {
        "mapillary_0001": (5, [(3, 2, 0, 6, 10), (4, 8, 8, 20, 16), (2, 0, 16, 24, 18)]),
        "mapillary_0002": (2, [(0, 10, 2, 14, 6)]),
    },
}
SEMSEG_MAPILLARY_READABLE = ["Bird", "Ground Animal", "Curb", "Traffic Light", "Car", "Unlabeled"]
# COCO-format part files: categories (id, name as in the file) and per image its annotations
# (category id, polygon).
SEMSEG_PART_CATEGORIES = {
    "paco_lvis": [(1, "dog"), (2, "dog:tail"), (3, "bottle_(drink):cap_(bottle)"), (4, "trash_can"),
                  (5, " car_(automobile):wheel "), (6, "mug:handle_(mug)")],
    "pascal_part": [(11, "dog:head"), (12, "person:hand"), (13, "aeroplane:body"), (14, "dog:tail")],
}
SEMSEG_PART_IMAGES = {
    "paco_lvis": {
        301: [(1, [2, 2, 14, 2, 14, 12, 2, 12]), (2, [14, 8, 20, 6, 20, 9]), (3, [18, 12, 22, 12, 22, 16, 18, 16]),
              (5, [2, 13, 8, 13, 8, 17, 2, 17])],
        302: [(4, [4, 4, 12, 4, 12, 14, 4, 14]), (6, [14, 6, 20, 6, 20, 12, 14, 12])],
    },
    "pascal_part": {
        401: [(11, [2, 2, 10, 2, 10, 10, 2, 10]), (12, [12, 4, 18, 4, 18, 8]), (14, [4, 12, 20, 12, 20, 16, 4, 16]),
              (13, [14, 10, 22, 10, 22, 17, 14, 17])],
        402: [(12, [6, 6, 16, 6, 16, 14, 6, 14])],
    },
}
SEMSEG_SOURCES = ("ade20k", "cocostuff", "mapillary", "paco_lvis", "pascal_part")


def semseg_label_map(background, rectangles, lookup) -> np.ndarray:
    label = np.full((SEMSEG_HEIGHT, SEMSEG_WIDTH), lookup(background), dtype=np.uint8)
    for value, x0, y0, x1, y1 in rectangles:
        label[y0:y1, x0:x1] = lookup(value)
    return label


def semseg_part_file(source: str) -> dict:
    images, annotations = [], []
    for image_id, anns in SEMSEG_PART_IMAGES[source].items():
        file_name = f"train2017/{image_id:012d}.jpg" if source == "paco_lvis" else f"2008_{image_id:06d}.jpg"
        images.append({"id": image_id, "file_name": file_name, "width": SEMSEG_WIDTH, "height": SEMSEG_HEIGHT})
        for number, (category_id, polygon) in enumerate(anns):
            xs, ys = polygon[0::2], polygon[1::2]
            annotations.append({"id": image_id * 10 + number, "image_id": image_id, "category_id": category_id,
                                "segmentation": [[float(v) for v in polygon]], "iscrowd": 0,
                                "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], "area": 1.0})
    categories = [{"id": i, "name": name} for i, name in SEMSEG_PART_CATEGORIES[source]]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_semseg_dataset(root: Path, lisa_checkout: Path) -> dict:
    """The five layouts under `root`; returns the files as data (label maps as lists, the JSON
    documents) so the test can write the same files for keyseg."""
    import cv2

    cocostuff_names = [line.strip().split(": ")[-1]
                       for line in (lisa_checkout / "utils/cocostuff_classes.txt").read_text().splitlines()[1:]]

    def cocostuff_value(value):
        return value if isinstance(value, int) else cocostuff_names.index(value)

    folders = {"ade20k": ("ade20k/annotations/training", "ade20k/images/training"),
               "cocostuff": ("cocostuff/train2017", "coco/train2017"),
               "mapillary": ("mapillary/training/v2.0/labels", "mapillary/training/images")}
    files = {}
    for source, maps in SEMSEG_LABEL_MAPS.items():
        label_dir, image_dir = folders[source]
        lookup = cocostuff_value if source == "cocostuff" else int
        files[source] = {"label_dir": label_dir, "image_dir": image_dir, "label_maps": {}}
        for stem, (background, rectangles) in maps.items():
            label = semseg_label_map(background, rectangles, lookup)
            (root / label_dir).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / label_dir / f"{stem}.png"), label)
            write_image(root / image_dir / f"{stem}.jpg", SEMSEG_WIDTH, SEMSEG_HEIGHT)
            files[source]["label_maps"][stem] = label.tolist()
    config = {"labels": [{"readable": name, "name": name.lower().replace(" ", "-")}
                         for name in SEMSEG_MAPILLARY_READABLE]}
    (root / "mapillary" / "config_v2.0.json").write_text(json.dumps(config), encoding="utf-8")
    files["mapillary"]["config_v2.0.json"] = config
    part_files = {"paco_lvis": "vlpart/paco/annotations/paco_lvis_v1_train.json",
                  "pascal_part": "vlpart/pascal_part/train.json"}
    part_images = {"paco_lvis": "coco", "pascal_part": "vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages"}
    for source, relative in part_files.items():
        document = semseg_part_file(source)
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(json.dumps(document), encoding="utf-8")
        for image in document["images"]:
            write_image(root / part_images[source] / image["file_name"], SEMSEG_WIDTH, SEMSEG_HEIGHT)
        files[source] = {"annotation_file": relative, "image_dir": part_images[source], "document": document}
    return files


def mask_rows(mask: torch.Tensor) -> list[str]:
    return ["".join("1" if v else "0" for v in row) for row in mask.bool().tolist()]


def semseg_items(lisa, lisa_checkout: Path, root: Path, clip_dir: Path, tokenizer, source: str) -> list[tuple]:
    """Items of HybridDataset(dataset="sem_seg", sem_seg_data=source), one per seed, with the
    template draws; repeated items (same image, classes and draws) are dropped."""
    cwd = os.getcwd()
    os.chdir(lisa_checkout)  # init_ade20k / init_cocostuff open utils/... relative to the cwd
    try:
        hybrid = lisa.dataset.HybridDataset(
            str(root), tokenizer, str(clip_dir), samples_per_epoch=100, precision="fp32", image_size=IMAGE_SIZE,
            num_classes_per_sample=NUM_CLASSES_PER_SAMPLE, exclude_val=False, dataset="sem_seg", sample_rate=[1],
            sem_seg_data=source)
    finally:
        os.chdir(cwd)
    inner = hybrid.all_datasets[0]
    if source in ("ade20k", "cocostuff", "mapillary"):
        # glob order depends on the file system: sort the (image, label) pairs
        images, labels = inner.data2list[source]
        pairs = sorted(zip(images, labels), key=lambda pair: pair[1])
        inner.data2list[source] = ([p[0] for p in pairs], [p[1] for p in pairs])
    named = {"SHORT_QUESTION_LIST": lisa.utils.SHORT_QUESTION_LIST, "ANSWER_LIST": lisa.utils.ANSWER_LIST}
    items, seen = [], set()
    for seed in range(SEMSEG_SEEDS):
        random.seed(seed)
        np.random.seed(seed)
        with ChoiceRecorder(named) as recorder:
            item = hybrid[0]
        draws = [d for d in recorder.draws if d[0] != "other"]
        key = (Path(item[0]).name, tuple(item[8]), tuple(draws))
        if key in seen:
            continue
        seen.add(key)
        items.append((seed, item, draws))
    return items


def semseg_item_record(source: str, root: Path, seed: int, item: tuple, draws: list) -> dict:
    questions = [d[1] for d in draws if d[0] == "SHORT_QUESTION_LIST"]
    answers = [d[1] for d in draws if d[0] == "ANSWER_LIST"]
    assert [d[0] for d in draws] == ["SHORT_QUESTION_LIST", "ANSWER_LIST"] * len(item[8]), draws
    return {
        "source": source, "seed": seed,
        "image": Path(item[0]).relative_to(root).as_posix(),
        "sampled_classes": [name if isinstance(name, str) else list(name) for name in item[8]],
        "questions": list(item[7]),
        "question_templates": questions, "answer_templates": answers,
        "dataset_conversations": list(item[3]),
        "masks": [mask_rows(mask) for mask in item[4]],
        "label_values": sorted({int(v) for v in item[5].flatten().tolist()}),
    }


def semseg_golden(lisa, lisa_checkout: Path, tokenizer, root: Path, clip_dir: Path, seg_id: int, key_id: int) -> dict:
    files = write_semseg_dataset(root, lisa_checkout)
    collate = partial(lisa.dataset.collate_fn, tokenizer=tokenizer, conv_type="llava_v1", use_mm_start_end=True,
                      local_rank=0)

    def run(entries: list[tuple]) -> dict:
        # The collate rewrites the conversation list in place: give it copies.
        return collate([item[:3] + (list(item[3]),) + item[4:] for _, item, _ in entries])

    cases = []
    for source in SEMSEG_SOURCES:
        entries = semseg_items(lisa, lisa_checkout, root, clip_dir, tokenizer, source)
        for number, entry in enumerate(entries):
            cases.append({"name": f"{source}-{number}", "items": [semseg_item_record(source, root, *entry)],
                          **collate_record(run([entry]), tokenizer, seg_id, key_id)})
        pair = entries[:2]
        cases.append({"name": f"{source}-batch", "items": [semseg_item_record(source, root, *e) for e in pair],
                      **collate_record(run(pair), tokenizer, seg_id, key_id)})
    return {
        "tokenizer": "tiny_llama (loaded as ha-erim/KeySeg finetune.py:195-213 does)",
        "dataset": "dvlab-research/LISA utils/dataset.py HybridDataset(dataset='sem_seg', sem_seg_data=<source>) "
                   "over utils/sem_seg_dataset.py SemSegDataset (byte-identical in ha-erim/KeySeg); collate_fn "
                   "of utils/dataset.py with conv_type llava_v1, use_mm_start_end True",
        "model_max_length": tokenizer.model_max_length,
        "size": [SEMSEG_WIDTH, SEMSEG_HEIGHT],
        "files": files,
        "cases": cases,
    }


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def is_scalar_list(value) -> bool:
    return isinstance(value, list) and all(not isinstance(v, (list, dict)) for v in value)


def to_json(value, indent: int = 0) -> str:
    """JSON with lists of scalars kept on one line, so files stay small and diffable."""
    pad = " " * indent
    inner = " " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        parts = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {to_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(parts) + "\n" + pad + "}"
    if isinstance(value, list):
        if is_scalar_list(value) or all(is_scalar_list(v) for v in value):
            return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        parts = [inner + to_json(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(parts) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def write_golden(path: Path, reference: dict, body: dict) -> None:
    path.write_text(to_json({"reference": reference, **body}) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyseg", type=Path, required=True, help="work tree of ha-erim/KeySeg")
    parser.add_argument("--lisa", type=Path, required=True, help="work tree of dvlab-research/LISA")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--tokenizer", type=Path, default=HERE / "tiny_llama")
    args = parser.parse_args(argv)

    import sentencepiece
    import transformers

    install_torchvision_stand_in()
    lisa = import_lisa(args.lisa.resolve())
    ks = import_keyseg(args.keyseg.resolve())
    for conversation_module in (ks.conversation, lisa.conversation):
        conversation_module.default_conversation = conversation_module.conv_templates["llava_v1"]

    tokenizer_model = (args.tokenizer / "tokenizer.model").read_bytes()
    reference = {
        "ha-erim/KeySeg": git_commit(args.keyseg),
        "dvlab-research/LISA": git_commit(args.lisa),
        "transformers": transformers.__version__,
        "sentencepiece": sentencepiece.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "tokenizer_model_sha256": hashlib.sha256(tokenizer_model).hexdigest(),
    }

    tokenizer = load_tokenizer(args.tokenizer, ks.utils)
    seg_id = tokenizer("[SEG]", add_special_tokens=False).input_ids[0]
    key_id = tokenizer("[KEY]", add_special_tokens=False).input_ids[0]
    base = tokenizer.vocab_size
    assert type(tokenizer).__name__ == "LlamaTokenizer", type(tokenizer)
    assert tokenizer.convert_tokens_to_ids(["<im_patch>", "<im_start>", "<im_end>", "[SEG]", "[KEY]"]) == [
        base, base + 1, base + 2, base + 3, base + 4]
    token_ids = {
        "[SEG]": seg_id, "[KEY]": key_id,
        "<im_start>": tokenizer.convert_tokens_to_ids("<im_start>"),
        "<im_end>": tokenizer.convert_tokens_to_ids("<im_end>"),
        "<im_patch>": tokenizer.convert_tokens_to_ids("<im_patch>"),
        "pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id,
        "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
        "len_tokenizer": len(tokenizer), "sp_vocab_size": tokenizer.vocab_size,
        "model_max_length": tokenizer.model_max_length, "padding_side": tokenizer.padding_side,
    }

    with tempfile.TemporaryDirectory(prefix="keyseg-goldens-") as tmp:
        root = Path(tmp)
        clip_dir = write_fake_dataset(root)
        cwd = os.getcwd()
        os.chdir(tmp)  # REFER prints and resolves paths relative to nothing we care about
        try:
            cases = []
            cases += eval_reasonseg_cases(ks, tokenizer, root, clip_dir, seg_id, key_id)
            cases += eval_refer_release_cases(ks, tokenizer, root, clip_dir, seg_id, key_id)
            cases += lisa_eval_refer_cases(ks, lisa, tokenizer, root, clip_dir, seg_id, key_id)
            cases += train_reasonseg_cases(ks, tokenizer, root, clip_dir, seg_id, key_id)
            cases += train_refer_cases(ks, tokenizer, root, clip_dir, seg_id, key_id)
        finally:
            os.chdir(cwd)
    check_coverage(cases)

    args.out.mkdir(parents=True, exist_ok=True)
    protocols = {}
    for case in cases:
        protocols[case["protocol"]] = protocols.get(case["protocol"], 0) + 1
    write_golden(args.out / "conversations.json", reference, {
        "tokenizer": "tiny_llama (loaded as ha-erim/KeySeg finetune.py:195-213 does)",
        "token_ids": token_ids,
        "cases_per_protocol": protocols,
        "direct": direct_tokenizer_cases(ks, tokenizer),
        "cases": cases,
    })
    write_golden(args.out / "templates.json", reference, templates_golden(ks, lisa))
    fusion, state = fusion_golden(ks)
    write_golden(args.out / "fusion.json", reference, fusion)
    from safetensors.torch import save_file
    save_file(state, str(args.out / "fusion_weights.safetensors"))
    write_golden(args.out / "losses.json", reference, losses_golden(ks))
    # Last, so the draws above are unchanged: it seeds its own and re-imports the release.
    with tempfile.TemporaryDirectory(prefix="keyseg-goldens-vqa-") as tmp:
        root = Path(tmp)
        clip_dir = write_fake_dataset(root)
        vqa = vqa_golden(lisa, args.keyseg.resolve(), tokenizer, root, clip_dir, seg_id, key_id)
    write_golden(args.out / "vqa.json", reference, vqa)
    print("vqa cases:", len(vqa["cases"]), "rejected:", len(vqa["rejected"]))
    # After vqa.json for the same reason: its own seeds, the other files unchanged.
    with tempfile.TemporaryDirectory(prefix="keyseg-goldens-semseg-") as tmp:
        root = Path(tmp)
        clip_dir = write_fake_dataset(root)
        semseg = semseg_golden(lisa, args.lisa.resolve(), tokenizer, root, clip_dir, seg_id, key_id)
    write_golden(args.out / "semseg.json", reference, semseg)
    print("semseg cases:", len(semseg["cases"]))
    print("cases per protocol:", protocols)
    return 0


if __name__ == "__main__":
    sys.exit(main())
