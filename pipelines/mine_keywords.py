"""`keyseg mine-keywords`: generate or validate keyword_outputs.json.

generate: one keyword per explanatory record from a backend (openai, hf, heuristic),
          checked against the text, retried once with the reason, else flagged (null).
validate: a verdict for every keyword of an existing file (e.g. the published one);
          `--fix OUT` writes a corrected copy, never touching the input.

Outputs (generate): the keyword file in the published schema and order, a JSON report
(per record: keyword, evidence, verdict, reason; summary; prompt and config used) and
`mine_keywords_config.json` beside the keyword file.

Ctrl-C: nothing new is sent, the requests in flight get `interrupt_grace` seconds to land
in the answer cache (a second Ctrl-C stops at once), no output is written, and the same
command resumes from the cache.

The library does the work: keyseg.keywords.miner asks and checks, keyseg.keywords.validation
gives the verdicts and the fixed keywords, keyseg.keywords.batch_api reads and writes the
OpenAI Batch API files. This stage wires them to the files and the console.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keyseg.errors import UsageError
from keyseg.io import atomic_write_json
from keyseg.keywords import batch_api
from keyseg.keywords.backends import DEFAULT_MAX_RETRY_WAIT, HeuristicBackend
from keyseg.keywords.cache import AnswerCache, default_cache_dir
from keyseg.keywords.heuristic import HEURISTIC_LIMITS
from keyseg.keywords.miner import DEFAULT_INTERRUPT_GRACE, KeywordMiner, MinedKeyword, MiningInterrupted
from keyseg.keywords.prompt import prompt_description
from keyseg.keywords.records import default_output_path, load_records
from keyseg.keywords.validation import generate_row, validate_row
from keyseg.runner import StageResult, print_problems, progress_bar, summary_table

BACKENDS = ("auto", "openai", "hf", "heuristic")


@dataclass
class MineKeywordsConfig:
    mode: str  # "generate" or "validate"
    input: Path  # explanatory/train.json, a keyword file, or a prepared manifest.jsonl
    out: Path | None = None  # generate: keyword file (default: ReasonSeg/explanatory_key/keyword_outputs.json)
    backend: str = "auto"  # auto: openai when --model or --base-url is given, else heuristic
    base_url: str | None = None  # OpenAI-compatible endpoint, e.g. http://localhost:8000/v1
    model: str | None = None  # server model name (openai) or a local folder (hf)
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; the key itself is never stored
    concurrency: int = 8
    requests_per_minute: float | None = None
    timeout: float = 60.0  # seconds per request
    max_attempts: int = 4  # our attempts per request, each with the client's own retries inside
    max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT  # seconds; a longer Retry-After is cut to this
    interrupt_grace: float = DEFAULT_INTERRUPT_GRACE  # seconds in-flight requests get after Ctrl-C
    cache_dir: Path | None = None  # default: the user cache directory
    use_cache: bool = True
    report: Path | None = None
    fix: Path | None = None  # validate: write a corrected copy here
    price_per_mtok: str | None = None  # "IN[,OUT]" US$ per million prompt/completion tokens
    batch_file: Path | None = None  # write OpenAI Batch API requests here and stop
    batch_results: Path | None = None  # ingest Batch API results into the cache first
    show_progress: bool = True


@dataclass(kw_only=True)
class MineKeywordsResult(StageResult):
    """`failed`: records whose backend gave up (they keep a null keyword); `report`: the JSON report."""

    summary: dict
    output_path: Path | None  # the keyword file (generate), the fixed copy (validate --fix), the batch file


def resolve_backend_name(config: MineKeywordsConfig) -> str:
    if config.backend not in BACKENDS:
        raise UsageError(f"unknown backend {config.backend!r}; choose from {', '.join(BACKENDS)}")
    if config.backend != "auto":
        return config.backend
    return "openai" if (config.model or config.base_url) else "heuristic"


def make_backend(config: MineKeywordsConfig, notify=None):
    name = resolve_backend_name(config)
    if name == "heuristic":
        return HeuristicBackend()
    if not config.model:
        raise UsageError(f"--model is required for the {name} backend")
    if name == "hf":
        from keyseg.keywords.backends import HFBackend

        if not Path(config.model).is_dir():
            raise UsageError(f"{config.model}: the hf backend needs a local model folder")
        return HFBackend(config.model)
    from keyseg.keywords.backends import OpenAIBackend

    # Local servers (vLLM, Ollama, llama.cpp) accept any key; the client insists on one.
    api_key = os.environ.get(config.api_key_env) or "unused"
    return OpenAIBackend(model=config.model, api_key=api_key, base_url=config.base_url, timeout=config.timeout,
                         requests_per_minute=config.requests_per_minute, max_attempts=config.max_attempts,
                         max_retry_wait=config.max_retry_wait, notify=notify)


def run(config: MineKeywordsConfig, console: Console | None = None) -> MineKeywordsResult:
    console = console or Console(stderr=True)
    if config.mode not in ("generate", "validate"):
        raise UsageError(f"unknown mode {config.mode!r}")
    # Argument mistakes must surface before any request is paid for.
    prices = parse_prices(config.price_per_mtok)
    if config.fix and Path(config.fix).resolve() == Path(config.input).resolve():
        raise UsageError("--fix must name a new file: the input is never overwritten")
    records = load_records(config.input)

    def notify(text: str) -> None:  # one line, whatever a file name or the server put in it
        console.print(escape(text.replace("\r", "\\r").replace("\n", "\\n")), soft_wrap=True, highlight=False)

    backend = make_backend(config, notify)
    cache_folder = (config.cache_dir or default_cache_dir()) if config.use_cache else None
    # The heuristic is instant and deterministic: caching it would only litter the disk.
    cache = AnswerCache(cache_folder if backend.name != "heuristic" else None)

    if config.batch_results:
        ingested, skipped = batch_api.ingest_results(config.batch_results, cache)
        notify(f"ingested {ingested} batch results from {config.batch_results}"
               + (f"; skipped {skipped} without a usable answer (asked live instead)" if skipped else ""))
    if config.batch_file:
        if not batch_api.can_write_requests(backend):
            raise UsageError("--batch-api-requests needs the openai backend (--model NAME)")
        written = batch_api.write_requests(config.batch_file, records, backend, cache)
        notify(f"wrote {written} requests to {config.batch_file} (OpenAI Batch API input format); "
               f"run again with --batch-api-results to use the answers")
        return MineKeywordsResult(summary={"batch_requests": written}, output_path=Path(config.batch_file))

    miner = KeywordMiner(backend, cache, concurrency=config.concurrency, interrupt_grace=config.interrupt_grace,
                         notify=notify)
    try:
        mined = _mine_with_progress(miner, records, console, config.show_progress, config.mode)
    except MiningInterrupted:
        kept = f"{miner.stats.calls} answer(s) received this run are in the cache" if cache.folder else \
            "the cache is off, so no answer was kept"
        notify(f"interrupted: {kept}; run the same command again to resume")
        raise KeyboardInterrupt from None
    used = _config_used(config, backend, cache_folder)

    if config.mode == "generate":
        out = Path(config.out) if config.out else default_output_path(config.input)
        rows = [generate_row(index, record, result) for index, (record, result) in enumerate(zip(records, mined))]
        atomic_write_json(out, [record.to_output(result.keyword) for record, result in zip(records, mined)])
        report_path = Path(config.report) if config.report else out.with_suffix(".report.json")
        atomic_write_json(out.parent / "mine_keywords_config.json", used)
    else:
        out = Path(config.fix) if config.fix else None
        rows = [validate_row(index, record, result, backend.name)
                for index, (record, result) in enumerate(zip(records, mined))]
        if out is not None:
            atomic_write_json(out, [record.to_output(row["fixed"]) for record, row in zip(records, rows)])
        report_path = Path(config.report) if config.report else (
            out.with_suffix(".report.json") if out else Path.cwd() / f"{Path(config.input).stem}.validation.json")

    summary = _summary(rows, miner, config, prices)
    atomic_write_json(report_path, {"mode": config.mode, "summary": summary, "prompt": prompt_description(),
                                    "backend_limits": HEURISTIC_LIMITS if backend.name == "heuristic" else None,
                                    "config": used, "records": rows})
    _print_summary(console, rows, summary, config.mode, report_path, out)
    # A record whose backend gave up is a failed record; a flagged keyword is a finding.
    failed = [(record, result) for record, result in zip(records, mined) if result.error is not None]
    problems = [f"{record.image}: {result.error}" for record, result in failed]
    print_problems(console, problems, len(failed), report_path)
    return MineKeywordsResult(failed=len(failed), problems=problems, report=report_path, summary=summary,
                              output_path=out)


def _mine_with_progress(miner: KeywordMiner, records, console, show: bool, mode: str) -> list[MinedKeyword]:
    with progress_bar(console, show) as progress:
        bar = progress.add_task(mode, total=len(records))

        def done(_result: MinedKeyword) -> None:
            progress.advance(bar)

        async def mine_then_close() -> list[MinedKeyword]:
            # One event loop for the client's whole life: its connections belong to it.
            loop = asyncio.get_running_loop()
            restore = _route_sigint(lambda: loop.call_soon_threadsafe(miner.interrupt))
            try:
                return await miner.mine_all(records, on_done=done)
            finally:
                restore()
                await miner.backend.aclose()

        return asyncio.run(mine_then_close())


def _route_sigint(callback):
    """Ctrl-C calls `callback` instead of raising KeyboardInterrupt; returns the undo.

    Only where Python handles SIGINT itself (main thread, a Python-level handler): an
    ignored SIGINT stays ignored, and a thread cannot set handlers."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        return lambda: None
    signal.signal(signal.SIGINT, lambda signum, frame: callback())
    return lambda: signal.signal(signal.SIGINT, previous)


