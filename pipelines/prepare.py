"""`keyseg prepare`: raw annotations -> manifests + target/ignore masks.

Sources: ReasonSeg, the refCOCO family and refCLEF, and the rest of LISA's training
mixture: label maps (ADE20K, COCO-Stuff, Mapillary: one target per class present), parts
(PACO-LVIS, PASCAL-Part: one target per annotation) and VQA (LLaVA-Instruct-150k: no
targets, the record's `conversations`).

Output folder layout (all paths in manifests are relative):

    OUT/<source>/<split>/manifest.jsonl     one JSON record per image, sorted by id
    OUT/<source>/<split>/masks/<id>_<t>.png  uint8 0/1/255, one per target
    OUT/<source>/<split>/overlays/<id>.png   with --visualize K
    OUT/prepare_config.json                  the config this run used
    OUT/prepare_stats.json                   per source/split counts and seconds
    OUT/prepare_report.json                  every warning and error, file + reason

Resuming: each finished record is appended to `manifest.partial.jsonl` as soon as it is
done; the next run reuses every record whose inputs hash the same (and whose masks
exist), so an interrupted or repeated run redoes only what changed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from keyseg.errors import DataError
from keyseg.formats.manifest import check_record
from keyseg.formats.refer import ReferError
from keyseg.images import DEFAULT_MAX_IMAGE_PIXELS, image_pixel_bound
from keyseg.io import atomic_write_json, atomic_write_jsonl, read_jsonl
from keyseg.runner import StageResult, print_problems, progress_bar, summary_table, worker_count, worker_pool
from keyseg.sources.reasonseg import EXPLANATORY_FILE, discover_reasonseg, load_explanatory
from keyseg.sources.parts import PART_SOURCES, PartsError, load_part_source
from keyseg.sources.records import Issue, record_id
from keyseg.sources.refer import group_refer_items, load_refer_dataset
from keyseg.sources.semseg import ADE20K_IMAGES, COCOSTUFF_LABELS, MAPILLARY_CONFIG, MAPILLARY_LABELS, class_names, \
    find_label_maps
from keyseg.sources.specs import SourceSplit, resolve_sources
from keyseg.sources.prepare_task import PrepareTask, TaskResult, VQAItem, process_task

# The folder a label-map source lists: asked for and absent is one error row.
LABEL_MAP_FOLDERS = {"ade20k": ADE20K_IMAGES, "cocostuff": COCOSTUFF_LABELS, "mapillary": MAPILLARY_LABELS}

MANIFEST = "manifest.jsonl"
JOURNAL = "manifest.partial.jsonl"


@dataclass
class PrepareConfig:
    data_dir: Path  # folder holding the native layouts (reason_seg/, refer_seg/, ade20k/, coco/, vlpart/...)
    out: Path  # prepared output folder
    sources: list[str] = field(default_factory=list)  # --source specs; empty: all detected
    workers: int = 0  # 0: one per core
    strict: bool = False  # warnings fail their record
    visualize: int = 0  # overlays per split
    decode_images: bool = False  # fully decode every image with OpenCV (slow, thorough)
    show_progress: bool = True
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images (and masks) are refused unread


@dataclass
class SplitStats:
    images: int = 0  # records in the manifest
    targets: int = 0
    converted: int = 0  # records (re)computed this run
    up_to_date: int = 0  # records reused from a previous run
    warnings: int = 0
    errors: int = 0
    seconds: float = 0.0


@dataclass
class PrepareResult(StageResult):
    stats: dict[str, SplitStats]
    issues: list[dict]


def run(config: PrepareConfig, console: Console | None = None) -> PrepareResult:
    console = console or Console(stderr=True)
    with image_pixel_bound(config.max_image_pixels):
        return _run(config, console)


def _run(config: PrepareConfig, console: Console) -> PrepareResult:
    data_dir, out = Path(config.data_dir).resolve(), Path(config.out).resolve()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: data folder not found")
    splits = resolve_sources(data_dir, config.sources)
    if not splits:
        raise FileNotFoundError(f"{data_dir}: no reason_seg/ReasonSeg/<split> folder, no refer_seg refs file and no "
                                "other source of the LISA mixture found (docs/sources.md lists the layouts)")
    workers = worker_count(config.workers)
    out.mkdir(parents=True, exist_ok=True)
    used = {**asdict(config), "data_dir": str(data_dir), "out": str(out), "workers": workers,
            "resolved_sources": [split.name for split in splits]}
    atomic_write_json(out / "prepare_config.json", used)

    planned = _plan_tasks(data_dir, out, splits, config)
    stats: dict[str, SplitStats] = {}
    all_issues: list[dict] = []
    with worker_pool(workers) as pool, progress_bar(console, config.show_progress) as progress:
        for split in splits:
            tasks, issues = planned[split]
            split_stats, split_issues = _run_split(split, tasks, issues, out, pool, progress)
            stats[split.name] = split_stats
            all_issues += split_issues

    errors = [issue for issue in all_issues if issue["severity"] == "error"]
    result = PrepareResult(stats=stats, issues=all_issues, failed=sum(split.errors for split in stats.values()),
                           problems=[f"{issue['file']}: {issue['reason']}" for issue in errors],
                           report=out / "prepare_report.json")
    atomic_write_json(out / "prepare_stats.json", {name: asdict(value) for name, value in stats.items()})
    atomic_write_json(out / "prepare_report.json", {"summary": _summary(result), "issues": all_issues})
    _print_summary(console, result, out)
    return result


def _plan_tasks(
    data_dir: Path, out: Path, splits: list[SourceSplit], config: PrepareConfig
) -> dict[SourceSplit, tuple[list[PrepareTask], list[Issue]]]:
    """Find every item of every split, and what a previous run left for it."""
    planned = {}
    explanatory, explanatory_issues = _explanatory(data_dir) if any(s.family == "reasonseg" for s in splits) else ({}, [])
    refer_cache: dict[tuple[str, str], object] = {}
    for split in splits:
        issues: list[Issue] = []
        previous = _previous_records(out / split.source / split.split)
        common = dict(source=split.source, split=split.split, data_dir=str(data_dir), out_dir=str(out),
                      strict=config.strict, decode_images=config.decode_images,
                      max_image_pixels=config.max_image_pixels)
        tasks: list[PrepareTask] = []
        if split.family in MIXTURE_PLANNERS:
            found, found_issues = MIXTURE_PLANNERS[split.family](data_dir, split)
            issues += found_issues
            for name, kind, item, extra in found:
                rid = record_id(split.source, split.split, name)
                tasks.append(PrepareTask(record_id=rid, kind=kind, item=item, explanatory=None,
                                         previous=previous.get(rid), **extra, **common))
        elif split.family == "reasonseg":
            if split.split == "train":
                issues += explanatory_issues
            items, discover_issues = discover_reasonseg(data_dir, split.split)
            issues += discover_issues
            for item in items:
                rid = record_id(split.source, split.split, item.name)
                tasks.append(PrepareTask(record_id=rid, kind="reasonseg", item=item,
                                         explanatory=explanatory.get(f"{item.name}.jpg") if split.split == "train" else None,
                                         previous=previous.get(rid), **common))
        else:
            key = (split.dataset, split.split_by)
            first_of_dataset = key not in refer_cache
            if first_of_dataset:
                try:
                    instances, refs = load_refer_dataset(data_dir, *key)
                    refer_cache[key] = group_refer_items(instances, refs, split.dataset, split.split_by,
                                                         tuple(s.split for s in splits if (s.dataset, s.split_by) == key))
                except ReferError as error:
                    refer_cache[key] = error
            grouped = refer_cache[key]
            if isinstance(grouped, ReferError):
                if first_of_dataset:  # one unreadable file is one error, not one per split
                    file, _, reason = str(grouped).partition(": ")
                    issues.append(Issue("error", file, "bad_refer_file", reason))
            else:
                # Rows about no split in particular are counted once, with the first split.
                issues += grouped.issues[split.split] + (grouped.general if first_of_dataset else [])
                for item in grouped.items[split.split]:
                    rid = record_id(split.source, split.split, str(item.image_id))
                    tasks.append(PrepareTask(record_id=rid, kind="refer", item=item, explanatory=None,
                                             previous=previous.get(rid), **common))
        for task in [task for task in tasks if task.kind != "vqa"][: config.visualize]:  # VQA has no masks to draw
            task.visualize = True
        planned[split] = (tasks, issues)
    return planned


# A planner lists a split's items: (name for the record id, task kind, item, extra task
# fields) and the issues found while listing.
PlannedItems = tuple[list[tuple[str, str, object, dict]], list[Issue]]


def _plan_label_maps(data_dir: Path, split: SourceSplit) -> PlannedItems:
    items, issues = find_label_maps(split.dataset, data_dir)
    if not items and not issues and not (data_dir / LABEL_MAP_FOLDERS[split.dataset]).is_dir():
        return [], [Issue("error", LABEL_MAP_FOLDERS[split.dataset], "missing_folder", "folder not found")]
    if not items:
        return [], issues
    try:
        names = tuple(class_names(split.dataset, data_dir))
    except DataError as error:  # Mapillary's config, changed since it was listed
        return [], [*issues, Issue("error", MAPILLARY_CONFIG, "bad_class_list", error.reason)]
    return [(item.id, "semseg", item, {"class_names": names}) for item in items], issues


def _plan_parts(data_dir: Path, split: SourceSplit) -> PlannedItems:
    try:
        dataset = load_part_source(data_dir, PART_SOURCES[split.dataset])
    except PartsError as error:
        file, _, reason = str(error).partition(": ")
        return [], [Issue("error", file, "bad_part_file", reason)]
    return [(str(item.image_id), "parts", item, {}) for item in dataset.items], dataset.issues


def _plan_vqa(data_dir: Path, split: SourceSplit) -> PlannedItems:
    # Imported here: the reader shares the tokenizer side's conversation rules (and torch).
    from keyseg.sources.llava import llava_file, read_llava_instruct

    # Images are checked by the workers (missing, unreadable, header, size), as everywhere.
    records, issues = read_llava_instruct(data_dir, split.dataset, check_images=False)
    file = llava_file(data_dir, split.dataset).relative_to(data_dir).as_posix()
    # Ids repeat (one image, several conversations): the record id is the file position,
    # zero-padded (the real file has about 158k records) so the manifest keeps file order.
    planned = [(f"{record.index:06d}", "vqa",
                VQAItem(record.index, record.id, record.image, record.conversations, file), {})
               for record in records]
    return planned, issues


MIXTURE_PLANNERS = {"semseg": _plan_label_maps, "parts": _plan_parts, "vqa": _plan_vqa}


def _explanatory(data_dir: Path) -> tuple[dict[str, dict], list[Issue]]:
    path = data_dir / EXPLANATORY_FILE
    if not path.is_file():
        return {}, []
    return load_explanatory(path.read_bytes(), str(EXPLANATORY_FILE))


def _previous_records(split_dir: Path) -> dict[str, dict]:
    """Records of a finished manifest, updated by an interrupted run's journal."""
    records: dict[str, dict] = {}
    for name in (MANIFEST, JOURNAL):
        if (split_dir / name).is_file():
            try:
                lines = read_jsonl(split_dir / name)
            except (ValueError, RecursionError):
                continue  # unreadable: everything is redone, which is always correct
            # A record that does not fit the schema is simply redone.
            records.update({record["id"]: record for record in lines if check_record(record) is None})
    return records


