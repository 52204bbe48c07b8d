"""Synthetic LLaVA-Instruct-150k in its native layout (llava_dataset/*.json over coco/train2017).

Conversations talk about the shapes drawn in each image, so answers are true of the
picture. The awkward cases a reader must handle are always present: multi-turn
conversations, "<image>" after the question, a conversation that starts with an assistant
turn (the reference drops it), two conversations about one image (repeated id), a record
whose image is missing, and a malformed record (two user turns in a row).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .scenes import COLORS, KINDS, SIZES, Shape, ShapeSpec, place_shapes, render, seeded_rng, shape_position
from .writers import write_jpeg, write_json

STREAM = 20
IMAGE_ID_OFFSET = 900000  # demo COCO ids, clear of the other demo users of coco/train2017
LLAVA_JSON = Path("llava_dataset") / "llava_instruct_150k.json"
IMAGE_DIR = Path("coco") / "train2017"
NAME_RE = re.compile(r"^0000009\d{5}\.jpg$")


def image_name(index: int) -> str:
    return f"{IMAGE_ID_OFFSET + index:012d}.jpg"


def _shapes(seed: int, index: int, width: int, height: int) -> tuple[np.random.Generator, list[Shape]]:
    rng = seeded_rng(seed, STREAM, index)
    count = int(rng.integers(1, 4))
    specs, used = [], set()
    while len(specs) < count:
        kind, color = str(rng.choice(KINDS)), str(rng.choice(COLORS))
        if (kind, color) not in used:
            used.add((kind, color))
            specs.append(ShapeSpec(kind, color, str(rng.choice(SIZES))))
    return rng, place_shapes(rng, specs, width, height)


def _listing(shapes: list[Shape]) -> str:
    names = [f"a {shape.color} {shape.kind}" for shape in shapes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _turn(speaker: str, value: str) -> dict[str, str]:
    return {"from": speaker, "value": value}


def _conversation(index: int, shapes: list[Shape], width: int, height: int) -> list[dict[str, str]]:
    """One of four conversation styles, by index."""
    first = shapes[0]
    where = f"The {first.color} {first.kind} is {shape_position(first, width, height)}."
    count = f"There {'is one shape' if len(shapes) == 1 else f'are {len(shapes)} shapes'} in the image."
    style = index % 4
    if style == 0:  # multi-turn, image first
        return [_turn("human", "<image>\nWhat shapes can you see?"), _turn("gpt", f"I can see {_listing(shapes)}."),
                _turn("human", "How many shapes are there?"), _turn("gpt", count),
                _turn("human", f"Where is the {first.color} {first.kind}?"), _turn("gpt", where)]
    if style == 1:  # image after the question, as many LLaVA records have it
        return [_turn("human", "Describe the image in one sentence.\n<image>"),
                _turn("gpt", f"The picture shows {_listing(shapes)} on a plain textured background.")]
    if style == 2:  # a leading assistant turn, which the reference drops
        return [_turn("gpt", "Hello! Ask me anything about the picture."),
                _turn("human", f"<image>\nIs there a {first.color} {first.kind} in this picture?"),
                _turn("gpt", f"Yes. {where}")]
    return [_turn("human", "<image>\nCount the shapes, please."), _turn("gpt", count),  # two rounds
            _turn("human", "Which colours do they have?"),
            _turn("gpt", "Their colours are " + ", ".join(shape.color for shape in shapes) + ".")]


def write_llava_instruct(root: Path, seed: int, n: int, width: int, height: int,
                         faults: bool = True) -> dict[str, Any]:
    """Write `root/llava_dataset/llava_instruct_150k.json` and its `root/coco/train2017/*.jpg`.

    `root` is the data dir. `n` images get conversations (every fifth image a second one);
    with `faults`, two more records follow that a reader must refuse: one naming an image
    that is not written, one malformed. Returns a summary."""
    if n < 1:
        raise ValueError("the LLaVA-Instruct demo needs at least one image")
    root = Path(root)
    records: list[dict[str, Any]] = []
    keep: set[str] = set()
    for index in range(n):
        rng, shapes = _shapes(seed, index, width, height)
        name = image_name(index)
        write_jpeg(root / IMAGE_DIR / name, render(rng, shapes, width, height))
        keep.add(name)
        record_id = name[:-4]
        records.append({"id": record_id, "image": name, "conversations": _conversation(index, shapes, width, height)})
        if index % 5 == 4:  # a second conversation about the same image: same id, same image
            records.append({"id": record_id, "image": name,
                            "conversations": _conversation(index + 1, shapes, width, height)})
    usable = len(records)
    if faults:
        missing = image_name(n)  # never written
        records.append({"id": missing[:-4], "image": missing, "conversations": [
            _turn("human", "<image>\nWhat is in this picture?"), _turn("gpt", "Nothing at all.")]})
        records.append({"id": image_name(0)[:-4], "image": image_name(0), "conversations": [
            _turn("human", "<image>\nWhat is this?"), _turn("human", "Please answer."), _turn("gpt", "Shapes.")]})
    images = root / IMAGE_DIR
    for path in sorted(images.iterdir()):  # drop demo images left over from an earlier, larger run
        if NAME_RE.match(path.name) and path.name not in keep:
            path.unlink()
    write_json(root / LLAVA_JSON, records)
    return {
        "root": str(root / LLAVA_JSON.parent),
        "records": len(records),
        "images": n,
        "usable": usable,
        "specials": {"missing_image": usable, "malformed": usable + 1} if faults else {},
    }
