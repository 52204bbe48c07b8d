"""One shard sample (`<key>.jpg` + `<key>.json`) -> one model-ready training/eval sample.

Query selection, as LISA does it:
  train: a sample with several targets (refCOCO images) gets up to `num_queries` distinct
         targets at random, one random text each; a sample with a single target (ReasonSeg)
         gets up to `num_queries` distinct texts of that target, every query reusing its
         mask. With probability `conversation.explanatory` one query whose target has an
         explanatory answer becomes the explanatory query (see `conversation`).
  eval:  every target once, with its first text; no randomness at all.
Keywords: refer targets (source starting with "refcoco") use the chosen expression itself;
other sources use the target's mined `keyword` (may be None).

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

from keyseg.data.conversation import ConversationConfig, can_explain, eval_pair, explanatory_pair, train_pair
from keyseg.data.transforms import ClipInput, SamInput, check_view_size, decode_rgb
from keyseg.images import ImageError
from keyseg.shards.samples import BadSampleError, decode_mask, read_sample_json

MODES = ("train", "eval")


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


def is_refer_source(source: str) -> bool:
    return source.startswith("refcoco")


def parse_sample_json(data: bytes) -> dict:
    """The shard json, checked by the format's `check_sample_json` (CorruptSampleError if bad)."""
    try:
        return read_sample_json(data)
    except BadSampleError as error:
        raise CorruptSampleError(str(error)) from None


def choose_queries(targets: list[dict], num_queries: int, rng: random.Random) -> list[tuple[int, int]]:
    """(target index, text index) per train query; see the module docstring."""
    if len(targets) == 1:
        texts = targets[0]["texts"]
        return [(0, index) for index in rng.sample(range(len(texts)), min(num_queries, len(texts)))]
    chosen = rng.sample(range(len(targets)), min(num_queries, len(targets)))
    return [(index, rng.randrange(len(targets[index]["texts"]))) for index in chosen]


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

        targets = document["targets"]
        if config.mode == "eval":
            queries = [(index, 0) for index in range(len(targets))]
        else:
            rng = rng or random.Random(f"{config.seed}/{key}")
            queries = choose_queries(targets, config.num_queries, rng)
        texts, is_sentence, keywords, questions, answers = [], [], [], [], []
        explained = self._pick_explanatory(targets, queries, rng)
        for position, (target_index, text_index) in enumerate(queries):
            target = targets[target_index]
            text, sentence = target["texts"][text_index], target["is_sentence"]
            keyword = text if is_refer_source(document["source"]) else target["keyword"]
            if config.mode == "eval":
                question, answer = eval_pair(text, sentence, config.conversation)
            elif position == explained:
                question, answer = explanatory_pair(target["explanatory_query"], target["explanatory"], keyword,
                                                    config.conversation, rng)
                text, sentence = target["explanatory_query"], True
            else:
                question, answer = train_pair(text, sentence, keyword, config.conversation, rng)
            texts.append(text)
            is_sentence.append(sentence)
            keywords.append(keyword)
            questions.append(question)
            answers.append(answer)

        masks = self._masks(targets, [target_index for target_index, _ in queries], height, width)
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
            "questions": questions,
            "answers": answers,
            "keywords": keywords,
            "texts": texts,
            "is_sentence": is_sentence,
            "target_indices": [target_index for target_index, _ in queries],
            "resize": resize,
            "original_size": (height, width),
        }

    def _pick_explanatory(self, targets: list[dict], queries: list[tuple[int, int]],
                          rng: random.Random | None) -> int | None:
        """Position of the query asked as its target's explanatory query, if any (train only).

        At most one per image: several queries of one ReasonSeg target would otherwise all
        become the same explanatory question.
        """
        probability = self.config.conversation.explanatory
        if self.config.mode == "eval" or probability <= 0.0:
            return None
        for position, (target_index, _) in enumerate(queries):
            target = targets[target_index]
            if can_explain(target["explanatory"], target["explanatory_query"]):
                return position if rng.random() < probability else None
        return None

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
    """One-off `SampleDecoder(config)(raw, rng)`; pipelines hold a decoder instead."""
    return SampleDecoder(config)(raw, rng)
