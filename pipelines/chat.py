"""`keyseg chat`: ask a loaded model about images, one query per line, as the reference's
chat loop does (LISA chat.py; the KeySeg release's key_chat.py also prints the keyword).

A line is a query about the current image. `/image PATH` switches the image (`--image`
sets the first one); when no image is set, the next line is read as its path. `/help`
lists the commands, `/quit` or the end of input ends the chat. Each answered turn writes
`OUT/turn_<n>_mask.png` and `OUT/turn_<n>_overlay.png` and appends one line to
`OUT/chat_history.jsonl`; a later chat into the same folder numbers on from there.

Standard input can be a pipe (`printf '/image a.jpg\\nthe red square\\n' | keyseg chat ...`):
prompts are shown only at a terminal, answers go to standard output, errors to standard
error. A turn that cannot be answered (no such image, not an image) is one error line and
the chat goes on; the command exits 1 if any turn failed.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from keyseg.errors import UsageError
from keyseg.io import atomic_write_json
from keyseg.runner import StageResult

HISTORY_FILE = "chat_history.jsonl"
CONFIG_FILE = "chat_config.json"
HELP = ("a line is a query about the current image; /image PATH switches the image; "
        "/help shows this; /quit (or the end of input) ends the chat")


@dataclass
class ChatConfig:
    model: Path  # exported model or training checkpoint
    out: Path  # masks, overlays and chat_history.jsonl
    image: Path | None = None  # the first image
    generate: bool = True  # free generation (else the teacher-forced "[SEG]. [KEY].")
    device: str = "auto"
    dtype: str = "fp32"
    load_in: str = "full"
    show_progress: bool = True


@dataclass
class ChatResult(StageResult):
    """`failed` counts the turns that could not be answered."""

    turns: list[dict] = field(default_factory=list)  # the lines this chat appended to the history


def input_lines(console: Console) -> Iterator[str]:
    """Lines from standard input: with a prompt and line editing at a terminal, plain from a pipe."""
    if sys.stdin.isatty():
        importlib.import_module("readline")  # arrow keys and a history for input()
        while True:
            try:
                yield console.input("[bold cyan]keyseg>[/] ")
            except EOFError:
                return
    else:
        for line in sys.stdin:
            yield line.rstrip("\n")


def run(config: ChatConfig, console: Console | None = None, lines: Iterator[str] | None = None,
        answers: Console | None = None) -> ChatResult:
    """`lines`: the user's lines (default: standard input); `answers`: where answers are
    printed (default: standard output; `console`, standard error, gets the rest)."""
    console = console or Console(stderr=True)
    answers = answers or Console(soft_wrap=True)
    from keyseg.data.transforms import decode_rgb
    from keyseg.evaluation.inference import Segmenter
    from keyseg.model.devices import resolve_placement
    from keyseg.training.export import load_for_evaluation

    placement = resolve_placement(config.device, config.dtype, config.load_in)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, {key: str(value) if isinstance(value, Path) else value
                                   for key, value in vars(config).items() if key != "show_progress"})
    model, tokenizer, _ = load_for_evaluation(config.model, placement)
    segmenter = Segmenter(model, tokenizer, generate=config.generate)
    console.print(f"keyseg chat: {escape(str(config.model))} on {placement.describe()}. {HELP}.", soft_wrap=True)

    history = out / HISTORY_FILE
    number = len(history.read_text(encoding="utf-8").splitlines()) if history.is_file() else 0
    result = ChatResult()
    image_path: Path | None = None
    rgb = None

    def load_image(text: str) -> bool:
        nonlocal image_path, rgb
        path = Path(text.strip()).expanduser()
        try:
            rgb = decode_rgb(path.read_bytes())
        except (OSError, ValueError) as error:
            result.problems.append(f"{path}: cannot read the image ({error})")
            console.print(f"[red]error:[/] {escape(str(path))}: cannot read the image ({escape(str(error))})",
                          soft_wrap=True)
            return False
        image_path = path
        console.print(f"image: {escape(str(path))} ({rgb.shape[1]}x{rgb.shape[0]})", soft_wrap=True)
        return True

    if config.image is not None and not load_image(str(config.image)):
        raise UsageError(f"--image {config.image}: cannot read the image")
    lines = iter(lines) if lines is not None else input_lines(console)
    try:
        for line in lines:
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if text == "/help":
                console.print(HELP)
                continue
            if text.startswith("/image"):
                load_image(text[len("/image"):])
                continue
            if rgb is None:
                console.print("no image yet: give its path (or /image PATH)")
                path_line = next(lines, None)
                if path_line is None or not load_image(path_line):
                    continue
            try:
                segmentation = segmenter(rgb, text)
            except ValueError as error:  # an image the model cannot take (a sliver)
                result.problems.append(f"{image_path}: {error}")
                console.print(f"[red]error:[/] {escape(str(image_path))}: {escape(str(error))}", soft_wrap=True)
                continue
            number += 1
            mask_path, overlay_path = out / f"turn_{number:04d}_mask.png", out / f"turn_{number:04d}_overlay.png"
            segmentation.save(rgb, text, mask_path, overlay_path)
            turn = {"turn": number, "image": str(image_path), "query": text, "answer": segmentation.answer,
                    "keyword": segmentation.keyword, "mask": str(mask_path), "overlay": str(overlay_path),
                    "foreground_pixels": int(segmentation.mask.sum()), "seconds": round(segmentation.seconds, 3)}
            with history.open("a", encoding="utf-8") as handle:  # one write per line: never half a turn
                handle.write(json.dumps(turn, ensure_ascii=False) + "\n")
            result.turns.append(turn)
            answers.print(f"[bold]answer:[/] {escape(segmentation.answer)}\n"
                          f"[bold]keyword:[/] {escape(segmentation.keyword or '(none)')}\n"
                          f"[dim]mask {escape(str(mask_path))} ({turn['foreground_pixels']} px), "
                          f"overlay {escape(str(overlay_path))}, {segmentation.seconds:.2f} s[/]")
    except KeyboardInterrupt:
        console.print("\nchat ended (Ctrl-C)")
    result.failed = len(result.problems)
    if result.failed:  # each was printed when it happened
        console.print(f"[red]{result.failed} turn(s) failed[/]; the others are in {escape(str(history))}",
                      soft_wrap=True)
    return result
