"""The `keyseg` command line: parses arguments, calls `pipelines/<stage>.py`, sets the exit code.

Nothing else lives here: every stage is a `run(config)` that can be called from Python.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="keyseg",
    help="KeySeg toolkit: prepare, mine keywords, shard, train and evaluate keyword-conditioned segmentation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


@app.command("demo-data")
def demo_data(
    out: Path = typer.Argument(..., help="Folder to write the demo data set into (reason_seg/ and refer_seg/)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical files."),
    images: int = typer.Option(48, min=8, help="ReasonSeg images in total (train/val/test 50/25/25); refCOCO gets as many."),
    width: int = typer.Option(320, min=64, help="Image width in pixels (as displayed, after EXIF orientation)."),
    height: int = typer.Option(240, min=64, help="Image height in pixels."),
) -> None:
    """Write a small synthetic data set in the native ReasonSeg and refCOCO layouts."""
    from pipelines import demo_data as stage

    summary = stage.run(stage.DemoDataConfig(out=out, seed=seed, images=images, width=width, height=height))
    reason, refer = summary["reason_seg"], summary["refcoco"]
    splits = "/".join(str(count) for count in reason["splits"].values())
    console.print(f"demo data written to {out}: ReasonSeg train/val/test {splits} images, "
                  f"refCOCO {refer['images']} images with {sum(refer['refs_per_split'].values())} refs")


@app.command()
def prepare(
    data_dir: Path = typer.Option(..., "--data-dir", help="Folder holding reason_seg/ and/or refer_seg/ in their native layouts."),
    out: Path = typer.Option(..., "--out", help="Output folder for manifests, masks, overlays and reports."),
    source: Optional[list[str]] = typer.Option(
        None, "--source",
        help="What to prepare, repeatable: reasonseg[:SPLITS], refcoco[:unc|google[:SPLITS]], "
             "refcoco+[:unc[:SPLITS]], refcocog[:umd|google[:SPLITS]]; SPLITS comma-separated, e.g. "
             "refcoco:unc:train,val. Default: every ReasonSeg split folder present and each refCOCO "
             "dataset's usual splitBy (unc, unc, umd) whose refs file is present.",
    ),
    workers: int = typer.Option(0, min=0, help="Worker processes; 0 means one per core."),
    strict: bool = typer.Option(False, "--strict", help="Treat warnings (degenerate polygons, unknown labels...) as errors."),
    visualize: int = typer.Option(0, min=0, help="Write this many overlay PNGs per split (target green, ignore red, outlines)."),
    decode_images: bool = typer.Option(
        False, "--decode-images",
        help="Decode every image with OpenCV to prove it is readable (slower); by default only the header and EXIF are read.",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Turn ReasonSeg polygons and refCOCO refs into target/ignore masks and JSON Lines manifests.

    Masks are uint8 PNGs (0 background, 1 target, 255 ignore), bit-exact with the reference
    rasterisation. Re-running skips records whose inputs are unchanged. Exit code 1 when any
    record failed (the good ones are still written), 2 on bad arguments.
    """
    from pipelines import prepare as stage

    config = stage.PrepareConfig(
        data_dir=data_dir, out=out, sources=list(source or []), workers=workers or (os.cpu_count() or 1),
        strict=strict, visualize=visualize, decode_images=decode_images, show_progress=progress,
    )
    try:
        result = stage.run(config, console=console)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    if result.errors:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
