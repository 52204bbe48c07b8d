"""The unit of work of `keyseg prepare`: one image in, its masks and record out.

Runs in worker processes, so everything here is picklable and self-contained: the task
carries what the worker needs, the worker writes the masks (atomically) and returns the
manifest record; the main process only collects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from keyseg.errors import DataError
from keyseg.images import DEFAULT_MAX_IMAGE_PIXELS, ImageError, decode_image, set_max_image_pixels
from keyseg.io import atomic_write_bytes, sha256_bytes
from keyseg.masks.overlay import overlay_png, overlay_strip, target_overlay
from keyseg.masks.png import encode_png
from keyseg.sources.files import data_file
from keyseg.sources.parts import PartItem, annotation_mask, part_phrases
from keyseg.sources.reasonseg import ReasonSegItem, convert_reasonseg, explanatory_fingerprint
from keyseg.sources.records import Issue, PreparedImage, PreparedTarget, read_image_header
from keyseg.sources.refer import ReferItem, convert_refer
from keyseg.sources.semantic import LabelMapImage, label_map_targets
from keyseg.sources.semseg import convert_label_map, read_label_inputs

# Bump when the masks or records this code writes change, so old outputs are redone.
PREPARE_FORMAT_VERSION = 2


@dataclass(frozen=True)
class VQAItem:
    """One usable LLaVA-Instruct record (`keyseg.sources.llava.VQARecord`, whose module
    imports the tokenizer side: workers get this plain copy instead)."""

    index: int  # position in the file
    id: str  # the record's own `id` (several records can share one)
    image: str  # relative to the data dir
    conversations: list[dict]  # the reader's cleaned turns
    file: str  # the JSON file, for issue rows

    def fingerprint(self) -> bytes:
        return json.dumps([self.id, self.image, self.conversations], sort_keys=True).encode("utf-8")


@dataclass
class PrepareTask:
    record_id: str
    kind: str  # "reasonseg", "refer", "semseg", "parts" or "vqa"
    item: ReasonSegItem | ReferItem | LabelMapImage | PartItem | VQAItem
    explanatory: dict | None
    source: str
    split: str
    data_dir: str
    out_dir: str
    strict: bool
    decode_images: bool
    previous: dict | None = None  # this record from an earlier run, if any
    visualize: bool = False
    # The pixel bound of the run: a worker is a separate process and must set it itself.
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    class_names: tuple[str, ...] = ()  # label-map sources: the source's class list


@dataclass
class TaskResult:
    record: dict | None  # None when the image failed
    issues: list[Issue] = field(default_factory=list)
    up_to_date: bool = False


def process_task(task: PrepareTask) -> TaskResult:
    set_max_image_pixels(task.max_image_pixels)
    data_dir, split_dir = Path(task.data_dir), Path(task.out_dir) / task.source / task.split
    inputs, issues = _read_inputs(task, data_dir)
    if inputs is None:
        return TaskResult(None, issues)
    input_hash = sha256_bytes(*inputs, _settings_fingerprint(task))

    previous = task.previous
    previous_issues = _previous_issues(previous)
    if (previous is not None and previous.get("input_hash") == input_hash and previous_issues is not None
            and _outputs_exist(previous, split_dir, task)):
        # Warnings are facts about the inputs, which did not change: report them again.
        return TaskResult(previous, previous_issues, up_to_date=True)

    prepared = _convert(task, inputs)
    issues = prepared.issues
    if task.strict:
        issues = [Issue("error", i.file, i.code, f"{i.reason} (--strict)") if i.severity == "warning" else i
                  for i in issues]
        if any(issue.severity == "error" for issue in issues):
            return TaskResult(None, issues)
    # A converter returns no targets when the image is unusable; an error that comes with
    # targets cost only its own target (one bad refCOCO annotation, not the image's other refs).
    # A VQA record has no targets by nature: None is its failure.
    if prepared.targets is None or (not prepared.targets and not isinstance(task.item, VQAItem)):
        return TaskResult(None, issues)

    targets = []
    for index, target in enumerate(prepared.targets):
        mask_path = Path("masks") / f"{task.record_id}_{index}.png"
        atomic_write_bytes(split_dir / mask_path, encode_png(target.mask))
        targets.append({
            "texts": target.texts,
            "is_sentence": target.is_sentence,
            "mask": f"{task.source}/{task.split}/{mask_path.as_posix()}",
            "explanatory": target.explanatory,
            "ann_id": target.ann_id,
            "ref_id": target.ref_id,
        })
    record = {
        "id": task.record_id,
        "image": prepared.image,
        "width": prepared.width,
        "height": prepared.height,
        "source": task.source,
        "split": task.split,
        "targets": targets,
        "input_hash": input_hash,
        "issues": [issue.to_dict() for issue in issues],
    }
    if isinstance(task.item, (ReferItem, PartItem)):
        record["image_id"] = task.item.image_id
    if isinstance(task.item, VQAItem):
        record["conversations"] = [dict(turn) for turn in task.item.conversations]
    if task.visualize and targets:
        try:
            record["overlay"] = _write_overlay(task, prepared, inputs[-1], split_dir)
        except ImageError as error:
            # Only the full decode of the overlay found it: the image is as bad as with
            # --decode-images, so the record goes (its masks are removed as orphans).
            return TaskResult(None, [*issues, Issue("error", prepared.image, "bad_image", str(error))])
    return TaskResult(record, issues)


def _read_inputs(task: PrepareTask, data_dir: Path) -> tuple[list[bytes] | None, list[Issue]]:
    """The bytes every output depends on, or the reason they cannot be read."""
    item = task.item
    if isinstance(item, LabelMapImage):
        pair, issues = read_label_inputs(item, data_dir)
        if pair is None:
            return None, issues
        # The class list decides every name and mask: part of what the record depends on.
        return [sha256_bytes("\n".join(task.class_names).encode()).encode(), *pair], []
    if isinstance(item, ReasonSegItem):
        files = [(item.annotation, item.annotation), (item.image, item.image)]
    elif isinstance(item, PartItem):
        files = [(item.image, item.annotation_file)]
    elif isinstance(item, VQAItem):
        files = [(item.image, item.file)]
    else:
        files = [(item.image, item.instances_file)]  # (the file, the data file naming it)
    contents = []
    for file, named_in in files:
        try:
            contents.append(data_file(data_dir, file, named_in).read_bytes())
        except DataError as error:  # absolute, `..`, or a link out of the data folder
            return None, [Issue("error", named_in, "unsafe_path", error.reason)]
        except FileNotFoundError:
            return None, [Issue("error", file, "missing_file", "file not found")]
        except OSError as error:
            return None, [Issue("error", file, "unreadable_file", error.strerror or str(error))]
    if isinstance(item, ReasonSegItem):
        contents.insert(0, explanatory_fingerprint(task.explanatory))
    else:
        contents.insert(0, item.fingerprint())
    return contents, []


def _settings_fingerprint(task: PrepareTask) -> bytes:
    # The pixel bound decides which records pass: a lower bound must not reuse a record.
    return (f"v{PREPARE_FORMAT_VERSION}|strict={task.strict}|decode={task.decode_images}|id={task.record_id}"
            f"|max_pixels={task.max_image_pixels}").encode()


def _previous_issues(previous: dict | None) -> list[Issue] | None:
    """The issues a previous record lists, or None when they are not what we write (redo it)."""
    rows = previous.get("issues", []) if previous is not None else None
    if not isinstance(rows, list):
        return None
    keys = ("severity", "file", "code", "reason")
    if not all(isinstance(row, dict) and sorted(row) == sorted(keys) and all(isinstance(row[key], str) for key in keys)
               for row in rows):
        return None
    return [Issue(**row) for row in rows]


def _outputs_exist(previous: dict, split_dir: Path, task: PrepareTask) -> bool:
    out_dir = split_dir.parent.parent
    overlay = previous.get("overlay")
    if task.visualize and not (isinstance(overlay, str) and _own_file(out_dir, overlay, task)):
        return False
    return all(_own_file(out_dir, target["mask"], task) for target in previous["targets"])


def _own_file(out_dir: Path, relative: str, task: PrepareTask) -> bool:
    """A file this split wrote: a previous record is reused only with outputs in its own folder."""
    split_dir = out_dir / task.source / task.split
    path = out_dir / relative
    return path.parent.parent == split_dir and path.is_file() and not path.is_symlink()


def _convert(task: PrepareTask, inputs: list[bytes]) -> PreparedImage:
    if isinstance(task.item, LabelMapImage):
        return _convert_label_map(task, *inputs[1:])
    if isinstance(task.item, PartItem):
        return _convert_parts(task.item, inputs[1], task.decode_images)
    if isinstance(task.item, VQAItem):
        return _convert_vqa(task.item, inputs[1], task.decode_images)
    if isinstance(task.item, ReasonSegItem):
        _, annotation_bytes, image_bytes = inputs
        return convert_reasonseg(task.item, annotation_bytes, image_bytes, task.explanatory, task.decode_images)
    _, image_bytes = inputs
    return convert_refer(task.item, image_bytes, task.decode_images)


def _convert_label_map(task: PrepareTask, label_bytes: bytes, image_bytes: bytes) -> PreparedImage:
    """One target per class present: its name, and the pixels of the first label with that
    name (the reference's lookup, `label_map_targets`)."""
    item, names = task.item, list(task.class_names)
    converted, issues = convert_label_map(item, label_bytes, image_bytes, names, task.decode_images)
    if converted is None:
        return PreparedImage(item.image, 0, 0, None, issues)
    present = [semantic_class.label for semantic_class in converted.classes]
    targets = [PreparedTarget(texts=[name], is_sentence=False, mask=(converted.label_map == label).astype("uint8"))
               for name, label in label_map_targets(names, present)]
    return PreparedImage(item.image, converted.width, converted.height, targets, issues)


def _convert_parts(item: PartItem, image_bytes: bytes, decode_images: bool) -> PreparedImage:
    """One target per annotation, in the file's order: the category's phrases (the
    reference draws one of them, `part_phrases`), the `annToMask` mask sized by the JSON.
    An annotation that cannot be decoded is an error row and costs only itself."""
    info, issues = read_image_header(item.image, image_bytes, decode_images)
    if info is None:
        return PreparedImage(item.image, item.width, item.height, None, issues)
    if (info.width, info.height) != (item.width, item.height):
        issues.append(Issue("warning", item.image, "size_mismatch",
                            f"image is {info.width}x{info.height}, {item.annotation_file} says "
                            f"{item.width}x{item.height}"))
    targets = []
    for annotation in item.annotations:
        mask, mask_issues = annotation_mask(item, annotation)
        issues += mask_issues
        if mask is not None:
            targets.append(PreparedTarget(texts=part_phrases(annotation.category), is_sentence=False,
                                          mask=mask.astype("uint8"), ann_id=annotation.ann_id))
    return PreparedImage(item.image, item.width, item.height, targets or None, issues)


def _convert_vqa(item: VQAItem, image_bytes: bytes, decode_images: bool) -> PreparedImage:
    """No masks: the image is checked as any other (header, size, pixel bound)."""
    info, issues = read_image_header(item.image, image_bytes, decode_images)
    if info is None:
        return PreparedImage(item.image, 0, 0, None, issues)
    return PreparedImage(item.image, info.width, info.height, [], issues)


def _write_overlay(task: PrepareTask, prepared: PreparedImage, image_bytes: bytes, split_dir: Path) -> str:
    image_rgb = decode_image(image_bytes)[:, :, ::-1]  # OpenCV decodes BGR; the drawer takes RGB
    panels = [
        target_overlay(image_rgb, target.mask, target.outlines, target.texts[0] if target.texts else "")
        for target in prepared.targets[:4]
    ]
    relative = Path("overlays") / f"{task.record_id}.png"
    atomic_write_bytes(split_dir / relative, overlay_png(overlay_strip(panels)))
    return f"{task.source}/{task.split}/{relative.as_posix()}"
