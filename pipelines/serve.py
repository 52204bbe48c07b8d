"""`keyseg serve`: the web app and JSON endpoint of keyseg.serving over one loaded model.

Binds to 127.0.0.1 unless `--host` says otherwise (0.0.0.0 exposes the model to the
network: anyone who can reach the port can run it). `--example IMAGE::QUERY` (repeatable)
adds clickable examples under the form. Stops with Ctrl-C.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from keyseg.errors import UsageError
from keyseg.runner import StageResult


@dataclass
class ServeConfig:
    model: Path
    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: float = 10.0
    examples: list[str] = field(default_factory=list)  # "IMAGE::QUERY"
    generate: bool = True
    device: str = "auto"
    dtype: str = "fp32"
    load_in: str = "full"
    show_progress: bool = True


@dataclass
class ServeResult(StageResult):
    pass


def parse_examples(examples: list[str]) -> list[tuple[Path, str]]:
    parsed = []
    for text in examples:
        image, separator, query = text.partition("::")
        if not separator or not query.strip():
            raise UsageError(f"--example {text!r}: write IMAGE::QUERY")
        if not Path(image).is_file():
            raise UsageError(f"--example {text!r}: {image} is not a file")
        parsed.append((Path(image), query.strip()))
    return parsed


def run(config: ServeConfig, console: Console | None = None) -> ServeResult:
    console = console or Console(stderr=True)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local server
    from keyseg.evaluation.inference import Segmenter
    from keyseg.model.devices import resolve_placement
    from keyseg.serving import AppSettings, build_app
    from keyseg.training.export import load_for_evaluation

    if not 0 < config.port < 65536:
        raise UsageError(f"--port must be 1-65535, got {config.port}")
    if config.max_upload_mb <= 0:
        raise UsageError("--max-upload-mb must be positive")
    placement = resolve_placement(config.device, config.dtype, config.load_in)
    examples = parse_examples(config.examples)
    model, tokenizer, _ = load_for_evaluation(config.model, placement)
    settings = AppSettings(model_name=Path(config.model).name, device=placement.describe(),
                           max_upload_bytes=int(config.max_upload_mb * 1024 * 1024), examples=examples)
    app = build_app(Segmenter(model, tokenizer, generate=config.generate), settings)

    import uvicorn

    console.print(f"keyseg serve: {escape(str(config.model))} on {placement.describe()} at "
                  f"http://{escape(config.host)}:{config.port}/ (JSON: POST /api/segment). Ctrl-C stops it.",
                  soft_wrap=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    return ServeResult()