def _run_split(split, tasks, issues, out, pool, progress) -> tuple[SplitStats, list[dict]]:
    started = time.perf_counter()
    split_dir = out / split.source / split.split
    split_dir.mkdir(parents=True, exist_ok=True)
    bar = progress.add_task(escape(split.name), total=len(tasks))
    records: dict[str, dict] = {}
    stats = SplitStats()
    results = pool.imap_unordered(process_task, tasks, chunksize=8)
    with open(split_dir / JOURNAL, "a", encoding="utf-8") as journal:
        for result in results:
            result: TaskResult
            issues += result.issues
            if result.record is not None:
                records[result.record["id"]] = result.record
                if result.up_to_date:
                    stats.up_to_date += 1
                else:
                    stats.converted += 1
                    journal.write(_json_line(result.record))
                    journal.flush()
            progress.advance(bar)

    ordered = [records[key] for key in sorted(records)]
    atomic_write_jsonl(split_dir / MANIFEST, ordered)
    (split_dir / JOURNAL).unlink(missing_ok=True)
    _remove_orphans(split_dir, ordered)

    stats.images = len(ordered)
    stats.targets = sum(len(record["targets"]) for record in ordered)
    stats.warnings = sum(issue.severity == "warning" for issue in issues)
    stats.errors = sum(issue.severity == "error" for issue in issues)
    stats.seconds = round(time.perf_counter() - started, 3)
    rows = [{"source": split.source, "split": split.split, **issue.to_dict()} for issue in issues]
    rows.sort(key=lambda row: (row["severity"], row["file"], row["code"], row["reason"]))
    return stats, rows


