"""What a semantic-segmentation source yields per image, whatever its native layout.

Two kinds, as the reference's `sem_seg` loader treats them (LISA utils/sem_seg_dataset.py):

- label-map sources (ADE20K, COCO-Stuff, Mapillary Vistas): one label map per image,
  already in the reference's convention (value = index into the source's class list,
  255 = ignore), and the classes present in it, in ascending label order;
- annotation sources (PACO-LVIS, PASCAL-Part): COCO-format annotations, one mask per
  annotation, each with its category as the reference names it (an object, or an
  (object, part) pair that the question phrases at sampling time).

Readers in `keyseg/sources/semseg.py` and `keyseg/sources/parts.py` produce these; they
compute only (no files written).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SemanticClass:
    label: int  # value in the label map
    name: str  # the class name as the reference puts it in a question


@dataclass(frozen=True)
class PartCategory:
    object: str
    part: str | None = None  # None: a whole-object category


@dataclass
class LabelMapImage:
    """One image of a label-map source."""

    source: str  # "ade20k", "cocostuff", "mapillary"
    id: str  # plain name, unique within the source
    image: str  # path relative to the data dir
    label: str  # label file, relative to the data dir
    width: int
    height: int
    label_map: np.ndarray | None = None  # uint8 HxW in the reference's convention (None until read)
    classes: list[SemanticClass] = field(default_factory=list)  # present, ascending label, ignore excluded


@dataclass
class AnnotatedImage:
    """One image of an annotation source: one mask per annotation, in the file's order."""

    source: str  # "paco_lvis", "pascal_part"
    id: str
    image: str  # path relative to the data dir
    width: int
    height: int
    categories: list[PartCategory] = field(default_factory=list)  # one per annotation
    masks: list[np.ndarray] = field(default_factory=list)  # bool HxW, one per annotation


def label_map_targets(class_names: list[str], present: list[int]) -> list[tuple[str, int]]:
    """(name, label whose pixels are the mask) per present label, ignore excluded.

    The label is `class_names.index(name)` (LISA utils/sem_seg_dataset.py:290, :323): the
    first label with that name, which differs from the present label when the class list
    repeats a name."""
    return [(class_names[label], class_names.index(class_names[label])) for label in present]
