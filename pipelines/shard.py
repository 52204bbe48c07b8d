"""`keyseg shard`: prepared manifests + masks + keywords -> WebDataset shards.

Output (`OUT` is e.g. shards/demo):

    OUT/<source>/<split>/<source>-<split>-%06d.tar   one sample per image (keyseg.shards.samples);
                                                     per conversation for VQA records
    OUT/<source>/<split>/_SUCCESS.json               the split's shards and input fingerprint
    OUT/index.json                                   every split, shard counts, bytes, sha256,
                                                     input hashes and the config used
    OUT/README.md                                    dataset card: `datasets.load_dataset(OUT,
                                                     "reasonseg")` loads it (keyseg.shards.card)

Idempotent and resumable per split: a split whose inputs (manifest, keyword file, config)
are unchanged and whose shards are all present is skipped; any other split is rewritten
from scratch (shards go to temporary names and are renamed when complete).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from keyseg.data.samples import vqa_problem
from keyseg.errors import DataError
from keyseg.formats.fields import is_int, is_text, type_name
from keyseg.formats.manifest import check_record
from keyseg.formats.refer import is_refer_source
from keyseg.images import DEFAULT_MAX_IMAGE_PIXELS, ImageError, image_info, image_pixel_bound, set_max_image_pixels
from keyseg.io import atomic_write_json, sha256_file
from keyseg.masks.png import read_mask_png
from keyseg.paths import confined_path
from keyseg.runner import StageResult, print_problems, progress_bar, summary_table, worker_count, worker_pool
from keyseg.shards.index import write_shard_set
from keyseg.shards.samples import (SAMPLE_FORMAT_VERSION, build_sample_json, check_conversations, check_sample_json,
                                   sample_json_bytes)
from keyseg.shards.tario import ShardWriter
from keyseg.sources.files import data_file

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
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images and masks are refused unread


@dataclass
class ShardResult(StageResult):
    index: dict
    errors: list[dict]  # {"split", "id", "reason"} per sample that could not be written
    skipped_splits: list[str]


def _keywords_by_image(path: Path | None) -> tuple[dict[str, str | None], list[dict]]:
    """Image file name -> mined keyword, and an error row per entry that cannot be used."""
    if path is None:
        return {}, []
    try:
        records = json.loads(Path(path).read_bytes())
    except RecursionError:
        raise DataError(path, "not a keyword file (JSON nested too deeply)") from None
    except ValueError as error:  # not JSON, not UTF-8
        raise DataError(path, f"not a keyword file ({error})") from None
    if not isinstance(records, list):
        raise DataError(path, f"not a keyword file (a JSON {type_name(records)}, expected a list)")
    keywords, errors = {}, []
    for position, record in enumerate(records):
        keyword = record.get("keyword") if isinstance(record, dict) else None
        usable = isinstance(record, dict) and is_text(record.get("image")) and (keyword is None or is_text(keyword))
        if not usable:
            errors.append({"split": "reasonseg:train", "id": None, "file": str(path), "line": None,
                           "reason": f"{path}: entry {position} needs an `image` string and a string or null "
                                     "`keyword`; its keyword is not used"})
            continue
        keywords[Path(record["image"]).name] = keyword
    return keywords, errors


def _manifests(prepared: Path, wanted: list[str]) -> dict[str, tuple[str, str, Path]]:
    """"source:split" -> (source, split, manifest path), from the folder names."""
    found = {}
    for manifest in sorted(prepared.glob("*/*/manifest.jsonl")):
        source, split = manifest.parent.parent.name, manifest.parent.name
        found[f"{source}:{split}"] = (source, split, manifest)
    if wanted:
        missing = [name for name in wanted if name not in found]
        if missing:
            raise FileNotFoundError(f"no prepared manifest for {', '.join(missing)} under {prepared} "
                                    f"(found: {', '.join(found) or 'none'})")
        found = {name: found[name] for name in wanted}
    if not found:
        raise FileNotFoundError(f"{prepared}: no <source>/<split>/manifest.jsonl (run keyseg prepare first)")
    return found


def _read_manifest(manifest: Path, name: str) -> tuple[list[dict], list[dict]]:
    """The usable records of a manifest, and an error row (file and line) per unusable line."""
    records, errors, seen = [], [], set()
    for number, line in enumerate(manifest.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            reason = check_record(record)
        except RecursionError:
            reason = "not JSON (nested too deeply)"
        except ValueError as error:  # not JSON, not UTF-8
            reason = f"not JSON ({error})"
        if reason is None and record["id"] in seen:
            reason = f"`id` {record['id']} appears on an earlier line too"
        if reason is not None:
            errors.append({"split": name, "id": None, "file": str(manifest), "line": number,
                           "reason": f"{manifest} line {number}: record {reason}"})
            continue
        seen.add(record["id"])
        records.append(record)
    return records, errors


def _record_keywords(record: dict, keywords: dict[str, str | None]) -> list[str | None]:
    """ReasonSeg train: the mined keyword; refer: the expression; otherwise null."""
    if is_refer_source(record["source"]):
        return [target["texts"][0] if target["texts"] else None for target in record["targets"]]
    if record["source"] == "reasonseg" and record["split"] == "train":
        keyword = keywords.get(Path(record["image"]).name)
        return [keyword for _ in record["targets"]]
    return [None for _ in record["targets"]]


def build_sample(task: tuple[dict, str, str, list, int]) -> tuple[str, dict | None, str | None]:
    """(key, members or None, error) for one record; runs in worker processes."""
    record, data_dir, prepared, keywords, pixel_bound = task
    set_max_image_pixels(pixel_bound)  # a worker is a separate process: the run's bound is set here
    turns = record.get("conversations")
    if turns is not None:
        # VQA (LLaVA-Instruct): the conversation instead of targets; refused here when the
        # loader would refuse it, so no shard holds a sample every reader skips.
        reason = check_conversations(turns) or (vqa_problem(turns) if not record["targets"] else
                                                "a record has either targets or conversations, not both")
        if reason is not None:
            return record["id"], None, f"bad conversation: {reason}"
    else:
        # A ref without sentences gives no query (the reference iterates over sentences): drop it.
        kept = [index for index, target in enumerate(record["targets"]) if target.get("texts")]
        if not kept:
            return record["id"], None, "no target has a text (refs without sentences give no query)"
        record = {**record, "targets": [record["targets"][index] for index in kept]}
        keywords = [keywords[index] for index in kept]
    try:
        # Paths come from the manifest: read only inside the data folder and the prepared folder.
        image = data_file(data_dir, record["image"], "manifest `image`").read_bytes()
        try:
            image_info(image)  # the header only (JPEG): a decompression bomb is refused, never packed
        except ImageError as error:
            raise DataError(record["image"], str(error)) from None
        masks = [read_mask_png(confined_path(prepared, target["mask"], "manifest `mask`"))
                 for target in record["targets"]]
        for target, mask in zip(record["targets"], masks):
            if mask.shape != (record["height"], record["width"]):
                raise ValueError(f"mask {target['mask']} is {mask.shape[1]}x{mask.shape[0]}, "
                                 f"record says {record['width']}x{record['height']}")
        sample = build_sample_json(record, masks, keywords)
        reason = check_sample_json(sample)  # what every reader will check: never pack a sample they refuse
        if reason is not None:
            raise DataError(None, reason)
    except (OSError, ValueError) as error:  # DataError and ImageError are ValueErrors
        return record["id"], None, str(error)
    return record["id"], {"jpg": image, "json": sample_json_bytes(sample)}, None


def _fingerprint(manifest: Path, keywords_hash: str | None, config: ShardConfig) -> str:
    settings = json.dumps({"format": SAMPLE_FORMAT_VERSION, "maxcount": config.maxcount, "maxsize": config.maxsize,
                           "seed": config.seed, "keywords": keywords_hash,
                           "max_image_pixels": config.max_image_pixels}, sort_keys=True)
    return hashlib.sha256((sha256_file(manifest) + settings).encode()).hexdigest()


def _split_done(split_dir: Path, fingerprint: str) -> dict | None:
    """The split's _SUCCESS.json when it is current and whole, else None (the split is redone)."""
    try:
        done = json.loads((split_dir / SUCCESS).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(done, dict) or done.get("fingerprint") != fingerprint:
        return None
    counts = ("samples", "targets", "targets_with_keyword", "bytes", "errors")
    if not all(is_int(done.get(key)) for key in counts) or not isinstance(done.get("shards"), list):
        return None
    for shard in done["shards"]:
        if not isinstance(shard, dict) or not is_text(shard.get("path")):
            return None
        try:
            if not confined_path(split_dir.parent.parent, shard["path"]).is_file():
                return None
        except DataError:
            return None
    return done


def run(config: ShardConfig, console: Console | None = None) -> ShardResult:
    console = console or Console(stderr=True)
    with image_pixel_bound(config.max_image_pixels):
        return _run(config, console)


def _prepared_data_dir(prepared: Path) -> str | None:
    """The data dir `keyseg prepare` recorded in prepare_config.json, if any."""
    path = prepared / "prepare_config.json"
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as error:
        raise DataError(path, f"not JSON ({error}); pass --data-dir or rerun keyseg prepare") from None
    data_dir = recorded.get("data_dir") if isinstance(recorded, dict) else None
    if data_dir is not None and not is_text(data_dir):
        raise DataError(path, "`data_dir` is not a string; pass --data-dir or rerun keyseg prepare")
    return data_dir


def _run(config: ShardConfig, console: Console) -> ShardResult:
    prepared, out = Path(config.prepared).resolve(), Path(config.out).resolve()
    data_dir = Path(config.data_dir or _prepared_data_dir(prepared) or ".").resolve()
    keywords_path = config.keywords or (data_dir / DEFAULT_KEYWORDS if (data_dir / DEFAULT_KEYWORDS).is_file() else None)
    keywords, keyword_errors = _keywords_by_image(keywords_path)
    keywords_hash = sha256_file(keywords_path) if keywords_path else None
    manifests = _manifests(prepared, config.splits)
    workers = worker_count(config.workers)
    out.mkdir(parents=True, exist_ok=True)

    splits, errors, skipped = {}, [], []
    if "reasonseg:train" in manifests:
        errors += keyword_errors
    with worker_pool(workers) as pool, progress_bar(console, config.show_progress) as progress:
        for name, (source, split, manifest) in manifests.items():
            split_dir = out / source / split
            # Only ReasonSeg train samples carry mined keywords: other splits ignore the file.
            uses_keywords = name == "reasonseg:train"
            fingerprint = _fingerprint(manifest, keywords_hash if uses_keywords else None, config)
            done = _split_done(split_dir, fingerprint)
            if done is None:
                done, split_errors = _write_split(name, source, split, manifest, split_dir, out, data_dir,
                                                  prepared, keywords, config, fingerprint, pool, progress)
                errors += split_errors
            else:
                skipped.append(name)
            splits[name] = done

    index = write_shard_set(
        out,
        config={key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(config).items()},
        inputs={
            "prepared": str(prepared), "data_dir": str(data_dir),
            "keywords": {"path": str(keywords_path), "sha256": keywords_hash} if keywords_path else None,
            "manifests": {name: {"path": str(path), "sha256": sha256_file(path)}
                          for name, (_, _, path) in manifests.items()},
        },
        splits={name: {key: value for key, value in done.items() if key != "fingerprint"}
                for name, done in splits.items()})
    if errors:
        atomic_write_json(out / "shard_errors.json", errors)
    problems = [f"{error['split']}{'' if error['id'] is None else ' ' + str(error['id'])}: {error['reason']}"
                for error in errors]
    result = ShardResult(index=index, errors=errors, skipped_splits=skipped, failed=len(errors), problems=problems,
                         report=out / "shard_errors.json" if errors else None)
    _print_summary(console, result, out)
    return result


def _write_split(name, source, split, manifest, split_dir, out, data_dir, prepared, keywords, config, fingerprint,
                 pool, progress):
    started = time.perf_counter()
    records, errors = _read_manifest(manifest, name)
    # Sort first so the shuffle depends on the seed only, not on the manifest's order.
    records.sort(key=lambda record: record["id"])
    random.Random(f"{config.seed}:{name}").shuffle(records)
    split_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*split_dir.glob("*.tar"), *split_dir.glob(".*.tmp"), split_dir / SUCCESS]:
        stale.unlink(missing_ok=True)

    # Folder names are data: a "%" in them must not become a format directive.
    stem = f"{source}-{split}".replace("%", "%%")
    writer = ShardWriter(split_dir / f"{stem}-%06d.tar", config.maxcount, config.maxsize)
    tasks = [(record, str(data_dir), str(prepared), _record_keywords(record, keywords), config.max_image_pixels)
             for record in records]
    bar = progress.add_task(escape(name), total=len(tasks))
    results = pool.imap(build_sample, tasks, chunksize=8)
    samples, targets, with_keyword = 0, 0, 0
    try:
        for (key, members, error), (record, _, _, record_keywords, _) in zip(results, tasks):
            if members is None:
                errors.append({"split": name, "id": key, "file": str(manifest), "line": None, "reason": error})
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


def _print_summary(console: Console, result: ShardResult, out: Path) -> None:
    # Split names, sample ids and reasons are data: escaped, so "[x]" prints as itself.
    table = summary_table(f"keyseg shard -> {out}", "source:split", ("images", "targets", "kw", "shards", "MB", "errors", "status"))
    skipped = result.skipped_splits
    for name, split in result.index["splits"].items():
        table.add_row(escape(name), str(split["samples"]), str(split["targets"]), str(split["targets_with_keyword"]),
                      str(len(split["shards"])), f"{split['bytes'] / 1e6:.1f}",
                      f"[red]{split['errors']}[/]" if split["errors"] else "0",
                      "kept" if name in skipped else "new")
    console.print(table)
    print_problems(console, result.problems, result.failed, result.report)