def _json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def _remove_orphans(split_dir: Path, records: list[dict]) -> None:
    """Masks and overlays of images that left the input (or failed) go too."""
    keep = {Path(target["mask"]).name for record in records for target in record["targets"]}
    keep |= {Path(record["overlay"]).name for record in records if record.get("overlay")}
    for folder in ("masks", "overlays"):
        for path in (split_dir / folder).glob("*.png") if (split_dir / folder).is_dir() else ():
            if path.name not in keep:
                path.unlink()


def _summary(result: PrepareResult) -> dict:
    total = {key: sum(getattr(stats, key) for stats in result.stats.values())
             for key in ("images", "targets", "converted", "up_to_date", "warnings", "errors")}
    return {**total, "splits": len(result.stats)}


def _print_summary(console: Console, result: PrepareResult, out: Path) -> None:
    # File names, reasons and paths are data or user text: escaped, so "[x]" prints as itself.
    table = summary_table(f"keyseg prepare -> {out}", "source:split",
                          ("images", "targets", "new", "reused", "warnings", "errors", "sec"))
    for name, stats in result.stats.items():
        table.add_row(escape(name), str(stats.images), str(stats.targets), str(stats.converted), str(stats.up_to_date),
                      str(stats.warnings), f"[red]{stats.errors}[/]" if stats.errors else "0", f"{stats.seconds:.1f}")
    summary = _summary(result)
    table.add_row("[bold]total", *(f"[bold]{summary[key]}" for key in
                                   ("images", "targets", "converted", "up_to_date", "warnings", "errors")), "")
    console.print(table)
    print_problems(console, result.problems, result.failed, result.report)
