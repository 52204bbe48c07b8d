"""`keyseg evaluate`: gIoU / cIoU by the LISA protocol, for our model or for anyone's masks.

Modes:
  --model DIR        an exported model or a training checkpoint; the reference protocol
                     (first text of each target, teacher-forced "[SEG]. [KEY].", logits > 0)
                     or --generate; multi-process through torchrun (`--gpus N`), each sample
                     exactly once over the ranks.
  --predictions DIR  score PNGs `<sample key>_<target index>.png` (values > 0 = foreground)
                     against our ground truth.

Outputs in OUT: metrics.json (per split: giou, ciou, count, short/long breakdown, keyword
diagnostics, leakage flag), metrics.md (paper layout), per_sample.jsonl, predictions/
(model mode: the predicted masks in the --predictions format), and with --visualize K
gallery/index.html with the K worst and K best samples.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keyseg.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl, atomic_write_text
from keyseg.metrics import intersection_union, mask_iou
from keyseg.metrics.report import SplitMetrics, metrics_json, paper_table


@dataclass
class EvaluateConfig:
    shards: Path  # shard set folder with index.json
    splits: list[str]  # "source:split" names, e.g. reasonseg:val
    out: Path
    model: Path | None = None  # exported model or training checkpoint
    predictions: Path | None = None  # folder of <key>_<t>.png
    missing_as_empty: bool = False  # --predictions: a missing PNG counts as an empty mask
    generate: bool = False  # free generation instead of the teacher-forced answer
    batch_size: int = 4
    max_length: int = 512
    visualize: int = 0  # K worst and K best in the gallery
    show_progress: bool = True


@dataclass
class EvaluateResult:
    metrics: dict
    records: list[dict] = field(default_factory=list)
    samples_per_second: float = 0.0
    missing: list[str] = field(default_factory=list)


def _split_urls(shards: Path, name: str) -> list[str]:
    index = json.loads((Path(shards) / "index.json").read_text())
    if name not in index["splits"]:
        raise FileNotFoundError(f"{shards}/index.json has no split {name!r} (has: {', '.join(index['splits'])})")
    return [str(Path(shards) / entry["path"]) for entry in index["splits"][name]["shards"]]


def _distributed() -> tuple[int, int]:
    """Rank and world size; initialises a gloo/nccl group when launched with several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world


def _gather(records: list[dict], world: int) -> list[dict]:
    if world == 1:
        return records
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, records)
    return [record for part in gathered for record in part]


def _model_records(config: EvaluateConfig, name: str, model, tokenizer, rank: int, progress, console) -> list[dict]:
    """Per query: I, U, IoU, query, keywords; writes the predicted masks as PNGs."""
    from keyseg.data.loader import make_eval_pipeline, make_loader
    from keyseg.data.samples import SampleConfig
    from keyseg.evaluation.inference import predict_batch
    from keyseg.masks.png import encode_png

    sample_config = SampleConfig(sam_size=model.config.sam_image_size, clip_size=model.config.clip_image_size,
                                 mode="eval")
    loader = make_loader(make_eval_pipeline(_split_urls(config.shards, name), sample_config,
                                            batch_size=config.batch_size))
    records = []
    bar = progress.add_task(name, total=None)
    for batch in loader:
        for row, prediction in enumerate(predict_batch(model, tokenizer, batch, config.max_length,
                                                       generate=config.generate)):
            key = batch["keys"][prediction.image_index]
            target = batch["masks"][prediction.image_index][prediction.target_index]
            intersection, union = intersection_union(prediction.mask, target)
            atomic_write_bytes(Path(config.out) / "predictions" / f"{key}_{prediction.target_index}.png",
                               encode_png(prediction.mask.numpy().astype(np.uint8) * 255))
            records.append({"split": name, "id": key, "target": prediction.target_index,
                            "query": batch["texts"][row], "is_sentence": bool(batch["is_sentence"][row]),
                            "intersection": intersection, "union": union, "iou": mask_iou(intersection, union),
                            "keyword": batch["keywords"][row], "predicted_keyword": prediction.keyword,
                            "answer": prediction.answer})
        progress.advance(bar, len(batch["keys"]))
    if loader.stats.skipped:
        console.print(f"[yellow]rank {rank}: {loader.stats.skipped} corrupt sample(s) skipped in {name}")
    return records


def _prediction_records(config: EvaluateConfig, name: str, progress) -> tuple[list[dict], list[str]]:
    """Score PNG masks against the shards' ground truth (no model, no image decoding)."""
    import cv2

    from keyseg.shards.samples import decode_mask
    from keyseg.shards.tario import iter_samples

    records, missing = [], []
    bar = progress.add_task(name, total=None)
    for url in _split_urls(config.shards, name):
        with open(url, "rb") as handle:
            for key, members in iter_samples(handle):
                sample = json.loads(members["json"])
                for index, target in enumerate(sample["targets"]):
                    truth = decode_mask(target["mask"])
                    path = Path(config.predictions) / f"{key}_{index}.png"
                    predicted = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
                    if predicted is None:
                        missing.append(f"{key}_{index}")
                        if not config.missing_as_empty:
                            continue
                        predicted = np.zeros_like(truth)
                    if predicted.shape != truth.shape:
                        raise ValueError(f"{path}: {predicted.shape[1]}x{predicted.shape[0]}, ground truth is "
                                         f"{truth.shape[1]}x{truth.shape[0]}")
                    intersection, union = intersection_union(predicted > 0, truth)
                    records.append({"split": name, "id": key, "target": index, "query": target["texts"][0],
                                    "is_sentence": bool(target["is_sentence"]), "intersection": intersection,
                                    "union": union, "iou": mask_iou(intersection, union),
                                    "keyword": target["keyword"], "predicted_keyword": None, "answer": None})
                progress.advance(bar)
    return records, missing


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


