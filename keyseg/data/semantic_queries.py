"""Training queries for a semantic-segmentation image, drawn as LISA's `sem_seg` loader
draws them (dvlab-research/LISA@3cb2d43 utils/sem_seg_dataset.py:188-324; the KeySeg
release ships the same file).

Per image, up to `num_classes_per_sample` distinct classes (label-map sources) or
annotations (PACO-LVIS, PASCAL-Part) are drawn without replacement; each becomes one
short question from the reference's list, with the class name lower-cased, and one
answer from its answer list. A part category is named "{object} {part}" or "the {part}
of the {object}", each with probability 1/2 (:230). These conversations carry no [KEY]: the
reference gives sem_seg samples no keyword.

Two reference details are kept on purpose:
- a label-map class's mask is `label == class_names.index(name)` (:290, :323), the
  *first* label with that name, which differs from the drawn label when the class list
  repeats a name;
- an image with no usable class or annotation makes the reference retry with image 0
  (:218, :265); that choice belongs to the sampler that calls these functions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from keyseg.data.conversation import ANSWERS, SHORT_QUESTIONS, conversation, with_image_markers
from keyseg.sources.semantic import PartCategory

NUM_CLASSES_PER_SAMPLE = 3  # LISA train_ds.py:87, --num_classes_per_sample


@dataclass(frozen=True)
class SemanticQuery:
    name: str  # the class as drawn (before lower-casing)
    question: str  # the human message, with "<image>\n"
    conversation: str  # the full text the tokenizer sees
    label: int | None = None  # label-map sources: the label whose pixels are the mask
    annotation: int | None = None  # annotation sources: the index of the annotation


def part_name(category: PartCategory, rng: random.Random) -> str:
    """How the reference names an annotation's category in a question."""
    if category.part is None:
        return category.object
    if rng.random() < 0.5:
        return f"{category.object} {category.part}"
    return f"the {category.part} of the {category.object}"


def _draw(count: int, wanted: int, rng: random.Random) -> list[int]:
    """Indices of `wanted` distinct items out of `count` (all of them when fewer)."""
    return rng.sample(range(count), wanted) if count >= wanted else list(range(count))


def _query(name: str, rng: random.Random, **where) -> SemanticQuery:
    question = rng.choice(SHORT_QUESTIONS).format(class_name=name.lower())
    text = conversation(question, rng.choice(ANSWERS))
    return SemanticQuery(name=name, question=question, conversation=with_image_markers(text), **where)


def label_map_queries(class_names: list[str], present: list[int], rng: random.Random,
                      num_classes_per_sample: int = NUM_CLASSES_PER_SAMPLE) -> list[SemanticQuery]:
    """Queries for an image whose label map holds the labels `present` (ignore excluded)."""
    names = [class_names[label] for label in present]
    drawn = [names[index] for index in _draw(len(names), num_classes_per_sample, rng)]
    queries = []
    for name in drawn:
        queries.append(_query(name, rng, label=class_names.index(name)))
    return queries


def annotation_queries(categories: list[PartCategory], rng: random.Random,
                       num_classes_per_sample: int = NUM_CLASSES_PER_SAMPLE) -> list[SemanticQuery]:
    """Queries for an image with one category per annotation (masks follow the annotation)."""
    drawn = _draw(len(categories), num_classes_per_sample, rng)
    names = [part_name(categories[index], rng) for index in drawn]
    return [_query(name, rng, annotation=index) for index, name in zip(drawn, names)]
