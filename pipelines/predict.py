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
predicted, and the command exits 1. `predictions.jsonl` has one row per input line, in
order, with its line number and `status` ("ok", or "error" with the reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from keyseg.errors import UsageError
from keyseg.io import atomic_write_jsonl, json_lines
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
    device: str = "auto"  # auto, cpu, cuda, cuda:N (keyseg.model.devices)
    dtype: str = "fp32"  # fp32, bf16, fp16
    load_in: str = "full"  # full, 8bit, 4bit (bitsandbytes, CUDA only)
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


def _read_queries(path: Path) -> list[dict]:
    """One entry per line of the batch file, in order: {"line", "number", "image", "query",
    "id" (None: not given)}, or {"line", "number", "error"} for a line that cannot be a request."""
    entries = []
    for number, request, problem in json_lines(path):
        where = {"line": f"{path}:{number}", "number": number}
        if problem:
            entries.append({**where, "error": problem})
            continue
        if not isinstance(request, dict) or not isinstance(request.get("image"), str) \
                or not isinstance(request.get("query"), str):
            entries.append({**where, "error": "each line needs an object with image and query strings"})
            continue
        given = request.get("id")
        entry = {**where, "image": request["image"], "query": request["query"], "id": given}
        if given is not None and not is_plain_name(given):
            entry["error"] = f"id {given!r} is not a plain file name (letters, digits, _+-.)"
        entries.append(entry)
    return entries


def _assign_ids(entries: list[dict]) -> None:
    """Every usable entry gets a unique id, in place: given ids as they are (a repeated one
    makes its line an error), then image stems, numbered when taken."""
    taken = set()
    for entry in entries:
        if "error" in entry or entry["id"] is None:
            continue
        if entry["id"] in taken:
            entry["error"] = f"id {entry['id']!r} is used by an earlier line"
            continue
        taken.add(entry["id"])
    for entry in entries:
        if "error" in entry or entry["id"] is not None:
            continue
        stem = file_stem_id(entry["image"])
        name, number = stem, 1
        while name in taken:
            number += 1
            name = f"{stem}-{number}"
        entry["id"] = name
        taken.add(name)


def _requests(config: PredictConfig) -> list[dict]:
    if config.queries is not None:
        if config.image is not None or config.query is not None:
            raise UsageError("give --image and --query, or --queries FILE.jsonl, not both")
        entries = _read_queries(config.queries)
    elif config.image is None or config.query is None:
        raise UsageError("give --image and --query, or --queries FILE.jsonl")
    else:
        entries = [{"line": str(config.image), "number": 1, "image": str(config.image), "query": config.query,
                    "id": None}]
    _assign_ids(entries)
    return entries


def run(config: PredictConfig, console: Console | None = None) -> PredictResult:
    console = console or Console(stderr=True)
    from keyseg.evaluation.inference import Segmenter
    from keyseg.model.devices import resolve_placement
    from keyseg.training.export import load_for_evaluation

    entries = _requests(config)
    placement = resolve_placement(config.device, config.dtype, config.load_in)
    model, tokenizer, _ = load_for_evaluation(config.model, placement)
    segmenter = Segmenter(model, tokenizer, generate=config.generate)
    out = Path(config.out)
    result = PredictResult()
    with progress_bar(console, config.show_progress and len(entries) > 1) as progress:
        bar = progress.add_task("predict", total=len(entries))
        for entry in entries:
            if "error" not in entry:
                _predict_one(entry, segmenter, out, result, console)
            if "error" in entry:
                result.problems.append(f"{entry['line']}: {entry['error']}")
                result.predictions.append({"line": entry["number"], "status": "error", "error": entry["error"],
                                           **{key: entry.get(key) for key in ("id", "image", "query")}})
            progress.advance(bar)
    atomic_write_jsonl(out / "predictions.jsonl", result.predictions)
    result.failed = len(result.problems)
    print_problems(console, result.problems, result.failed, out / "predictions.jsonl" if result.failed else None)
    return result


def _predict_one(request, segmenter, out, result, console) -> None:
    """Answer one request into `result` (or set its "error" when its image is unusable)."""
    from keyseg.data.transforms import decode_rgb

    image_path = Path(request["image"])
    try:
        rgb = decode_rgb(image_path.read_bytes())
        segmentation = segmenter(rgb, request["query"])
    except (OSError, ValueError) as error:  # missing, not an image, over the pixel bound, a sliver
        request["error"] = f"{image_path}: cannot read the image ({error})"
        return
    mask, answer = segmentation.mask, segmentation.answer
    # The id is a plain file name (checked or built above): these stay inside OUT.
    mask_path = out / f"{request['id']}_mask.png"
    overlay_path = out / f"{request['id']}_overlay.png"
    segmentation.save(rgb, request["query"], mask_path, overlay_path)
    record = {"line": request["number"], "status": "ok", "id": request["id"], "image": str(image_path),
              "query": request["query"], "answer": answer, "keyword": segmentation.keyword, "mask": str(mask_path),
              "overlay": str(overlay_path), "foreground_pixels": int(mask.sum()), "prompt": segmentation.prompt}
    result.predictions.append(record)
    # Queries, answers and file names are data: escaped, so "[/]" prints as itself.
    console.print(f"[bold]{escape(record['id'])}[/]: {escape(record['query'])}\n"
                  f"  answer: {escape(str(record['answer']))}\n  keyword: {escape(str(record['keyword']))}\n"
                  f"  mask: {escape(str(mask_path))} ({record['foreground_pixels']} px)", soft_wrap=True)

