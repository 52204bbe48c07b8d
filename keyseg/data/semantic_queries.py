"""Training queries for a semantic-segmentation image, drawn as LISA's `sem_seg` loader
draws them (dvlab-research/LISA@3cb2d43 utils/sem_seg_dataset.py:188-324; the KeySeg
release ships the same file).

A semantic image reaches the loader as one shard target per class present (label-map
sources) or per annotation (PACO-LVIS, PASCAL-Part), its texts being every way the
reference names it (`keyseg.sources.semantic.label_map_targets`,
`keyseg.sources.parts.part_phrases`).
Per image, up to `num_classes_per_sample` distinct targets are drawn without
replacement, one of each target's texts uniformly, and each becomes one short question
from the reference's list, with the name lower-cased, and one answer from its answer
list. These conversations carry no [KEY]: the reference gives sem_seg samples no keyword.

An image with no usable class or annotation makes the reference retry with image 0
(:218, :265); `keyseg prepare` leaves such an image out (a warning row).
"""

from __future__ import annotations

import random

from keyseg.data.conversation import ANSWERS, SHORT_QUESTIONS, Query, conversation, with_image_markers

NUM_CLASSES_PER_SAMPLE = 3  # LISA train_ds.py:87, --num_classes_per_sample
SEMANTIC_SOURCES = ("ade20k", "cocostuff", "mapillary", "paco_lvis", "pascal_part")


def is_semantic_source(source: str) -> bool:
    return source in SEMANTIC_SOURCES


def draw_targets(count: int, rng: random.Random, num_classes_per_sample: int = NUM_CLASSES_PER_SAMPLE) -> list[int]:
    """Indices of up to `num_classes_per_sample` distinct targets (all when fewer; :219-225, :268-273)."""
    return rng.sample(range(count), num_classes_per_sample) if count >= num_classes_per_sample else list(range(count))


def semantic_train_query(name: str, rng: random.Random) -> Query:
    """One class's question and answer: a short template with the name lower-cased (:281-285)."""
    question = rng.choice(SHORT_QUESTIONS).format(class_name=name.lower())
    return Query(question, with_image_markers(conversation(question, rng.choice(ANSWERS))), None)