def parse_prices(text: str | None) -> tuple[float, float] | None:
    """"IN" or "IN,OUT" US$ per million tokens -> (input price, output price)."""
    if not text:
        return None
    try:
        prices = [float(part) for part in text.split(",")]
    except ValueError:
        prices = []
    if len(prices) not in (1, 2) or any(price < 0 for price in prices):
        raise UsageError(f"--price-per-mtok {text!r}: expected IN or IN,OUT in US$ per million tokens, e.g. 0.15,0.6")
    return prices[0], prices[-1]


def _summary(rows: list[dict], miner: KeywordMiner, config: MineKeywordsConfig, prices) -> dict:
    verdicts: dict[str, int] = {}
    for row in rows:
        verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
    stats = asdict(miner.stats)
    summary = {"records": len(rows), "with_keyword": sum(row["keyword"] is not None for row in rows),
               "verdicts": verdicts, **stats}
    if config.mode == "validate":
        summary["own_keyword_differs"] = sum(row["own_differs"] for row in rows)
    if prices:
        input_price, output_price = prices
        summary["estimated_cost_usd"] = round(
            (stats["prompt_tokens"] * input_price + stats["completion_tokens"] * output_price) / 1e6, 6)
    return summary


def _config_used(config: MineKeywordsConfig, backend, cache_folder) -> dict:
    used = {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(config).items()}
    used.update(backend_resolved=backend.name, model_resolved=backend.model,
                cache_dir=str(cache_folder) if cache_folder else None)
    return used  # holds the name of the key's variable, never the key


