"""The `keyseg` command line: parses arguments, calls `pipelines/<stage>.py`, sets the exit code.

Nothing else lives here: every stage is a `run(config)` that can be called from Python.
Conventions, the same on every command: inputs and outputs are named options (`--out` is
always where results go, `--shards` always a shard set folder), `--progress/--no-progress`
and `--quiet` are accepted everywhere, and the exit code is 0 (done), 1 (some records
failed, or bad data), 2 (bad usage) or 130 (interrupted).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="keyseg",
    help="KeySeg toolkit: prepare, mine keywords, shard, train and evaluate keyword-conditioned segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"keyseg {version('keyseg')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the installed keyseg version and exit."),
) -> None:
    """KeySeg toolkit: prepare, mine keywords, shard, train and evaluate keyword-conditioned segmentation."""
    import warnings

    # Deprecation notices from transformers/torch internals: nothing a keyseg user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning)


def _fail(message: str, code: int = 2) -> None:
    # Messages carry file names and data text: escaped, so "[x]" prints as itself.
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _call(function, *args, **kwargs):
    """The one error path of every command: a known failure is one line and an exit code.

    Exit 2: bad usage (UsageError, or a ValueError raised on the arguments). Exit 1: bad
    data or environment (DataError, any OSError: not found, permission denied, disk full,
    read-only folder). Ctrl-C: exit 130. Anything else is a bug and keeps its traceback."""
    from keyseg.errors import DataError, describe_os_error

    try:
        return function(*args, **kwargs)
    except DataError as error:
        _fail(str(error), code=1)
    except OSError as error:
        _fail(describe_os_error(error), code=1)
    except ValueError as error:
        _fail(str(error), code=2)
    except KeyboardInterrupt:
        # Outputs are written atomically: what exists is whole; a rerun resumes.
        console.print("[yellow]interrupted[/]: no output was left half-written; run the same command to resume")
        raise typer.Exit(130) from None


def _run_stage(stage, config, quiet: bool = False):
    """Run `stage.run(config)` through `_call`; a result with failed records exits 1.

    With `quiet` the stage prints nothing; errors still reach standard error."""
    stage_console = Console(stderr=True, quiet=quiet) if quiet else console
    result = _call(stage.run, config, console=stage_console)
    if result.failed:
        raise typer.Exit(1)
    return result


# Options every command takes (Typer reads these markers as defaults).
_progress = typer.Option(True, "--progress/--no-progress", help="Show progress (a bar, or a spinner for one long step).")
_quiet = typer.Option(False, "--quiet", "-q", help="Print nothing but errors (reports and outputs are still written).")
# Where a model runs for inference (keyseg.model.devices).
_device = typer.Option("auto", "--device", help="auto (the GPU when there is one), cpu, cuda or cuda:N.")
_dtype = typer.Option("fp32", "--dtype", help="Precision: fp32, bf16 or fp16 (the reference's --precision).")
_load_in = typer.Option("full", "--load-in", help="full, or 8bit / 4bit: quantise the language model with "
                                                  "bitsandbytes (needs a CUDA device).")


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(..., "--out", help="Folder to write the demo data set into (reason_seg/ and refer_seg/)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical files."),
    images: int = typer.Option(48, min=8, help="ReasonSeg images in total (train/val/test 50/25/25); refCOCO gets as many."),
    width: int = typer.Option(320, min=64, help="Image width in pixels (as displayed, after EXIF orientation)."),
    height: int = typer.Option(240, min=64, help="Image height in pixels."),
    source: Optional[list[str]] = typer.Option(
        None, "--source",
        help="A source to write, repeatable: reasonseg, refcoco, refclef, ade20k, cocostuff, mapillary, paco_lvis, "
             "pascal_part, llava_instruct_150k. Default: reasonseg, refcoco, ade20k and llava_instruct_150k "
             "(one of each kind of LISA's mixture)."),
    faults: bool = typer.Option(False, "--faults/--no-faults",
                                help="Also write files each reader must refuse (missing images, labels past the "
                                     "class list, malformed records); `keyseg prepare` then reports them as errors."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Write a small synthetic data set in the native layouts of the chosen sources (with their awkward cases)."""
    from pipelines import demo_data as stage

    sources = tuple(source) if source else stage.DEFAULT_SOURCES
    _run_stage(stage, stage.DemoDataConfig(out=out, seed=seed, images=images, width=width, height=height,
                                           sources=sources, faults=faults, show_progress=progress), quiet)


