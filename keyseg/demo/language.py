"""Referring phrases, reasoning queries and explanations for demo shapes."""

from __future__ import annotations

from typing import Optional

import numpy as np

# Every property is true for exactly one shape kind among the six, so a
# property query is unambiguous when the target kind occurs only as target.
# Each entry is a third-person singular verb phrase ("it <prop>").
PROPERTIES: dict[str, tuple[str, ...]] = {
    "circle": (
        "has no corners at all",
        "could roll down a slope like a ball",
        "looks like a coin or a wheel",
        "could serve as a wheel for a toy car",
    ),
    "square": (
        "has four equal sides and four right angles",
        "looks like a single tile of a chessboard",
        "could be one face of a dice",
    ),
    "triangle": (
        "has exactly three corners",
        "looks like a slice of pizza or a warning sign",
        "could be the roof in a child's drawing of a house",
    ),
    "star": (
        "has five sharp points",
        "could sit on top of a christmas tree",
        "looks like a sheriff's badge",
    ),
    "hexagon": (
        "has exactly six sides",
        "looks like a single cell of a honeycomb",
        "resembles the nut you screw onto a bolt",
    ),
    "diamond": (
        "has four equal sides but no right angles",
        "resembles the diamond suit on a playing card",
        "looks like a square standing on one of its corners and squeezed from the sides",
    ),
}

SENTENCE_ONE: tuple[str, ...] = (
    "Which shape in this picture {prop}? Please segment it.",
    "Look at the picture carefully: which object {prop}? Please output its segmentation mask.",
    "There are several shapes in this image. Find the one that {prop} and segment it.",
    "Can you segment the shape that {prop} in this image?",
    "What in this picture {prop}? Please respond with the segmentation mask.",
    "Imagine describing this scene to a child: point out the shape that {prop} by segmenting it.",
)
SENTENCE_MANY: tuple[str, ...] = (
    "Please segment every shape in this picture that {prop}.",
    "Highlight each shape in the image that {prop}; there may be more than one.",
    "Is there any shape here that {prop}? Segment every such shape.",
    "Segment every object in the scene that {prop}, not just one of them.",
    "Find each shape that {prop} and output a segmentation mask covering all of them.",
)
# Used for the cp1252-encoded sample (contains U+2019, byte 0x92 in cp1252).
SENTENCE_ONE_NONASCII = "What\u2019s the shape in this picture that {prop}? Please segment it."
SENTENCE_MANY_NONASCII = "Let\u2019s find every shape that {prop}: please segment them all."

# Short ReasonSeg queries and refCOCO referring expressions share these templates, and
# they start with the colour: a refCOCO sample's keyword is its whole expression and the
# keyword loss aligns [KEY] with the keyword's first sub-token, so the first word must
# name the target, not "the" (docs/demo.md).
PHRASE_ONE: tuple[str, ...] = (
    "{c} {s}{k}",
    "{c} {s}{k} {p}",
    "{c} coloured {s}{k}",
    "{c} {s}{k} that is {p}",
)
PHRASE_MANY: tuple[str, ...] = (
    "{c} {k}s",
    "{c} {k}s, both of them",
    "{c} {k}s, all of them",
    "{c} {k}s, the pair of them",
)


def _size_word(rng: np.random.Generator, size_word: str, need_size: bool) -> str:
    if need_size or rng.random() < 0.3:
        return size_word + " "
    return ""


def reason_texts(
    rng: np.random.Generator,
    count: int,
    *,
    kind: str,
    color: str,
    size_word: str,
    position: str,
    many: bool,
    is_sentence: bool,
    need_size: bool,
    nonascii_first: bool = False,
) -> list[tuple[str, Optional[str]]]:
    """``count`` distinct texts for one target, each with the property it uses (or None)."""
    out: list[tuple[str, Optional[str]]] = []
    if is_sentence:
        templates = SENTENCE_MANY if many else SENTENCE_ONE
        props = PROPERTIES[kind]
        combos = [(t, p) for t in templates for p in props]
        order = rng.permutation(len(combos))
        if nonascii_first:
            prop = props[int(rng.integers(0, len(props)))]
            out.append(((SENTENCE_MANY_NONASCII if many else SENTENCE_ONE_NONASCII).format(prop=prop), prop))
        for j in order:
            if len(out) >= count:
                break
            t, p = combos[int(j)]
            out.append((t.format(prop=p), p))
        return out
    templates = PHRASE_MANY if many else PHRASE_ONE
    for j in rng.permutation(len(templates))[:count]:
        s = "" if many else _size_word(rng, size_word, need_size)
        text = templates[int(j)].format(s=s, c=color, k=kind, p=position)
        if nonascii_first and not out:
            text = text + " \u2013 that\u2019s the one"
        out.append((text, None))
    return out


def explanation(
    *, kind: str, color: str, size_word: str, position: str, many: bool, need_size: bool, prop: Optional[str]
) -> str:
    """One sentence answering the query and explaining why."""
    if many:
        if prop is not None:
            return f"The two {color} {kind}s are the answer, because each of them {prop}."
        return f"The two {color} {kind}s are the answer: they are the only {color} {kind}s in the picture."
    desc = f"{size_word} {color} {kind} {position}"
    if prop is not None:
        return f"The {desc} is the answer, because it {prop}."
    only = f"{size_word} {color} {kind}" if need_size else f"{color} {kind}"
    return f"The {desc} is the shape being referred to: it is the only {only} in the picture."


def refer_sentences(
    rng: np.random.Generator, count: int, *, kind: str, color: str, size_word: str, position: str, need_size: bool
) -> list[str]:
    """``count`` distinct raw referring expressions from PHRASE_ONE (mixed case, maybe a trailing period)."""
    out: list[str] = []
    for j in rng.permutation(len(PHRASE_ONE)):
        if len(out) >= count:
            break
        s = _size_word(rng, size_word, need_size)
        raw = PHRASE_ONE[int(j)].format(s=s, c=color, k=kind, p=position)
        style = int(rng.integers(0, 3))
        if style == 1:
            raw = raw[:1].upper() + raw[1:]
        elif style == 2:
            raw = raw[:1].upper() + raw[1:] + "."
        if raw not in out:
            out.append(raw)
    return out


def normalize_sentence(raw: str) -> str:
    """REFER-style ``sent``: lower case, punctuation stripped, single spaces."""
    keep = "".join(ch if ch.isalnum() or ch in " '" else " " for ch in raw.lower())
    return " ".join(keep.split())