def _print_summary(console: Console, rows, summary: dict, mode: str, report_path: Path, out: Path | None) -> None:
    table = summary_table(f"keyseg mine-keywords {mode}", "figure", ["value"])
    table.add_row("records", str(summary["records"]))
    for verdict, count in sorted(summary["verdicts"].items()):
        table.add_row(f"verdict: {escape(verdict)}", str(count))
    if "own_keyword_differs" in summary:
        table.add_row("own keyword differs", str(summary["own_keyword_differs"]))
    for key in ("calls", "cache_hits", "deduplicated", "retries", "client_retries", "failures", "prompt_tokens",
                "completion_tokens"):
        table.add_row(key.replace("_", " "), str(summary[key]))
    if "estimated_cost_usd" in summary:
        table.add_row("estimated cost (US$)", f"{summary['estimated_cost_usd']:.4f}")
    console.print(table)
    flagged = [row for row in rows if row["verdict"] != "ok"]
    if flagged:
        detail = Table(title=f"flagged records ({len(flagged)})", box=box.SIMPLE_HEAD)
        for column in ("index", "keyword", "verdict", "reason"):
            detail.add_column(column, overflow="fold", no_wrap=column != "reason")
        for row in flagged[:40]:  # keywords and reasons quote the data: escaped
            detail.add_row(str(row["index"]), escape(str(row["keyword"])), escape(row["verdict"]),
                           escape(row["reason"]))
        console.print(detail)
        if len(flagged) > 40:
            console.print(f"... and {len(flagged) - 40} more in the report")
    console.print(escape(f"report: {report_path}" + (f"\nkeywords: {out}" if out else "")), highlight=False)
