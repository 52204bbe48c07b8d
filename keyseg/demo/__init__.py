"""Deterministic synthetic data in native ReasonSeg and refCOCO (REFER) layouts.

Library code only: no CLI, no global state. ``keyseg demo-data`` is the command that
writes a whole demo data dir.
"""

from .reasonseg import SPECIALS, Special, make_reasonseg_sample, split_sizes, write_reasonseg
from .refcoco import CATEGORIES, make_refcoco_image, refcoco_split_sizes, write_refcoco
from .scenes import COLORS, KINDS, PALETTE, Shape, seeded_rng
from .writers import atomic_write_bytes, encode_jpeg, write_jpeg, write_json, write_pickle

__all__ = [
    "CATEGORIES",
    "COLORS",
    "KINDS",
    "PALETTE",
    "SPECIALS",
    "Shape",
    "Special",
    "atomic_write_bytes",
    "encode_jpeg",
    "make_reasonseg_sample",
    "make_refcoco_image",
    "refcoco_split_sizes",
    "seeded_rng",
    "split_sizes",
    "write_jpeg",
    "write_json",
    "write_pickle",
    "write_reasonseg",
    "write_refcoco",
]