@app.command()
def prepare(
    data_dir: Path = typer.Option(..., "--data-dir", help="Folder holding reason_seg/ and/or refer_seg/ in their native layouts."),
    out: Path = typer.Option(..., "--out", help="Output folder for manifests, masks, overlays and reports."),
    source: Optional[list[str]] = typer.Option(
        None, "--source",
        help="What to prepare, repeatable: reasonseg[:SPLITS], refcoco[:unc|google[:SPLITS]], "
             "refcoco+[:unc[:SPLITS]], refcocog[:umd|google[:SPLITS]], refclef[:unc|berkeley[:SPLITS]], "
             "ade20k, cocostuff, mapillary, paco_lvis, pascal_part, llava_instruct_150k (train only); "
             "SPLITS comma-separated, e.g. refcoco:unc:train,val. Default: every source whose files are "
             "present (ReasonSeg split folders, each refer dataset's usual splitBy: unc, unc, umd, unc).",
    ),
    workers: int = typer.Option(0, min=0, help="Worker processes; 0 means one per core."),
    strict: bool = typer.Option(False, "--strict", help="Treat warnings (degenerate polygons, unknown labels...) as errors."),
    visualize: int = typer.Option(0, min=0, help="Write this many overlay PNGs per split (target green, ignore red, outlines)."),
    decode_images: bool = typer.Option(
        False, "--decode-images",
        help="Decode every image with OpenCV to prove it is readable (slower); by default only the header and EXIF are read.",
    ),
    max_image_pixels: Optional[int] = typer.Option(
        None, "--max-image-pixels", min=1,
        help="Refuse images (and instances.json sizes, RLE sizes) with more pixels than this, unread; "
             "default 100000000.",
    ),
    progress: bool = _progress, quiet: bool = _quiet,
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
        **({"max_image_pixels": max_image_pixels} if max_image_pixels is not None else {}),
    )
    _run_stage(stage, config, quiet)


mine_keywords_app = typer.Typer(
    help="Generate or validate keyword_outputs.json (one keyword per ReasonSeg training instruction).",
    no_args_is_help=True,
)
app.add_typer(mine_keywords_app, name="mine-keywords")

_BACKEND_HELP = ("openai (any OpenAI-compatible server), hf (a local transformers model folder given as --model), "
                 "heuristic (offline, deterministic, no model), or auto: openai when --model/--base-url is given, "
                 "else heuristic.")


def _mine_keywords(mode: str, quiet: bool, **options) -> None:
    from pipelines import mine_keywords as stage

    _run_stage(stage, stage.MineKeywordsConfig(mode=mode, **options), quiet)


