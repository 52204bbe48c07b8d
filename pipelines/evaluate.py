"""`keyseg evaluate`: gIoU / cIoU by the LISA protocol, for our model or for anyone's masks.

Modes:
  --model DIR        an exported model or a training checkpoint; the reference protocol
                     (first text of each target, teacher-forced "[SEG]. [KEY].", logits > 0)
                     or --generate.
  --predictions DIR  score PNGs `<sample key>_<target index>.png` (values > 0 = foreground)
                     against our ground truth.
Both run multi-process through torchrun (`--gpus N`): the shards are split over the ranks,
so each sample is scored exactly once, and rank 0 writes the outputs.

Outputs in OUT: metrics.json (per split: giou, ciou, count, short/long breakdown, keyword
diagnostics, leakage flag, sample accounting), metrics.md (paper layout), per_sample.jsonl,
predictions/ (model mode: the predicted masks in the --predictions format), and with
--visualize K gallery/index.html with the K worst and K best samples.

Bad data: a sample that cannot be scored (corrupt json or image, a key that is not a plain
file name, the unreadable rest of a truncated shard) is skipped and listed in metrics.json
(`skipped`, `skipped_samples`), and the samples scored are compared with index.json's
counts; any loss makes the run exit 1 unless --allow-skips. A prediction PNG that is
missing (unless --missing-as-empty), undecodable or of the wrong size fails the run with
its own list (missing_predictions.txt, invalid_predictions.txt); it is never scored.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from keyseg.data.skips import SkipLog
from keyseg.errors import DataError, UsageError, describe_os_error
from keyseg.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl, atomic_write_text
from keyseg.metrics import intersection_union, mask_iou
from keyseg.metrics.report import SplitMetrics, metrics_json, paper_table
from keyseg.paths import is_plain_name
from keyseg.runner import StageResult, progress_bar, summary_table
from keyseg.shards.index import ShardSet
from keyseg.training.launch import leave_process_group


@dataclass
class EvaluateConfig:
    shards: Path  # shard set folder with index.json
    splits: list[str]  # "source:split" names, e.g. reasonseg:val
    out: Path
    model: Path | None = None  # exported model or training checkpoint
    predictions: Path | None = None  # folder of <key>_<t>.png (<key>_<t>_<s>.png per refer sentence)
    missing_as_empty: bool = False  # --predictions: a missing PNG counts as an empty mask
    generate: bool = False  # free generation instead of the teacher-forced answer
    batch_size: int = 4
    visualize: int = 0  # K worst and K best in the gallery
    show_progress: bool = True
    allow_skips: bool = False  # exit 0 even when samples could not be scored
    refer_protocol: str = "lisa"  # refCOCO family: "lisa" (every sentence of every ref) or "release"
    device: str = "auto"  # auto, cpu, cuda, cuda:N (keyseg.model.devices)
    dtype: str = "fp32"  # fp32, bf16, fp16
    load_in: str = "full"  # full, 8bit, 4bit (bitsandbytes, CUDA only)


def _placement(config: EvaluateConfig):
    """Where the model runs; in a multi-process run `auto`/`cuda` give each process its GPU."""
    from keyseg.model.devices import resolve_placement

    return resolve_placement(config.device, config.dtype, config.load_in, int(os.environ.get("LOCAL_RANK", 0)))


@dataclass
class EvaluateResult(StageResult):
    """`failed` counts the samples that could not be scored (0 with --allow-skips)."""

    metrics: dict
    records: list[dict] = field(default_factory=list)
    samples_per_second: float = 0.0
    missing: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # "path: reason" of unusable prediction PNGs


@dataclass
class _SplitPart:
    """One rank's work on one split (rank 0 merges the parts of every rank)."""

    records: list[dict] = field(default_factory=list)
    samples: int = 0  # samples scored
    skips: SkipLog = field(default_factory=SkipLog)
    missing: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def _check_usage(config: EvaluateConfig) -> None:
    if (config.model is None) == (config.predictions is None):
        raise UsageError("give exactly one of --model or --predictions")
    if config.model is not None:
        _placement(config)
    if not config.splits:
        raise UsageError("name at least one --split SOURCE:SPLIT")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {config.batch_size}")
    if config.refer_protocol not in ("lisa", "release"):
        raise UsageError(f"--refer-protocol must be lisa or release, got {config.refer_protocol!r}")
    if config.predictions is not None and not Path(config.predictions).is_dir():
        raise DataError(config.predictions, "not a folder of prediction PNGs")


