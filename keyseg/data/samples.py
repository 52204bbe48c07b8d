"""One shard sample (`<key>.jpg` + `<key>.json`) -> one model-ready training/eval sample.

Query selection follows the reference datasets (docs/fidelity.md, "Sampling"):
  train, refer sources (refCOCO family): every sentence of every ref of the image is a
         candidate; up to `num_queries` distinct sentences are drawn (two may describe the
         same object). The keyword of each query is its sentence as written.
  train, ReasonSeg: up to `num_queries` distinct texts of the image's one target, every
         query reusing its mask; the conversation choice (bare query, template, or query +
         explanatory request) is drawn once per image (`keyseg.data.conversation`).
  eval:  ReasonSeg asks the first text; refer sources ask every sentence of every ref
         ("lisa" protocol) or the first sentence of each ref ("release"); no randomness.
  VQA (a sample with `conversations`, LLaVA-Instruct): one query, the whole multi-turn
         conversation as LISA's VQADataset and collate build it (`vqa_conversation`:
         cleaned turns, llava_v1 prompt, <image> wrapped in <im_start>/<im_end> as in every
         other query); no masks (a (0, H, W) tensor), no keyword, so the row trains the
         language loss only (LISA utils/vqa_dataset.py:96-127, utils/dataset.py:66-75).
The conversation text of every query is built here (`keyseg.data.conversation`); the
tokenizer only encodes it.

Anything wrong with a sample's bytes raises `CorruptSampleError` with the reason; the
loader logs, counts and skips those. Checks, cheapest first and before any pixel is
decoded: both members present; the JSON parses and passes `check_sample_json` (the shard
format's one schema check: types, image size within the pixel bound, mask RLEs of the
image's size); the json id equals the sample key (a tar member name cannot smuggle a path
into a key); the image shape suits the SAM and CLIP views; the JPEG header is within the
pixel bound; OpenCV decodes it to the json's width/height.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from keyseg.data.conversation import (IMAGE_PREFIX, IMAGE_TOKEN, ConversationConfig, eval_query, reasonseg_choice,
                                      reasonseg_train_query, refer_train_query, vqa_conversation, vqa_turn_problem,
                                      vqa_turns)
from keyseg.data.semantic_queries import draw_targets, is_semantic_source, semantic_train_query
from keyseg.data.transforms import ClipInput, SamInput, check_view_size, decode_rgb
from keyseg.formats.refer import is_refer_source
from keyseg.images import ImageError
from keyseg.model.tokens import KEY_TOKEN, SEG_TOKEN
from keyseg.shards.samples import BadSampleError, decode_mask, read_sample_json

MODES = ("train", "eval")
# Strings the tokenizer turns into tokens that change what a VQA conversation means: "</s>"
# ends a round, "<unk>" is LLaMA's pad id, [SEG] would ask for a mask the sample does not
# have (the model refuses a batch whose [SEG] count differs from its mask count), [KEY] for
# a keyword. keyseg's LLaVA-Instruct reader refuses the same strings.
VQA_RESERVED_STRINGS = ("</s>", "<unk>", SEG_TOKEN, KEY_TOKEN)


class CorruptSampleError(ValueError):
    """A sample that cannot be used; the message is the reason."""


@dataclass(frozen=True)
class SampleConfig:
    sam_size: int = 1024  # SAM input side L (1024 for SAM ViT-H; smaller for tiny test models)
    clip_size: int = 224  # CLIP input side S (224 for CLIP ViT-L/14; 336 for the 336px variant)
    num_queries: int = 3  # train: queries per image (LISA's num_classes_per_sample)
    mode: str = "train"  # "train" (random queries/templates) or "eval" (deterministic)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    seed: int = 0  # used when no rng is passed: then the rng is seeded by (seed, key)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.num_queries < 1 or self.sam_size < 1 or self.clip_size < 1:
            raise ValueError("num_queries, sam_size and clip_size must be positive")


def parse_sample_json(data: bytes) -> dict:
    """The shard json, checked by the format's `check_sample_json` (CorruptSampleError if bad)."""
    try:
        return read_sample_json(data)
    except BadSampleError as error:
        raise CorruptSampleError(str(error)) from None


