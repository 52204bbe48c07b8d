"""`keyseg predict`: one image and a query (or a JSONL file of them, --queries) -> answer, keyword,
mask PNG and overlay PNG.

Outputs are named after each request's id: `OUT/<id>_mask.png`, `OUT/<id>_overlay.png`,
and every answer goes to `OUT/predictions.jsonl`. An id given in a batch line must be a
plain file name (letters, digits, `_+-.`) and unique; without one the id is the image's
file stem (other characters replaced by `_`), numbered `stem-2`, `stem-3`... when images
share a stem, so no output is ever written outside OUT or over another request's.

Image paths in a batch file are the user's own: absolute, or relative to the current
folder, as on the command line. A bad line (not JSON, no image or query, a bad or repeated
id, an unreadable image) is reported on one line and skipped; the other lines are still
predicted, and the command exits 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from keyseg.errors import UsageError
from keyseg.io import atomic_write_bytes, atomic_write_jsonl, json_lines
from keyseg.paths import is_plain_name
from keyseg.runner import StageResult, print_problems, progress_bar


@dataclass
class PredictConfig:
    model: Path  # exported model or training checkpoint
    out: Path  # folder for masks, overlays and predictions.jsonl
    image: Path | None = None
    query: str | None = None
    queries: Path | None = None  # JSONL of {"image": path, "query": str, "id": optional}
    generate: bool = True  # free generation (else the teacher-forced "[SEG]. [KEY].")
    show_progress: bool = True


@dataclass
class PredictResult(StageResult):
    """`problems` has one line per request that was skipped; `failed` counts them."""

    predictions: list[dict] = field(default_factory=list)  # the lines of predictions.jsonl


def file_stem_id(image: str) -> str:
    """An output name from an image's file stem: characters a plain name cannot hold become
    `_`, and an empty or dot-led stem gets a safe start."""
    stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", Path(image).stem)[:180]
    if not is_plain_name(stem):  # empty, or starting with a dot
        stem = f"image{stem}"[:180]
    return stem


def _read_queries(path: Path) -> tuple[list[dict], list[str]]:
    """Requests {"line", "image", "query", "id" (None: not given)} and the bad lines' errors."""
    requests, errors = [], []
    for number, request, problem in json_lines(path):
        where = f"{path}:{number}"
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        if not isinstance(request, dict) or not isinstance(request.get("image"), str) \
                or not isinstance(request.get("query"), str):
            errors.append(f"{where}: each line needs an object with image and query strings")
            continue
        given = request.get("id")
        if given is not None and not is_plain_name(given):
            errors.append(f"{where}: id {given!r} is not a plain file name (letters, digits, _+-.)")
            continue
        requests.append({"line": where, "image": request["image"], "query": request["query"], "id": given})
    return requests, errors


def _assign_ids(requests: list[dict]) -> tuple[list[dict], list[str]]:
    """Every request gets a unique id: given ids as they are (a repeated one is an error),
    then image stems, numbered when taken."""
    taken, kept, errors = set(), [], []
    for request in requests:
        if request["id"] is None:
            continue
        if request["id"] in taken:
            errors.append(f"{request['line']}: id {request['id']!r} is used by an earlier line")
            request["refused"] = True
            continue
        taken.add(request["id"])
    for request in requests:
        if request.get("refused"):
            continue
        if request["id"] is None:
            stem = file_stem_id(request["image"])
            name, number = stem, 1
            while name in taken:
                number += 1
                name = f"{stem}-{number}"
            request["id"] = name
            taken.add(name)
        kept.append(request)
    return kept, errors


def _requests(config: PredictConfig) -> tuple[list[dict], list[str]]:
    if config.queries is not None:
        if config.image is not None or config.query is not None:
            raise UsageError("give --image and --query, or --queries FILE.jsonl, not both")
        requests, errors = _read_queries(config.queries)
        requests, duplicate_errors = _assign_ids(requests)
        return requests, errors + duplicate_errors
    if config.image is None or config.query is None:
        raise UsageError("give --image and --query, or --queries FILE.jsonl")
    return _assign_ids([{"line": str(config.image), "image": str(config.image), "query": config.query,
                         "id": None}])


