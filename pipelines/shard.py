"""`keyseg shard`: prepared manifests + masks + keywords -> WebDataset shards.

Output (`OUT` is e.g. shards/demo):

    OUT/<source>/<split>/<source>-<split>-%06d.tar   one sample per image (keyseg.shards.samples)
    OUT/<source>/<split>/_SUCCESS.json               the split's shards and input fingerprint
    OUT/index.json                                   every split, shard counts, bytes, sha256,
                                                     input hashes and the config used

Idempotent and resumable per split: a split whose inputs (manifest, keyword file, config)
are unchanged and whose shards are all present is skipped; any other split is rewritten
from scratch (shards go to temporary names and are renamed when complete).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from keyseg.io import atomic_write_json, read_jsonl, sha256_file
from keyseg.masks.png import read_mask_png
from keyseg.shards.samples import SAMPLE_FORMAT_VERSION, build_sample_json, sample_json_bytes
from keyseg.shards.tario import ShardWriter

INDEX = "index.json"
SUCCESS = "_SUCCESS.json"
DEFAULT_KEYWORDS = Path("reason_seg") / "ReasonSeg" / "explanatory_key" / "keyword_outputs.json"


@dataclass
class ShardConfig:
    prepared: Path  # output folder of `keyseg prepare`
    out: Path  # shard set folder, e.g. shards/demo
    keywords: Path | None = None  # keyword_outputs.json (default: the data dir's explanatory_key/)
    data_dir: Path | None = None  # where the images are (default: from prepare_config.json)
    splits: list[str] = field(default_factory=list)  # "source:split" filters; empty: every prepared split
    maxcount: int = 10000  # samples per shard at most
    maxsize: int = 300_000_000  # bytes per shard, about (a shard closes once it passes this)
    seed: int = 0  # write-time shuffle
    workers: int = 0  # 0: one per core
    show_progress: bool = True


@dataclass
class ShardResult:
    index: dict
    errors: list[dict]
    skipped_splits: list[str]


def _keywords_by_image(path: Path | None) -> dict[str, str | None]:
    if path is None:
        return {}
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    return {Path(record["image"]).name: record.get("keyword") for record in records}


def _manifests(prepared: Path, wanted: list[str]) -> dict[str, Path]:
    found = {}
    for manifest in sorted(prepared.glob("*/*/manifest.jsonl")):
        name = f"{manifest.parent.parent.name}:{manifest.parent.name}"
        found[name] = manifest
    if wanted:
        missing = [name for name in wanted if name not in found]
        if missing:
            raise FileNotFoundError(f"no prepared manifest for {', '.join(missing)} under {prepared} "
                                    f"(found: {', '.join(found) or 'none'})")
        found = {name: found[name] for name in wanted}
    if not found:
        raise FileNotFoundError(f"{prepared}: no <source>/<split>/manifest.jsonl (run keyseg prepare first)")
    return found


def _record_keywords(record: dict, keywords: dict[str, str | None]) -> list[str | None]:
    """ReasonSeg train: the mined keyword; refer: the expression; otherwise null."""
    if record["source"].startswith("refcoco"):
        return [target["texts"][0] if target["texts"] else None for target in record["targets"]]
    if record["source"] == "reasonseg" and record["split"] == "train":
        keyword = keywords.get(Path(record["image"]).name)
        return [keyword for _ in record["targets"]]
    return [None for _ in record["targets"]]


def build_sample(task: tuple[dict, str, str, list]) -> tuple[str, dict | None, str | None]:
    """(key, members or None, error) for one record; runs in worker processes."""
    record, data_dir, prepared, keywords = task
    try:
        image = (Path(data_dir) / record["image"]).read_bytes()
        masks = [read_mask_png(Path(prepared) / target["mask"]) for target in record["targets"]]
        for target, mask in zip(record["targets"], masks):
            if mask.shape != (record["height"], record["width"]):
                raise ValueError(f"mask {target['mask']} is {mask.shape[1]}x{mask.shape[0]}, "
                                 f"record says {record['width']}x{record['height']}")
        sample = build_sample_json(record, masks, keywords)
    except (OSError, ValueError) as error:
        return record["id"], None, str(error)
    return record["id"], {"jpg": image, "json": sample_json_bytes(sample)}, None


def _fingerprint(manifest: Path, keywords_hash: str | None, config: ShardConfig) -> str:
    settings = json.dumps({"format": SAMPLE_FORMAT_VERSION, "maxcount": config.maxcount, "maxsize": config.maxsize,
                           "seed": config.seed, "keywords": keywords_hash}, sort_keys=True)
    return hashlib.sha256((sha256_file(manifest) + settings).encode()).hexdigest()


def _split_done(split_dir: Path, fingerprint: str) -> dict | None:
    try:
        done = json.loads((split_dir / SUCCESS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if done.get("fingerprint") != fingerprint:
        return None
    if not all((split_dir.parent.parent / shard["path"]).is_file() for shard in done["shards"]):
        return None
    return done


def run(config: ShardConfig, console: Console | None = None) -> ShardResult:
    console = console or Console(stderr=True)
    prepared, out = Path(config.prepared).resolve(), Path(config.out).resolve()
    prepare_config = json.loads((prepared / "prepare_config.json").read_text()) \
        if (prepared / "prepare_config.json").is_file() else {}
    data_dir = Path(config.data_dir or prepare_config.get("data_dir") or ".").resolve()
    keywords_path = config.keywords or (data_dir / DEFAULT_KEYWORDS if (data_dir / DEFAULT_KEYWORDS).is_file() else None)
    keywords = _keywords_by_image(keywords_path)
    keywords_hash = sha256_file(keywords_path) if keywords_path else None
    manifests = _manifests(prepared, config.splits)
    workers = config.workers or os.cpu_count() or 1
    out.mkdir(parents=True, exist_ok=True)

    splits, errors, skipped = {}, [], []
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    columns = (TextColumn("[bold]{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, disable=not config.show_progress) as progress:
            for name, manifest in manifests.items():
                source, split = name.split(":")
                split_dir = out / source / split
                # Only ReasonSeg train samples carry mined keywords: other splits ignore the file.
                uses_keywords = name == "reasonseg:train"
                fingerprint = _fingerprint(manifest, keywords_hash if uses_keywords else None, config)
                done = _split_done(split_dir, fingerprint)
                if done is None:
                    done, split_errors = _write_split(name, manifest, split_dir, out, data_dir, prepared, keywords,
                                                      config, fingerprint, pool, progress)
                    errors += split_errors
                else:
                    skipped.append(name)
                splits[name] = done
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()

    index = {
        "format_version": SAMPLE_FORMAT_VERSION,
        "config": {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(config).items()},
        "inputs": {
            "prepared": str(prepared), "data_dir": str(data_dir),
            "keywords": {"path": str(keywords_path), "sha256": keywords_hash} if keywords_path else None,
            "manifests": {name: {"path": str(path), "sha256": sha256_file(path)} for name, path in manifests.items()},
        },
        "splits": {name: {key: value for key, value in done.items() if key != "fingerprint"}
                   for name, done in splits.items()},
    }
    index["totals"] = {key: sum(split[key] for split in index["splits"].values())
                       for key in ("samples", "targets", "bytes")}
    index["totals"]["shards"] = sum(len(split["shards"]) for split in index["splits"].values())
    atomic_write_json(out / INDEX, index)
    if errors:
        atomic_write_json(out / "shard_errors.json", errors)
    _print_summary(console, index, skipped, errors, out)
    return ShardResult(index=index, errors=errors, skipped_splits=skipped)


def _write_split(name, manifest, split_dir, out, data_dir, prepared, keywords, config, fingerprint, pool, progress):
    started = time.perf_counter()
    records = read_jsonl(manifest)
    # Sort first so the shuffle depends on the seed only, not on the manifest's order.
    records.sort(key=lambda record: record["id"])
    random.Random(f"{config.seed}:{name}").shuffle(records)
    split_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*split_dir.glob("*.tar"), *split_dir.glob(".*.tmp"), split_dir / SUCCESS]:
        stale.unlink(missing_ok=True)

    source, split = name.split(":")
    writer = ShardWriter(split_dir / f"{source}-{split}-%06d.tar", config.maxcount, config.maxsize)
    tasks = [(record, str(data_dir), str(prepared), _record_keywords(record, keywords)) for record in records]
    bar = progress.add_task(name, total=len(tasks))
    results = pool.imap(build_sample, tasks, chunksize=8) if pool else map(build_sample, tasks)
    errors, samples, targets, with_keyword = [], 0, 0, 0
    try:
        for (key, members, error), (record, _, _, record_keywords) in zip(results, tasks):
            if members is None:
                errors.append({"split": name, "id": key, "reason": error})
            else:
                writer.write(key, members)
                samples += 1
                targets += len(record["targets"])
                with_keyword += sum(keyword is not None for keyword in record_keywords)
            progress.advance(bar)
        shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    done = {
        "source": source, "split": split, "samples": samples, "targets": targets,
        "targets_with_keyword": with_keyword, "bytes": sum(shard.bytes for shard in shards),
        "shards": [{"path": shard.path.relative_to(out).as_posix(), "samples": shard.samples, "bytes": shard.bytes,
                    "sha256": shard.sha256} for shard in shards],
        "errors": len(errors), "seconds": round(time.perf_counter() - started, 3), "fingerprint": fingerprint,
    }
    atomic_write_json(split_dir / SUCCESS, done)
    return done, errors


def _print_summary(console: Console, index: dict, skipped: list[str], errors: list[dict], out: Path) -> None:
    table = Table(title=f"keyseg shard -> {out}", box=box.SIMPLE_HEAD)
    table.add_column("source:split", no_wrap=True)
    for column in ("images", "targets", "kw", "shards", "MB", "errors", "status"):
        table.add_column(column, justify="right")
    for name, split in index["splits"].items():
        table.add_row(name, str(split["samples"]), str(split["targets"]), str(split["targets_with_keyword"]),
                      str(len(split["shards"])), f"{split['bytes'] / 1e6:.1f}",
                      f"[red]{split['errors']}[/]" if split["errors"] else "0",
                      "kept" if name in skipped else "new")
    console.print(table)
    for error in errors[:20]:
        console.print(f"[red]error[/] {error['split']} {error['id']}: {error['reason']}")
    if errors:
        console.print(f"[red]{len(errors)} sample(s) failed[/]; the others were written. "
                      f"Details: {out / 'shard_errors.json'}")