def _shard_paths(config: EvaluateConfig) -> tuple[ShardSet, dict[str, list[Path]]]:
    """The shard set and each split's shard files, checked before any work: an unknown split
    is a usage error, a path leaving the shard folder or a missing shard a data error."""
    shard_set = ShardSet.open(config.shards)
    return shard_set, shard_set.shard_paths(config.splits, must_exist=True)


# ---------------------------------------------------------------------------- processes
def _distributed() -> tuple[int, int, bool]:
    """Rank, world size, and whether this call created the process group (launched by
    torchrun with several processes: gloo on CPU, nccl on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return rank, world, True
    return rank, world, False


def _gather(value, world: int) -> list:
    """`value` of every rank, in rank order (pickled objects of any size)."""
    if world == 1:
        return [value]
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def _failure_text(error: Exception) -> str:
    if isinstance(error, OSError):
        return describe_os_error(error)
    if isinstance(error, ValueError):  # DataError, UsageError and friends carry their own text
        return str(error)
    return f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------------------- scoring
def _model_part(config: EvaluateConfig, split_name: str, paths: list[Path], model, tokenizer,
                progress) -> _SplitPart:
    """Per query: I, U, IoU, query, keywords; writes the predicted masks as PNGs.

    The eval pipeline splits the shards over the ranks (each sample exactly once)."""
    from keyseg.data.conversation import ConversationConfig
    from keyseg.data.loader import make_eval_pipeline, make_loader
    from keyseg.data.samples import SampleConfig, prediction_name
    from keyseg.evaluation.inference import predict_batch
    from keyseg.masks.png import encode_png

    sample_config = SampleConfig(sam_size=model.config.sam_image_size, clip_size=model.config.clip_image_size,
                                 mode="eval", conversation=ConversationConfig(refer_protocol=config.refer_protocol))
    loader = make_loader(make_eval_pipeline([str(path) for path in paths], sample_config,
                                            batch_size=config.batch_size))
    part = _SplitPart()
    bar = progress.add_task(escape(split_name), total=None)
    for batch in loader:
        # The loader skips samples whose key is not a plain file name; checked again here,
        # where the key becomes a file name.
        bad_keys = [key for key in batch["keys"] if not is_plain_name(key)]
        part.skips.add(len(bad_keys), [{"shard": None, "key": key, "reason": "bad key: not a plain file name"}
                                       for key in bad_keys])
        for row, prediction in enumerate(predict_batch(model, tokenizer, batch,
                                                       generate=config.generate)):
            key = batch["keys"][prediction.image_index]
            if key in bad_keys:
                continue
            target_index, text_index = batch["target_indices"][row], batch["text_indices"][row]
            target = batch["masks"][prediction.image_index][prediction.row_index]
            intersection, union = intersection_union(prediction.mask, target)
            name = prediction_name(key, target_index, text_index, batch["per_sentence"][prediction.image_index])
            atomic_write_bytes(Path(config.out) / "predictions" / f"{name}.png",
                               encode_png(prediction.mask.numpy().astype(np.uint8) * 255))
            part.records.append({"split": split_name, "id": key, "target": target_index, "sentence": text_index,
                                 "prediction": name,
                                 "query": batch["texts"][row], "is_sentence": bool(batch["is_sentence"][row]),
                                 "intersection": intersection, "union": union,
                                 "iou": mask_iou(intersection, union), "keyword": batch["keywords"][row],
                                 "predicted_keyword": prediction.keyword, "answer": prediction.answer,
                                 "prompt": prediction.prompt, "seg_positions": prediction.seg_positions,
                                 "key_positions": prediction.key_positions,
                                 "state_offset": prediction.state_offset})
        part.samples += len(batch["keys"]) - len(bad_keys)
        progress.advance(bar, len(batch["keys"]))
    part.skips.add_stats(loader.stats)
    return part


def _ground_truth(raw: dict) -> tuple[dict, list[np.ndarray]]:
    """The sample document and the 0/1/255 mask of each target of a raw shard sample;
    ValueError with the reason (BadSampleError from the format's own check) when the sample
    is unusable."""
    from keyseg.shards.samples import decode_mask, read_sample

    members = {name: data for name, data in raw.items() if not name.startswith("__")}
    document = read_sample(raw["__key__"], members)
    truths = []
    for index, target in enumerate(document["targets"]):
        try:
            truths.append(decode_mask(target["mask"]))
        except ValueError as error:
            raise ValueError(f"undecodable mask: target {index} ({error})") from None
    return document, truths


def _read_prediction(path: Path) -> np.ndarray:
    """A prediction PNG as a grayscale array; ImageError when it is not a readable image or
    is over the pixel bound (checked from the header, before decoding)."""
    import cv2
    from PIL import Image

    from keyseg.images import ImageError, check_image_size

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as error:  # Pillow raises many types for a file that is not an image
        raise ImageError(f"not a readable image ({error})") from None
    check_image_size(width, height)
    mask = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ImageError("OpenCV cannot decode it")
    return mask


def _predictions_part(config: EvaluateConfig, split_name: str, paths: list[Path], progress) -> _SplitPart:
    """Score PNG masks against the shards' ground truth (no model, no image decoding)."""
    from keyseg.data.loader import iter_raw_samples
    from keyseg.data.samples import eval_queries, prediction_name
    from keyseg.formats.refer import is_refer_source
    from keyseg.data.skips import _SkipTracker
    from keyseg.images import ImageError

    part, tracker = _SplitPart(), _SkipTracker()
    bar = progress.add_task(escape(split_name), total=None)
    for raw in iter_raw_samples([str(path) for path in paths], tracker):
        key = raw["__key__"]  # a plain name: iter_raw_samples skips any other
        try:
            document, truths = _ground_truth(raw)
        except ValueError as error:
            tracker.skip(raw["__url__"], key, str(error))
            continue
        part.samples += 1
        refer = is_refer_source(document["source"])
        per_sentence = refer and config.refer_protocol == "lisa"
        for index, text_index in eval_queries(document["targets"], refer, config.refer_protocol):
            target, truth = document["targets"][index], truths[index]
            name = prediction_name(key, index, text_index, per_sentence)
            path = Path(config.predictions) / f"{name}.png"
            if path.is_file():
                try:
                    predicted = _read_prediction(path)
                except (ImageError, OSError) as error:
                    part.invalid.append(f"{path}: {error}")
                    continue
                if predicted.shape != truth.shape:
                    part.invalid.append(f"{path}: {predicted.shape[1]}x{predicted.shape[0]}, ground truth is "
                                        f"{truth.shape[1]}x{truth.shape[0]}")
                    continue
            else:
                part.missing.append(name)
                if not config.missing_as_empty:
                    continue
                predicted = np.zeros_like(truth)
            intersection, union = intersection_union(predicted > 0, truth)
            part.records.append({"split": split_name, "id": key, "target": index, "sentence": text_index,
                                 "prediction": name,
                                 "query": target["texts"][text_index], "is_sentence": target["is_sentence"],
                                 "intersection": intersection, "union": union, "iou": mask_iou(intersection, union),
                                 "keyword": target["texts"][text_index] if refer else target["keyword"],
                                 "predicted_keyword": None, "answer": None})
        progress.advance(bar)
    skips = tracker.drain()
    part.skips.add(len(skips), [skip.to_dict() for skip in skips])
    return part


def _merge(parts: list[_SplitPart]) -> _SplitPart:
    merged = _SplitPart()
    for part in parts:
        merged.records += part.records
        merged.samples += part.samples
        merged.skips.add(part.skips.count, part.skips.listed)
        merged.missing += part.missing
        merged.invalid += part.invalid
    return merged


def _sample_accounting(shard_set: ShardSet, name: str, part: _SplitPart) -> dict:
    """Samples in the index, scored, and skipped (the larger of the skips seen and the
    samples missing from the count: a truncated shard is one skip but loses its tail)."""
    expected = shard_set.sample_count(name)
    seen = part.skips.count
    skipped = seen if expected is None else max(seen, expected - part.samples)
    return {"samples_in_index": expected, "samples_scored": part.samples, "skipped": skipped,
            "skipped_samples": part.skips.listed}


# ---------------------------------------------------------------------------- diagnostics
def _keyword_diagnostics(records: list[dict]) -> dict | None:
    from keyseg.keywords.grounding import keywords_agree, normalize_keyword
    from keyseg.metrics import IoUStats

    judged = [r for r in records if r["keyword"] and r["predicted_keyword"] is not None]
    if not judged:
        return None
    match, no_match = IoUStats(), IoUStats()
    for record in judged:
        agree = keywords_agree(normalize_keyword(record["keyword"]), normalize_keyword(record["predicted_keyword"]))
        record["keyword_match"] = agree
        (match if agree else no_match).add(record["intersection"], record["union"])
    return {"judged": len(judged), "match_rate": match.count / len(judged),
            "giou_match": match.giou if match.count else None,
            "giou_no_match": no_match.giou if no_match.count else None}


def _leakage(provenance: dict, name: str) -> dict | None:
    trained_on = provenance.get("trained_on", [])
    return {"trained_on_this_split": name in trained_on, "trained_on": trained_on} if provenance else None


# ---------------------------------------------------------------------------- run
def run(config: EvaluateConfig, console: Console | None = None) -> EvaluateResult:
    console = console or Console(stderr=True)
    _check_usage(config)
    shard_set, shard_paths = _shard_paths(config)
    rank, world, owns_group = _distributed()
    try:
        return _evaluate(config, shard_set, shard_paths, rank, world, console)
    finally:
        if owns_group:
            leave_process_group(synchronise=True)


def _evaluate(config: EvaluateConfig, shard_set: ShardSet, shard_paths: dict[str, list[Path]], rank: int, world: int,
              console: Console) -> EvaluateResult:
    out = Path(config.out)
    model = tokenizer = None
    provenance: dict = {}
    parts: dict[str, _SplitPart] = {}
    failure: Exception | None = None
    started = time.perf_counter()
    # Every rank must reach the gather below, whatever goes wrong in its own share: a rank
    # that raised here while the others wait in the collective would hang them.
    try:
        if config.model is not None:
            from keyseg.training.export import load_for_evaluation

            model, tokenizer, provenance = load_for_evaluation(config.model, _placement(config))
        with progress_bar(console, rank == 0 and config.show_progress, eta=False) as progress:
            for name in config.splits:
                if model is not None:
                    parts[name] = _model_part(config, name, shard_paths[name], model, tokenizer, progress)
                else:
                    # Shards split over the ranks as the model mode's pipeline splits them.
                    paths = shard_paths[name][rank::world]
                    parts[name] = _predictions_part(config, name, paths, progress)
    except Exception as error:  # re-raised below, after every rank has reported
        failure = error
    seconds = time.perf_counter() - started
    gathered = _gather((parts, None if failure is None else _failure_text(failure)), world)
    if failure is not None:
        raise failure
    failed = [(number, message) for number, (_, message) in enumerate(gathered) if message]
    if failed:
        raise DataError(None, f"rank {failed[0][0]} failed: {failed[0][1]}")
    if rank != 0:
        return EvaluateResult(metrics={})

    merged = {name: _merge([rank_parts[name] for rank_parts, _ in gathered]) for name in config.splits}
    missing = [entry for part in merged.values() for entry in part.missing]
    invalid = [entry for part in merged.values() for entry in part.invalid]
    _fail_on_bad_predictions(config, out, missing, invalid)

    records = sorted((record for part in merged.values() for record in part.records),
                     key=lambda r: (r["split"], r["id"], r["target"]))
    splits = {name: SplitMetrics(name) for name in config.splits}
    for record in records:
        splits[record["split"]].add(record["intersection"], record["union"], record["is_sentence"])
    extra, errors, skipped_samples = {}, [], 0
    for name in config.splits:
        split_records = [r for r in records if r["split"] == name]
        extra[name] = {"keywords": _keyword_diagnostics(split_records), "leakage": _leakage(provenance, name),
                       **_sample_accounting(shard_set, name, merged[name])}
        if extra[name]["leakage"] and extra[name]["leakage"]["trained_on_this_split"]:
            console.print(f"[bold red]WARNING: the model was trained on {escape(name)}: "
                          f"these are not held-out numbers")
        skipped = extra[name]["skipped"]
        skipped_samples += skipped
        if skipped:
            expected = extra[name]["samples_in_index"]
            errors.append(f"{name}: {skipped} of {expected if expected is not None else '?'} sample(s) not scored "
                          f"(listed in {out / 'metrics.json'})")
    metrics = metrics_json(splits, extra)
    samples = sum(part.samples for part in merged.values())
    result = EvaluateResult(metrics=metrics, records=records, samples_per_second=samples / max(seconds, 1e-9),
                            missing=missing, invalid=invalid, failed=0 if config.allow_skips else skipped_samples,
                            problems=[] if config.allow_skips else errors, report=out / "metrics.json")
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "metrics.md", paper_table(metrics))
    atomic_write_jsonl(out / "per_sample.jsonl", records)
    atomic_write_json(out / "evaluate_config.json", {k: str(v) if isinstance(v, Path) else v
                                                     for k, v in asdict(config).items()})
    if config.visualize:
        _gallery(config, records, metrics, model is not None, console)
    _print(console, metrics, result, out)
    for error in errors:
        if config.allow_skips:
            console.print(f"[yellow]warning:[/] {escape(error)}", soft_wrap=True)
        else:
            console.print(f"[red]error:[/] {escape(error)}; --allow-skips accepts this", soft_wrap=True)
    return result