# Options shared by both subcommands (Typer reads these markers as defaults).
_backend = typer.Option("auto", help=_BACKEND_HELP)
_base_url = typer.Option(None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: the openai client's).")
_model = typer.Option(None, help="Model name on the server (openai) or model folder (hf).")
_api_key_env = typer.Option("OPENAI_API_KEY", help="Environment variable holding the API key. The key is never printed, logged or written.")
_concurrency = typer.Option(8, min=1, help="Requests in flight at once.")
_rpm = typer.Option(None, "--rpm", help="Upper bound on requests per minute.")
_timeout = typer.Option(60.0, help="Seconds per request before it is retried.")
_max_attempts = typer.Option(4, min=1, help="Attempts per request on 429/5xx/timeouts/malformed replies (the openai client retries twice within each).")
_max_retry_wait = typer.Option(60.0, min=0.0, help="Longest wait in seconds before a retry, whatever the server's Retry-After asks; a capped wait is printed.")
_interrupt_grace = typer.Option(5.0, min=0.0, help="Seconds the requests in flight get after Ctrl-C to land in the cache (a second Ctrl-C stops at once).")
_cache_dir = typer.Option(None, help="Answer cache folder (default: ~/.cache/keyseg/keywords).")
_cache = typer.Option(True, help="Reuse and store answers in the cache.")
_price = typer.Option(None, help="US$ per million tokens, IN or IN,OUT, for a cost estimate.")


@mine_keywords_app.command("generate")
def mine_keywords_generate(
    input: Path = typer.Option(..., "--input", help="explanatory/train.json, or a prepared reasonseg train manifest.jsonl."),
    out: Optional[Path] = typer.Option(None, help="Keyword file to write (default: ReasonSeg/explanatory_key/keyword_outputs.json next to the input's explanatory folder)."),
    backend: str = _backend, base_url: Optional[str] = _base_url, model: Optional[str] = _model,
    api_key_env: str = _api_key_env, concurrency: int = _concurrency, requests_per_minute: Optional[float] = _rpm,
    timeout: float = _timeout, max_attempts: int = _max_attempts, max_retry_wait: float = _max_retry_wait,
    interrupt_grace: float = _interrupt_grace, cache_dir: Optional[Path] = _cache_dir, cache: bool = _cache,
    report: Optional[Path] = typer.Option(None, help="Report JSON (default: beside the output, *.report.json)."),
    price_per_mtok: Optional[str] = _price,
    batch_file: Optional[Path] = typer.Option(None, "--batch-api-requests", help="Write the requests in OpenAI Batch API input format to this file and stop."),
    batch_results: Optional[Path] = typer.Option(None, "--batch-api-results", help="OpenAI Batch API output file to ingest before mining."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Mine one grounded keyword per record; ungrounded answers get one retry, then a flag (keyword null)."""
    _mine_keywords("generate", quiet, input=input, out=out, backend=backend, base_url=base_url, model=model,
                   api_key_env=api_key_env, concurrency=concurrency, requests_per_minute=requests_per_minute,
                   timeout=timeout, max_attempts=max_attempts, max_retry_wait=max_retry_wait,
                   interrupt_grace=interrupt_grace, cache_dir=cache_dir, use_cache=cache, report=report,
                   price_per_mtok=price_per_mtok, batch_file=batch_file, batch_results=batch_results,
                   show_progress=progress)


@mine_keywords_app.command("validate")
def mine_keywords_validate(
    keywords: Path = typer.Option(..., "--keywords", help="A keyword_outputs.json to check (never modified)."),
    backend: str = _backend, base_url: Optional[str] = _base_url, model: Optional[str] = _model,
    api_key_env: str = _api_key_env, concurrency: int = _concurrency, requests_per_minute: Optional[float] = _rpm,
    timeout: float = _timeout, max_attempts: int = _max_attempts, max_retry_wait: float = _max_retry_wait,
    interrupt_grace: float = _interrupt_grace, cache_dir: Optional[Path] = _cache_dir, cache: bool = _cache,
    report: Optional[Path] = typer.Option(None, help="Report JSON (default: ./<name>.validation.json, or beside --fix)."),
    fix: Optional[Path] = typer.Option(None, help="Write a corrected copy here: bad keywords replaced by a grounded one, or null."),
    price_per_mtok: Optional[str] = _price,
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Give every keyword a verdict: ok, ungrounded, not_a_noun_phrase, or disagrees (with an LLM's own)."""
    _mine_keywords("validate", quiet, input=keywords, backend=backend, base_url=base_url, model=model,
                   api_key_env=api_key_env, concurrency=concurrency, requests_per_minute=requests_per_minute,
                   timeout=timeout, max_attempts=max_attempts, max_retry_wait=max_retry_wait,
                   interrupt_grace=interrupt_grace, cache_dir=cache_dir, use_cache=cache, report=report,
                   fix=fix, price_per_mtok=price_per_mtok, show_progress=progress)


@app.command()
def shard(
    prepared: Path = typer.Option(..., "--prepared", help="Output folder of keyseg prepare."),
    out: Path = typer.Option(..., "--out", help="Shard set folder, e.g. shards/NAME."),
    keywords: Optional[Path] = typer.Option(None, help="keyword_outputs.json for ReasonSeg train (default: the data dir's ReasonSeg/explanatory_key/keyword_outputs.json when present)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where the images are (default: the data dir recorded by prepare)."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Only this SOURCE:SPLIT (repeatable), e.g. reasonseg:val. Default: every prepared split."),
    maxcount: int = typer.Option(10000, min=1, help="Samples per shard at most."),
    maxsize: int = typer.Option(300_000_000, min=1, help="Bytes per shard, about (a shard closes once it passes this)."),
    seed: int = typer.Option(0, help="Seed of the write-time shuffle; same inputs and seed give byte-identical shards."),
    workers: int = typer.Option(0, min=0, help="Worker processes; 0 means one per core."),
    max_image_pixels: Optional[int] = typer.Option(
        None, "--max-image-pixels", min=1,
        help="Refuse images and masks with more pixels than this (read from their headers); default 100000000.",
    ),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Write prepared images, masks (as COCO RLE), texts and keywords into WebDataset shards plus index.json."""
    from pipelines import shard as stage

    config = stage.ShardConfig(prepared=prepared, out=out, keywords=keywords, data_dir=data_dir,
                               splits=list(split or []), maxcount=maxcount, maxsize=maxsize, seed=seed,
                               workers=workers, show_progress=progress,
                               **({"max_image_pixels": max_image_pixels} if max_image_pixels is not None else {}))
    _run_stage(stage, config, quiet)


shards_app = typer.Typer(help="Inspect shard sets: verify, stats, unpack.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")


@shards_app.command("verify")
def shards_verify(
    shards: Path = typer.Option(..., "--shards", help="Shard set folder (with index.json)."),
    decode_images: bool = typer.Option(True, help="Decode every image fully with OpenCV (else header only)."),
    max_image_pixels: Optional[int] = typer.Option(
        None, "--max-image-pixels", min=1,
        help="An image with more pixels (read from its header, before decoding) is a bad sample. Default 100,000,000.",
    ),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Re-hash every shard, decode every sample; report corrupt or truncated shards and bad samples (exit 1)."""
    from pipelines import shards_verify as stage

    _run_stage(stage, stage.VerifyConfig(shards=shards, decode_images=decode_images, show_progress=progress,
                                         max_image_pixels=max_image_pixels), quiet)


@shards_app.command("stats")
def shards_stats(
    shards: Path = typer.Option(..., "--shards", help="Shard set folder (with index.json)."),
    picture: bool = typer.Option(True, help="Write stats.png (histograms of image sizes and mask areas)."),
    max_image_pixels: Optional[int] = typer.Option(
        None, "--max-image-pixels", min=1,
        help="A sample whose json claims more pixels is a bad sample. Default 100,000,000.",
    ),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Counts, sizes, targets per image and keyword coverage; writes stats.json and stats.png.

    Bad samples and shards are counted and listed (the statistics cover the good ones); exit 1 if any."""
    from pipelines import shards_stats as stage

    _run_stage(stage, stage.StatsConfig(shards=shards, picture=picture, max_image_pixels=max_image_pixels,
                                        show_progress=progress), quiet)


@shards_app.command("unpack")
def shards_unpack(
    shard_file: Path = typer.Option(..., "--shard", help="One .tar shard."),
    out: Path = typer.Option(..., "--out", help="Folder to extract its members into."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Extract a shard's files for inspection; member names that could escape OUT are refused."""
    from pipelines import shards_unpack as stage

    _run_stage(stage, stage.UnpackConfig(shard=shard_file, out=out, show_progress=progress), quiet)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    config: str = typer.Option("tiny", help="Built-in config name (tiny, keyseg-7b) or a YAML file."),
    shards: Optional[Path] = typer.Option(None, help="Shard set folder with index.json (from keyseg shard). Not needed with --dry-run."),
    out: Path = typer.Option(Path("runs/train"), help="Run folder: checkpoints, TensorBoard logs, metrics, config."),
    max_steps: Optional[int] = typer.Option(None, min=0, help="Stop after this many optimizer steps (0: save and export the initial model, an untrained baseline)."),
    resume: Optional[str] = typer.Option(None, help="auto (the latest checkpoint in OUT, if any) or a checkpoint tag folder."),
    gpus: int = typer.Option(0, min=0, help="Launch this many processes with torchrun (0: run in this process, e.g. under your own launcher)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve the config, build the model on the meta device, count parameters, print the DeepSpeed config; no weights or data."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Train KeySeg with DeepSpeed on streamed shards. Extra arguments KEY=VALUE override the config
    (e.g. optim.lr=1e-4 model.fusion=none data.workers=4); unknown keys are errors listing the valid ones."""
    from keyseg.training.config import load_train_config
    from pipelines import train as stage

    overrides = list(ctx.args)
    train_config = _call(load_train_config, config, overrides)
    if gpus:
        import subprocess
        import sys

        from keyseg.training.launch import torchrun_command

        raise typer.Exit(subprocess.call(torchrun_command(gpus, "cli", sys.argv[1:])))
    if not dry_run and shards is None:
        _fail("--shards is required (a folder written by keyseg shard)")
    run = stage.TrainRun(config=train_config, shards=shards or Path("."), out=out, max_steps=max_steps,
                         resume=resume, dry_run=dry_run, show_progress=progress)
    _run_stage(stage, run, quiet)


@app.command()
def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A training run folder (its latest checkpoint), its checkpoints/ folder, or one tag folder (e.g. RUN/checkpoints/best)."),
    out: Path = typer.Option(..., "--out", help="Folder for the exported model (safetensors + tokenizer + configs + provenance)."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Consolidate ZeRO shards, merge LoRA, and write a self-describing model folder."""
    from pipelines import export as stage

    _run_stage(stage, stage.ExportConfig(checkpoint=checkpoint, out=out, show_progress=progress), quiet)


@app.command()
def evaluate(
    shards: Path = typer.Option(..., help="Shard set folder with index.json."),
    split: list[str] = typer.Option(..., "--split", help="SOURCE:SPLIT to evaluate, repeatable (e.g. reasonseg:val, refcoco:testA)."),
    out: Path = typer.Option(..., help="Output folder: metrics.json, metrics.md, per_sample.jsonl, gallery/."),
    model: Optional[Path] = typer.Option(None, help="An exported model folder or a training run/checkpoint."),
    predictions: Optional[Path] = typer.Option(None, help="Folder of <sample key>_<target index>.png masks (values > 0 = foreground; refCOCO under the lisa protocol: <key>_<target>_<sentence>.png) to score instead of a model."),
    missing_as_empty: bool = typer.Option(False, "--missing-as-empty", help="With --predictions: count a missing PNG as an empty mask instead of failing (an unreadable one always fails)."),
    allow_skips: bool = typer.Option(False, "--allow-skips", help="Exit 0 even when samples could not be scored (corrupt or truncated shards); they are listed in metrics.json either way."),
    generate: bool = typer.Option(False, "--generate", help="Free generation instead of the reference teacher-forced answer \"[SEG]. [KEY].\"."),
    refer_protocol: str = typer.Option("lisa", "--refer-protocol", help="refCOCO family: 'lisa' scores every sentence of every ref (LISA's validation); 'release' the first sentence of each ref, asked bare (the KeySeg release's test)."),
    batch_size: int = typer.Option(4, min=1, help="Samples per data-loader batch (each query still runs in its own forward, as in LISA)."),
    visualize: int = typer.Option(0, min=0, help="Write the report gallery/index.html: every scored query, browsable, with pictures of the K worst and K best of each split."),
    gpus: int = typer.Option(0, min=0, help="Evaluate with this many processes (torchrun); each sample exactly once."),
    device: str = _device, dtype: str = _dtype, load_in: str = _load_in,
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """gIoU / cIoU by the LISA protocol for a model, or for any model's predicted masks."""
    from pipelines import evaluate as stage

    if gpus:
        import subprocess
        import sys

        from keyseg.training.launch import torchrun_command

        raise typer.Exit(subprocess.call(torchrun_command(gpus, "cli", sys.argv[1:])))
    config = stage.EvaluateConfig(shards=shards, splits=list(split), out=out, model=model, predictions=predictions,
                                  missing_as_empty=missing_as_empty, generate=generate, batch_size=batch_size,
                                  visualize=visualize, show_progress=progress, allow_skips=allow_skips,
                                  refer_protocol=refer_protocol, device=device, dtype=dtype, load_in=load_in)
    _run_stage(stage, config, quiet)


@app.command()
def predict(
    model: Path = typer.Option(..., help="An exported model folder or a training run/checkpoint."),
    image: Optional[Path] = typer.Option(None, help="Image file."),
    query: Optional[str] = typer.Option(None, help="What to segment, a phrase or a question."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="JSONL file of {\"image\": path, \"query\": text, \"id\": optional name} lines instead of --image/--query; image paths as on the command line (absolute or relative to the current folder). A bad line is reported and skipped."),
    out: Path = typer.Option(Path("predictions"), help="Folder for <id>_mask.png, <id>_overlay.png and predictions.jsonl."),
    generate: bool = typer.Option(True, help="Generate the answer freely (else the teacher-forced \"[SEG]. [KEY].\")."),
    device: str = _device, dtype: str = _dtype, load_in: str = _load_in,
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Segment what a query asks for in an image; print the answer and keyword; write mask and overlay PNGs."""
    from pipelines import predict as stage

    _run_stage(stage, stage.PredictConfig(model=model, out=out, image=image, query=query, queries=queries,
                                          generate=generate, device=device, dtype=dtype, load_in=load_in,
                                          show_progress=progress), quiet)


@app.command()
def chat(
    model: Path = typer.Option(..., help="An exported model folder or a training run/checkpoint."),
    image: Optional[Path] = typer.Option(None, help="The first image to ask about (later: /image PATH)."),
    out: Path = typer.Option(Path("chat"), help="Folder for turn_<n>_mask.png, turn_<n>_overlay.png and "
                                                "chat_history.jsonl."),
    generate: bool = typer.Option(True, help="Generate the answer freely (else the teacher-forced \"[SEG]. [KEY].\")."),
    device: str = _device, dtype: str = _dtype, load_in: str = _load_in,
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Ask a model about images interactively, one query per line (standard input may be a pipe)."""
    from pipelines import chat as stage

    _run_stage(stage, stage.ChatConfig(model=model, out=out, image=image, generate=generate, device=device,
                                       dtype=dtype, load_in=load_in, show_progress=progress), quiet)


@app.command()
def serve(
    model: Path = typer.Option(..., help="An exported model folder or a training run/checkpoint."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 lets anyone who reaches the port use "
                                               "the model."),
    port: int = typer.Option(7860, help="Port to listen on."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest image upload accepted, in MiB."),
    example: Optional[list[str]] = typer.Option(None, "--example", help="IMAGE::QUERY shown as a clickable "
                                                                         "example, repeatable."),
    generate: bool = typer.Option(True, help="Generate the answer freely (else the teacher-forced \"[SEG]. [KEY].\")."),
    device: str = _device, dtype: str = _dtype, load_in: str = _load_in,
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """A web page (Gradio) and a JSON endpoint (POST /api/segment) for a model."""
    from pipelines import serve as stage

    _run_stage(stage, stage.ServeConfig(model=model, host=host, port=port, max_upload_mb=max_upload_mb,
                                        examples=list(example or []), generate=generate, device=device,
                                        dtype=dtype, load_in=load_in, show_progress=progress), quiet)


demo_report_app = typer.Typer(help="What `make demo` records and reports: stage times, the summary, the README's pictures.",
                               no_args_is_help=True)
app.add_typer(demo_report_app, name="demo-report", hidden=True)


@demo_report_app.command("time")
def demo_report_time(
    stage_name: str = typer.Option(..., "--stage", help="The stage's name in the summary, e.g. train."),
    times_dir: Path = typer.Option(..., "--times-dir", help="Folder of the time records, e.g. runs/demo/times."),
    command: list[str] = typer.Argument(..., help="The stage's command, after --."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Run a stage's command; when it succeeds, record its wall time as TIMES_DIR/STAGE.json."""
    from pipelines import demo_report as stage

    _run_stage(stage, stage.TimeConfig(stage=stage_name, times_dir=times_dir, command=list(command)), quiet)


@demo_report_app.command("summary")
def demo_report_summary(
    demo_dir: Path = typer.Option(..., "--demo-dir", help="The demo run folder, e.g. runs/demo."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Print the scores before and after training and the stage times; write DEMO_DIR/summary.json."""
    from pipelines import demo_report as stage

    _run_stage(stage, stage.SummaryConfig(demo_dir=demo_dir), quiet)


@demo_report_app.command("pictures")
def demo_report_pictures(
    demo_dir: Path = typer.Option(..., "--demo-dir", help="A finished demo run folder."),
    shards: Path = typer.Option(..., "--shards", help="Its shard set folder (with stats.png)."),
    out: Path = typer.Option(..., "--out", help="Folder for the pictures, e.g. docs/images."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Write the README's pictures (prepare overlays, evaluation gallery, shard statistics) from a demo run."""
    from pipelines import demo_report as stage

    _run_stage(stage, stage.PicturesConfig(demo_dir=demo_dir, shards_dir=shards, out_dir=out), quiet)


@demo_report_app.command("screenshots")
def demo_report_screenshots(
    demo_dir: Path = typer.Option(..., "--demo-dir", help="A finished demo run folder."),
    out: Path = typer.Option(..., "--out", help="Folder for chat.svg and serve.png, e.g. docs/images."),
    port: int = typer.Option(7871, help="A free local port for the server while the page is captured."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Screenshots of `keyseg chat` and `keyseg serve` on the trained demo model, for the README."""
    from pipelines import demo_report as stage

    _run_stage(stage, stage.ScreenshotsConfig(demo_dir=demo_dir, out_dir=out, port=port), quiet)


@app.command("reproduce-check")
def reproduce_check(
    data_dir: str = typer.Option("", "--data-dir", help="Data folder in LISA's layout (empty: unset)."),
    recipe: str = typer.Option("keyseg", "--recipe", help="keyseg (from LISA-7B-v1), lisa (LISA from LLaVA) or lisa+keyseg."),
    lisa_ckpt: str = typer.Option("", "--lisa-ckpt", help="LISA-7B-v1 folder (recipe keyseg; empty: unset)."),
    llava_dir: str = typer.Option("", "--llava-dir", help="LLaVA folder, e.g. LLaVA-Lightning-7B-v1-1 (empty: unset)."),
    clip_dir: str = typer.Option("", "--clip-dir", help="clip-vit-large-patch14 folder (empty: unset)."),
    sam_ckpt: str = typer.Option("", "--sam-ckpt", help="sam_vit_h_4b8939.pth (empty: unset; lisa recipes, keyseg-7b-release need it)."),
    gpus: int = typer.Option(1, "--gpus", min=0, help="GPUs the run will use."),
    llm_base_url: str = typer.Option("", "--llm-base-url", help="OpenAI-compatible endpoint for keyword mining (empty: unset)."),
    llm_model: str = typer.Option("", "--llm-model", help="Model name on that endpoint (empty: unset; set both or neither)."),
    preset: str = typer.Option("keyseg-7b-release", "--preset", help="KeySeg training preset: keyseg-7b-release or keyseg-7b."),
    progress: bool = _progress, quiet: bool = _quiet,
) -> None:
    """Check every path and prerequisite of `make reproduce` up front; exit 1 when any is missing."""
    from pipelines import reproduce_check as stage

    _run_stage(stage, stage.ReproduceCheckConfig(data_dir=data_dir, recipe=recipe, lisa_ckpt=lisa_ckpt,
                                                 llava_dir=llava_dir, clip_dir=clip_dir, sam_ckpt=sam_ckpt, gpus=gpus,
                                                 llm_base_url=llm_base_url, llm_model=llm_model, preset=preset), quiet)


if __name__ == "__main__":
    app()