def run(config: EvaluateConfig, console: Console | None = None) -> EvaluateResult:
    console = console or Console(stderr=True)
    if (config.model is None) == (config.predictions is None):
        raise ValueError("give exactly one of --model or --predictions")
    if not config.splits:
        raise ValueError("name at least one --split SOURCE:SPLIT")
    for name in config.splits:
        _split_urls(config.shards, name)  # fail before any work on a wrong name
    rank, world = _distributed()
    out = Path(config.out)
    model = tokenizer = None
    provenance: dict = {}
    if config.model is not None:
        from keyseg.model.pretrained import load_for_evaluation

        model, tokenizer, provenance = load_for_evaluation(config.model)
    records, missing = [], []
    started = time.perf_counter()
    columns = (TextColumn("[bold]{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=rank != 0 or not config.show_progress) as progress:
        for name in config.splits:
            if model is not None:
                records += _model_records(config, name, model, tokenizer, rank, progress, console)
            else:
                split_records, split_missing = _prediction_records(config, name, progress)
                records += split_records
                missing += split_missing
    seconds = time.perf_counter() - started
    records = _gather(records, world)
    if rank != 0:
        return EvaluateResult(metrics={})
    if missing and not config.missing_as_empty:
        atomic_write_text(out / "missing_predictions.txt", "\n".join(missing) + "\n")
        raise FileNotFoundError(f"{len(missing)} prediction(s) missing (e.g. {', '.join(missing[:5])}); "
                                f"full list: {out / 'missing_predictions.txt'}; --missing-as-empty counts them as empty")

    records.sort(key=lambda r: (r["split"], r["id"], r["target"]))
    splits = {name: SplitMetrics(name) for name in config.splits}
    for record in records:
        splits[record["split"]].add(record["intersection"], record["union"], record["is_sentence"])
    extra = {}
    for name in config.splits:
        split_records = [r for r in records if r["split"] == name]
        extra[name] = {"keywords": _keyword_diagnostics(split_records), "leakage": _leakage(provenance, name)}
        if extra[name]["leakage"] and extra[name]["leakage"]["trained_on_this_split"]:
            console.print(f"[bold red]WARNING: the model was trained on {name}: these are not held-out numbers")
    metrics = metrics_json(splits, extra)
    images = len({(r["split"], r["id"]) for r in records})
    result = EvaluateResult(metrics=metrics, records=records, samples_per_second=images / max(seconds, 1e-9),
                            missing=missing)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "metrics.md", paper_table(metrics))
    atomic_write_jsonl(out / "per_sample.jsonl", records)
    atomic_write_json(out / "evaluate_config.json", {k: str(v) if isinstance(v, Path) else v
                                                     for k, v in asdict(config).items()})
    if config.visualize:
        _gallery(config, records, metrics, model is not None, console)
    _print(console, metrics, result, out)
    return result


def _gallery(config: EvaluateConfig, records: list[dict], metrics: dict, from_model: bool, console) -> None:
    """K worst and K best queries as image | ground truth | prediction, in a static page."""
    import cv2

    from keyseg.data.transforms import decode_rgb
    from keyseg.evaluation.gallery import GalleryItem, select_extremes, write_gallery
    from keyseg.shards.samples import decode_mask
    from keyseg.shards.tario import iter_samples

    worst, best = select_extremes(records, config.visualize, key=lambda r: r["iou"])
    wanted = {(r["split"], r["id"]) for r in worst + best}
    samples = {}
    for name in config.splits:
        for url in _split_urls(config.shards, name):
            with open(url, "rb") as handle:
                for key, members in iter_samples(handle):
                    if (name, key) in wanted:
                        samples[(name, key)] = members
    predictions = Path(config.out) / "predictions" if from_model else Path(config.predictions)

    def item(record: dict) -> GalleryItem:
        members = samples[(record["split"], record["id"])]
        sample = json.loads(members["json"])
        path = predictions / f"{record['id']}_{record['target']}.png"
        truth = decode_mask(sample["targets"][record["target"]]["mask"])
        predicted = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        predicted = predicted > 0 if predicted is not None else np.zeros(truth.shape, dtype=bool)
        return GalleryItem(key=record["id"], split=record["split"], query=record["query"], iou=record["iou"],
                           intersection=record["intersection"], union=record["union"],
                           image_rgb=decode_rgb(members["jpg"]), target=truth, prediction=predicted,
                           keyword=record["keyword"], predicted_keyword=record["predicted_keyword"])

    index = write_gallery(Path(config.out) / "gallery", [item(r) for r in worst], [item(r) for r in best],
                          title="keyseg evaluate", summary=metrics)
    console.print(f"gallery: {index}")


def _print(console: Console, metrics: dict, result: EvaluateResult, out: Path) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"keyseg evaluate -> {out}", box=box.SIMPLE_HEAD)
    for column in ("split", "gIoU", "cIoU", "masks", "short gIoU", "long gIoU", "keyword match"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, values in metrics.items():
        short, long_ = values.get("short") or {}, values.get("long") or {}
        keywords = (values.get("keywords") or {})
        table.add_row(name, f"{100 * values['giou']:.1f}", f"{100 * values['ciou']:.1f}", str(values["count"]),
                      f"{100 * short['giou']:.1f}" if short.get("count") else "-",
                      f"{100 * long_['giou']:.1f}" if long_.get("count") else "-",
                      f"{100 * keywords['match_rate']:.0f}%" if keywords.get("match_rate") is not None else "-")
    console.print(table)
    console.print(paper_table(metrics))
    console.print(f"{result.samples_per_second:.1f} images/s; outputs in {out}")