def vqa_problem(turns: list[dict]) -> str | None:
    """Why the turns of a VQA sample cannot be trained on as the reference trains them, or
    None: a reserved string in a turn, turns the reference cannot build a prompt from
    (`vqa_turn_problem`), or a prompt without exactly one turn holding <image> (the model
    reads one image per row)."""
    for index, turn in enumerate(turns):
        for reserved in VQA_RESERVED_STRINGS:
            if reserved in turn["value"]:
                return f"turn {index} holds {reserved!r}"
    problem = vqa_turn_problem(turns)
    if problem is not None:
        return problem[1]
    with_image = sum(IMAGE_TOKEN in turn["value"] for turn in vqa_turns(turns))
    if with_image != 1:
        return f"{with_image} turns of the prompt hold {IMAGE_TOKEN}, expected exactly one"
    return None


def choose_queries(targets: list[dict], num_queries: int, refer: bool, rng: random.Random) -> list[tuple[int, int]]:
    """(target index, text index) per train query; see the module docstring."""
    candidates = [(index, text) for index, target in enumerate(targets) for text in range(len(target["texts"]))]
    if not refer:
        candidates = [(0, text) for text in range(len(targets[0]["texts"]))]
    return rng.sample(candidates, min(num_queries, len(candidates)))


def eval_queries(targets: list[dict], refer: bool, refer_protocol: str) -> list[tuple[int, int]]:
    """(target index, text index) of every query an evaluation asks about this image."""
    if refer and refer_protocol == "lisa":
        return [(index, text) for index, target in enumerate(targets) for text in range(len(target["texts"]))]
    return [(index, 0) for index in range(len(targets))]


def prediction_name(key: str, target_index: int, text_index: int, per_sentence: bool) -> str:
    """File stem of one query's predicted mask: `<key>_<target>` or, when every sentence of a
    target is scored, `<key>_<target>_<sentence>`."""
    return f"{key}_{target_index}_{text_index}" if per_sentence else f"{key}_{target_index}"