def _is_sentence(query: str) -> bool:
    # Reasoning queries are questions or full sentences; referring phrases are short.
    return query.strip().endswith("?") or len(query.split()) > 8


def run(config: PredictConfig, console: Console | None = None) -> PredictResult:
    console = console or Console(stderr=True)
    from keyseg.data.conversation import ConversationConfig
    from keyseg.data.transforms import ClipInput
    from keyseg.training.export import load_for_evaluation

    requests, errors = _requests(config)
    model, tokenizer, _ = load_for_evaluation(config.model)
    clip = ClipInput(model.config.clip_image_size)
    conversation = ConversationConfig()
    out = Path(config.out)
    result = PredictResult(problems=errors)
    with progress_bar(console, config.show_progress and len(requests) > 1) as progress:
        bar = progress.add_task("predict", total=len(requests))
        for request in requests:
            _predict_one(request, model, tokenizer, clip, conversation, out, config, result, console)
            progress.advance(bar)
    atomic_write_jsonl(out / "predictions.jsonl", result.predictions)
    result.failed = len(result.problems)
    print_problems(console, result.problems, result.failed, out / "predictions.jsonl" if result.failed else None)
    return result


def _predict_one(request, model, tokenizer, clip, conversation, out, config, result, console) -> None:
    """Answer one request into `result` (a prediction, or a problem line when its image is unusable)."""
    from keyseg.data.conversation import eval_query
    from keyseg.data.transforms import decode_rgb, sam_input
    from keyseg.evaluation.inference import predict_batch
    from keyseg.masks.overlay import overlay_png, prediction_overlay
    from keyseg.masks.png import encode_png

    image_path = Path(request["image"])
    try:
        rgb = decode_rgb(image_path.read_bytes())
        image_sam, resize = sam_input(rgb, model.config.sam_image_size)
        image_clip = clip(rgb)
    except (OSError, ValueError) as error:  # missing, not an image, over the pixel bound, a sliver
        result.problems.append(f"{request['line']}: {image_path}: cannot read the image ({error})")
        return
    query = eval_query(request["query"], _is_sentence(request["query"]), conversation)
    height, width = rgb.shape[:2]
    batch = {"image_sam": image_sam[None], "image_clip": image_clip[None], "questions": [query.question],
             "conversations": [query.conversation], "keywords": [None], "offsets": torch.tensor([0, 1]),
             "masks": [torch.zeros((1, height, width), dtype=torch.uint8)], "resize": [resize],
             "original_size": [(height, width)]}
    (prediction,) = predict_batch(model, tokenizer, batch, generate=config.generate)
    mask = prediction.mask.numpy()
    # The id is a plain file name (checked or built above): these stay inside OUT.
    mask_path = out / f"{request['id']}_mask.png"
    overlay_path = out / f"{request['id']}_overlay.png"
    atomic_write_bytes(mask_path, encode_png(mask.astype(np.uint8) * 255))
    atomic_write_bytes(overlay_path, overlay_png(prediction_overlay(rgb, mask, request["query"])))
    record = {"id": request["id"], "image": str(image_path), "query": request["query"],
              "answer": prediction.answer, "keyword": prediction.keyword, "mask": str(mask_path),
              "overlay": str(overlay_path), "foreground_pixels": int(mask.sum()), "prompt": prediction.prompt}
    result.predictions.append(record)
    # Queries, answers and file names are data: escaped, so "[/]" prints as itself.
    console.print(f"[bold]{escape(record['id'])}[/]: {escape(record['query'])}\n"
                  f"  answer: {escape(str(record['answer']))}\n  keyword: {escape(str(record['keyword']))}\n"
                  f"  mask: {escape(str(mask_path))} ({record['foreground_pixels']} px)", soft_wrap=True)

