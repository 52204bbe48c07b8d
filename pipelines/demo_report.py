"""`keyseg demo-report`: what `make demo` records and reports around its stages.

time:     run one stage's command, and when it succeeds record its wall time in TIMES_DIR
          (a failed stage keeps no time: make runs it again).
summary:  the table of scores before and after training and of stage times; summary.json.
pictures: the README's pictures from a finished demo run, into OUT_DIR.
screenshots: `keyseg chat` (a terminal transcript, SVG) and `keyseg serve` (the page in
          headless Chromium, PNG) on the trained demo model, into OUT_DIR.

What is measured and picked lives in keyseg.demo.report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from keyseg.demo.report import (SPLITS, demo_summary, headless_chromium, readme_pictures, segment_in_page,
                                showcase_query, time_record, time_record_path, timed_call, wait_for_server)
from keyseg.io import atomic_write_bytes, atomic_write_json
from keyseg.runner import StageResult, summary_table


@dataclass
class TimeConfig:
    stage: str  # the name the summary lists it under, e.g. "train"
    times_dir: Path  # runs/demo/times
    command: list[str]  # the stage's command line


@dataclass
class SummaryConfig:
    demo_dir: Path  # runs/demo: times/, eval_before/, eval_after/, train/
    splits: tuple[str, ...] = SPLITS


@dataclass
class PicturesConfig:
    demo_dir: Path  # a finished demo run
    shards_dir: Path  # its shard set (stats.png)
    out_dir: Path  # e.g. docs/images
    gallery_rows: int = 3


@dataclass
class ScreenshotsConfig:
    demo_dir: Path  # a finished demo run (its trained model, data and evaluation)
    out_dir: Path  # e.g. docs/images
    port: int = 7871


DemoReportConfig = TimeConfig | SummaryConfig | PicturesConfig | ScreenshotsConfig


@dataclass(kw_only=True)
class DemoReportResult(StageResult):
    """`failed`: 1 when the timed command failed; `written`: the files this run wrote."""

    written: list[Path] = field(default_factory=list)
    summary: dict | None = None
    exit_status: int | None = None  # time: the command's own exit status


def run(config: DemoReportConfig, console: Console | None = None) -> DemoReportResult:
    console = console or Console()
    if isinstance(config, TimeConfig):
        return _time(config)
    if isinstance(config, SummaryConfig):
        return _summary(config, console)
    if isinstance(config, PicturesConfig):
        return _pictures(config, console)
    if isinstance(config, ScreenshotsConfig):
        return _screenshots(config, console)
    raise TypeError(f"not a demo-report config: {type(config).__name__}")


def _time(config: TimeConfig) -> DemoReportResult:
    status, seconds = timed_call(config.command)
    if status != 0:
        return DemoReportResult(failed=1, problems=[f"{config.stage}: exit status {status}"], exit_status=status)
    path = time_record_path(config.times_dir, config.stage)
    atomic_write_json(path, time_record(config.stage, seconds))
    return DemoReportResult(written=[path], exit_status=status)


def _summary(config: SummaryConfig, console: Console) -> DemoReportResult:
    summary = demo_summary(config.demo_dir, config.splits)
    path = Path(config.demo_dir) / "summary.json"
    atomic_write_json(path, summary)

    scores = summary_table("keyseg demo: before and after training", "split",
                           ["gIoU before", "gIoU after", "cIoU before", "cIoU after"])
    for split in config.splits:
        before, after = summary["before"].get(split, {}), summary["after"].get(split, {})
        scores.add_row(escape(split), *(f"{100 * scores_of[metric]:.1f}" if metric in scores_of else "-"
                                        for metric, scores_of in (("giou", before), ("giou", after),
                                                                  ("ciou", before), ("ciou", after))))
    console.print(scores)
    times = summary_table("wall time per stage", "stage", ["seconds"])
    for stage, seconds in summary["stages"].items():
        times.add_row(escape(stage), f"{seconds:.1f}")
    times.add_row("total", f"{sum(summary['stages'].values()):.1f}")
    console.print(times)
    if summary["keyword_match"]:
        console.print("keyword match after training: " + ", ".join(
            f"{escape(split)} {100 * rate:.0f}%" for split, rate in summary["keyword_match"].items()))
    for name, where in summary["outputs"].items():
        console.print(escape(f"{name:>9}: {where}"), highlight=False)
    console.print(escape(f"  summary: {path}"), highlight=False)
    return DemoReportResult(written=[path], summary=summary)


def _pictures(config: PicturesConfig, console: Console) -> DemoReportResult:
    pictures = readme_pictures(config.demo_dir, config.shards_dir, config.gallery_rows)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in pictures.items():
        atomic_write_bytes(out_dir / name, data)
        written.append(out_dir / name)
        console.print(escape(str(out_dir / name)), highlight=False)
    return DemoReportResult(written=written)


def _screenshots(config: ScreenshotsConfig, console: Console) -> DemoReportResult:
    import io
    import os
    import subprocess
    import sys
    import tempfile

    model = Path(config.demo_dir) / "train" / "export"
    image, query = showcase_query(config.demo_dir)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # chat: the real command, fed two lines through a pipe; the transcript shows each typed
    # line after the prompt a terminal would show, then what the command printed for it
    shown_image = os.path.relpath(image)
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([sys.executable, "-m", "cli", "chat", "--model", str(model.resolve()), "--out", "chat",
                               "--device", "cpu", "--no-generate"], input=f"/image {image.resolve()}\n{query}\n",
                              capture_output=True, text=True, cwd=scratch,
                              env={**os.environ, "PYTHONPATH": os.getcwd(), "COLUMNS": "100"})
    if done.returncode != 0:
        console.print(f"[red]error:[/] keyseg chat exited with status {done.returncode}: {escape(done.stderr[-500:])}")
        return DemoReportResult(failed=1, problems=[f"keyseg chat exited with {done.returncode}"])
    status = [line for line in done.stderr.splitlines() if line.strip()]
    record = Console(record=True, width=100, file=io.StringIO(), force_terminal=True)
    record.print(f"$ keyseg chat --model {os.path.relpath(model)} --no-generate", highlight=False)
    record.print(escape(status[0].replace(str(model.resolve()), os.path.relpath(model))), highlight=False)
    record.print(f"[bold cyan]keyseg>[/] /image {escape(shown_image)}", highlight=False)
    record.print(escape(status[1].replace(str(image.resolve()), shown_image)), highlight=False)
    record.print(f"[bold cyan]keyseg>[/] {escape(query)}", highlight=False)
    record.print(escape(done.stdout.rstrip()), highlight=False)
    svg = out_dir / "chat.svg"
    atomic_write_bytes(svg, record.export_svg(title="keyseg chat").encode("utf-8"))

    # serve: the page after one query
    command = [sys.executable, "-m", "cli", "serve", "--model", str(model), "--port", str(config.port),
               "--device", "cpu", "--no-generate", "--example", f"{image}::{query}"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{config.port}"
    try:
        wait_for_server(url, server)
        driver = headless_chromium(1280, 1080)
        try:
            segment_in_page(driver, url, image, query)
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=60)
    page = out_dir / "serve.png"
    atomic_write_bytes(page, png)
    for path in (svg, page):
        console.print(escape(str(path)), highlight=False)
    return DemoReportResult(written=[svg, page])