class SampleDecoder:
    """Turns raw webdataset samples into model-ready dicts; holds the image transforms."""

    def __init__(self, config: SampleConfig):
        self.config = config
        self.sam = SamInput(config.sam_size)
        self.clip = ClipInput(config.clip_size)

    def __call__(self, raw: dict, rng: random.Random | None = None) -> dict:
        config = self.config
        if "json" not in raw or "jpg" not in raw:
            raise CorruptSampleError(f"missing member: has {sorted(k for k in raw if not k.startswith('__'))}")
        document = parse_sample_json(raw["json"])
        key = raw.get("__key__", document["id"])
        if key != document["id"]:
            # Keys name output files (evaluate's predictions): only the checked plain id is trusted.
            raise CorruptSampleError(f"key mismatch: json id {document['id']!r} differs from the key {key!r}")
        try:
            check_view_size(document["height"], document["width"], config.sam_size)
        except ValueError as error:
            raise CorruptSampleError(f"unusable image shape: {error}") from None
        try:
            image = decode_rgb(raw["jpg"])  # refuses an image over the pixel bound from its header
        except (ImageError, cv2.error) as error:
            raise CorruptSampleError(f"undecodable jpg: {error}") from None
        height, width = image.shape[:2]
        if (height, width) != (document["height"], document["width"]):
            raise CorruptSampleError(f"image size mismatch: image is {width}x{height}, "
                                     f"json says {document['width']}x{document['height']}")

        if document["conversations"] is not None:
            return self._vqa_sample(raw, document, key, image)
        targets = document["targets"]
        refer = is_refer_source(document["source"])
        semantic = is_semantic_source(document["source"])
        conversation = config.conversation
        if semantic:
            refer = False
            queries, built = self._semantic_queries(targets, rng or random.Random(f"{config.seed}/{key}"))
        elif config.mode == "eval":
            queries = eval_queries(targets, refer, conversation.refer_protocol)
            bare = refer and conversation.refer_protocol == "release"
            built = [eval_query(self._eval_text(targets[t]["texts"][i], refer), targets[t]["is_sentence"] and not refer,
                                conversation, bare) for t, i in queries]
        else:
            rng = rng or random.Random(f"{config.seed}/{key}")
            queries = choose_queries(targets, config.num_queries, refer, rng)
            built = self._train_conversations(targets, queries, refer, rng)
        texts = [targets[t]["texts"][i] for t, i in queries]
        is_sentence = [bool(targets[t]["is_sentence"]) for t, _ in queries]
        keywords = [query.keyword for query in built]
        if config.mode == "eval" and not semantic:
            # The keyword each eval query is judged against (never shown to the model).
            keywords = [texts[n] if refer else targets[t]["keyword"] for n, (t, _) in enumerate(queries)]

        masks = self._masks(targets, [target_index for target_index, _ in queries], height, width)
        return self._sample(raw, document, key, image, masks, {
            "questions": [query.question for query in built],
            "conversations": [query.conversation for query in built],
            "keywords": keywords,
            "texts": texts,
            "is_sentence": is_sentence,
            "target_indices": [target_index for target_index, _ in queries],
            "text_indices": [text_index for _, text_index in queries],
            "per_sentence": config.mode == "eval" and refer and conversation.refer_protocol == "lisa",
        })

    def _sample(self, raw: dict, document: dict, key: str, image: np.ndarray, masks: torch.Tensor,
                queries: dict) -> dict:
        image_sam, resize = self.sam(image)
        return {
            "key": key,
            "url": raw.get("__url__"),
            "id": document["id"],
            "source": document["source"],
            "split": document["split"],
            "image_sam": image_sam,
            "image_clip": self.clip(image),
            "masks": masks,
            **queries,
            "resize": resize,
            "original_size": image.shape[:2],
        }

    def _vqa_sample(self, raw: dict, document: dict, key: str, image: np.ndarray) -> dict:
        """One query, the whole conversation (see the module docstring); the same in train and
        eval, as the reference draws nothing inside a VQA record. Its question and text are
        the first user message."""
        turns = document["conversations"]
        problem = vqa_problem(turns)
        if problem is not None:
            raise CorruptSampleError(f"bad conversation: {problem}")
        first = vqa_turns(turns)[0]["value"]
        height, width = image.shape[:2]
        return self._sample(raw, document, key, image, torch.zeros((0, height, width), dtype=torch.uint8), {
            "questions": [first],
            "conversations": [vqa_conversation(turns)],
            "keywords": [None],
            "texts": [first.removeprefix(IMAGE_PREFIX)],
            "is_sentence": [True],
            "target_indices": [None],  # no target: nothing to score
            "text_indices": [None],
            "per_sentence": False,
        })

    def _semantic_queries(self, targets: list[dict], rng: random.Random) -> tuple[list[tuple[int, int]], list]:
        """Up to `num_queries` distinct classes, one of each one's names, as LISA's sem_seg
        loader draws them (keyseg.data.semantic_queries); evaluation asks the same way, as
        the reference never evaluates these sources."""
        drawn = draw_targets(len(targets), rng, self.config.num_queries)
        queries = [(index, rng.randrange(len(targets[index]["texts"]))) for index in drawn]
        return queries, [semantic_train_query(targets[t]["texts"][i], rng) for t, i in queries]

    @staticmethod
    def _eval_text(text: str, refer: bool) -> str:
        # The reference's refer evaluation lower-cases the sentences; ReasonSeg keeps its text.
        return text.strip().lower() if refer else text.strip()

    def _train_conversations(self, targets: list[dict], queries: list[tuple[int, int]], refer: bool,
                             rng: random.Random) -> list:
        conversation = self.config.conversation
        if refer:
            return [refer_train_query(targets[t]["texts"][i], conversation.use_keyword, rng) for t, i in queries]
        target = targets[0]
        has_entry = target["keyword"] is not None or target["explanatory"] is not None
        choice = reasonseg_choice(has_entry, conversation, rng)
        return [reasonseg_train_query(target["texts"][i], bool(target["is_sentence"]), target["keyword"], has_entry,
                                      choice, conversation, rng) for _, i in queries]

    @staticmethod
    def _masks(targets: list[dict], indices: list[int], height: int, width: int) -> torch.Tensor:
        decoded: dict[int, np.ndarray] = {}  # ReasonSeg queries share one target's mask
        for index in indices:
            if index in decoded:
                continue
            try:
                mask = decode_mask(targets[index]["mask"])
            except ValueError as error:  # checked by check_sample_json already: belt and braces
                raise CorruptSampleError(f"undecodable mask: target {index} ({error})") from None
            if mask.shape != (height, width):
                raise CorruptSampleError(f"mask size mismatch: target {index} is {mask.shape[1]}x{mask.shape[0]}, "
                                         f"the image {width}x{height}")
            decoded[index] = mask
        return torch.from_numpy(np.stack([decoded[index] for index in indices]))


def decode_sample(raw: dict, config: SampleConfig, rng: random.Random | None = None) -> dict:
    """One-off `SampleDecoder(config)(raw, rng)`; streams hold a decoder instead."""
    return SampleDecoder(config)(raw, rng)