def _fail_on_bad_predictions(config: EvaluateConfig, out: Path, missing: list[str], invalid: list[str]) -> None:
    """Missing (unless --missing-as-empty) or unusable prediction PNGs: list them, no metrics."""
    problems = []
    if missing and not config.missing_as_empty:
        atomic_write_text(out / "missing_predictions.txt", "\n".join(missing) + "\n")
        problems.append(f"{len(missing)} prediction(s) missing (e.g. {', '.join(missing[:5])}); full list: "
                        f"{out / 'missing_predictions.txt'}; --missing-as-empty counts them as empty")
    if invalid:
        # Never scored as empty: a file that is there but unreadable is a broken export.
        atomic_write_text(out / "invalid_predictions.txt", "\n".join(invalid) + "\n")
        problems.append(f"{len(invalid)} prediction(s) unreadable or of the wrong size (e.g. {invalid[0]}); "
                        f"full list: {out / 'invalid_predictions.txt'}")
    if problems:
        raise DataError(config.predictions, "; ".join(problems))


def _gallery(config: EvaluateConfig, records: list[dict], metrics: dict, from_model: bool, console) -> None:
    """The report page: every scored query, and the K worst and K best of each split drawn
    as image | ground truth | prediction (keyseg.evaluation.gallery)."""
    from keyseg.data.loader import iter_raw_samples
    from keyseg.data.skips import _SkipTracker
    from keyseg.data.transforms import decode_rgb
    from keyseg.evaluation.gallery import GalleryItem, select_extremes, write_gallery

    sections: dict[str, list[int]] = {"worst": [], "best": []}
    for name in config.splits:
        indices = [index for index, record in enumerate(records) if record["split"] == name]
        worst, best = select_extremes(indices, config.visualize, key=lambda index: records[index]["iou"])
        sections["worst"] += worst
        sections["best"] += best
    chosen = sections["worst"] + sections["best"]
    wanted = {(records[index]["split"], records[index]["id"]) for index in chosen}
    samples = {}
    for name in config.splits:
        paths = ShardSet.open(config.shards).shard_paths(name)[name]
        for raw in iter_raw_samples([str(path) for path in paths], _SkipTracker()):
            if (name, raw["__key__"]) in wanted:
                samples[(name, raw["__key__"])] = raw
    predictions = Path(config.out) / "predictions" if from_model else Path(config.predictions)

    def item(record: dict) -> GalleryItem | None:
        raw = samples.get((record["split"], record["id"]))
        path = predictions / f"{record['prediction']}.png"
        try:
            truth = _ground_truth(raw)[1][record["target"]]
            image_rgb = decode_rgb(raw["jpg"])
            predicted = _read_prediction(path) > 0 if path.is_file() else np.zeros(truth.shape, dtype=bool)
        except (TypeError, ValueError, OSError) as error:
            # Scored without decoding its image (--predictions mode), or changed since.
            console.print(f"[yellow]gallery: {escape(record['id'])} left out ({escape(str(error))})")
            return None
        return GalleryItem(key=record["id"], query=record["query"], iou=record["iou"], image_rgb=image_rgb,
                           target=truth, prediction=predicted)

    drawn = {index: found for index in chosen if (found := item(records[index])) is not None}
    index_page = write_gallery(Path(config.out) / "gallery", records, drawn, sections, title="keyseg evaluate",
                               summary=metrics)
    console.print(f"gallery: {escape(str(index_page))}")


def _print(console: Console, metrics: dict, result: EvaluateResult, out: Path) -> None:
    table = summary_table(f"keyseg evaluate -> {out}", "split",
                          ("gIoU", "cIoU", "masks", "short gIoU", "long gIoU", "keyword match", "skipped"))
    for name, values in metrics.items():
        short, long_ = values.get("short") or {}, values.get("long") or {}
        keywords = (values.get("keywords") or {})
        table.add_row(escape(name), f"{100 * values['giou']:.1f}", f"{100 * values['ciou']:.1f}", str(values["count"]),
                      f"{100 * short['giou']:.1f}" if short.get("count") else "-",
                      f"{100 * long_['giou']:.1f}" if long_.get("count") else "-",
                      f"{100 * keywords['match_rate']:.0f}%" if keywords.get("match_rate") is not None else "-",
                      str(values["skipped"]))
    console.print(table)
    console.print(escape(paper_table(metrics)))
    console.print(escape(f"{result.samples_per_second:.1f} images/s; outputs in {out}"))
