"""PACO-LVIS and PASCAL-Part: COCO-format part datasets of LISA's `sem_seg` mixture.

The reference (dvlab-research/LISA utils/sem_seg_dataset.py, byte for byte the same in
ha-erim/KeySeg) opens each annotation file with pycocotools' COCO, names every category
as an object or an (object, part) pair, and at sampling time draws up to
`num_classes_per_sample` annotations of one image, one mask each (`annToMask`). This
module reads the same files without pycocotools' index (which trusts the file) and
returns, per image, the annotations the reference could draw: `load_paco_lvis` /
`load_pascal_part` check the JSON once, `read_annotations` decodes one image's masks.
Rules and their sources: docs/sources.md, "Part datasets".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from keyseg.errors import DataError
from keyseg.formats.fields import is_int, is_text, type_name
from keyseg.formats.refer import check_image_entry
from keyseg.masks.coco import SegmentationError, segmentation_to_mask
from keyseg.paths import confined_path
from keyseg.sources.records import Issue
from keyseg.sources.semantic import AnnotatedImage, PartCategory

# The published train files are a few hundred MB; parsing holds several times the file
# size in memory, so anything far larger is refused before it is read.
DEFAULT_MAX_JSON_BYTES = 4 << 30
# Lists of ids in one issue row are cut here: a report row stays readable.
LISTED_IDS = 20


class PartsError(ValueError):
    """An annotation file that cannot be used as a whole; the message names it."""


@dataclass(frozen=True)
class PartSource:
    name: str  # "paco_lvis", "pascal_part"
    annotation_file: str  # relative to the data dir
    image_dir: str  # the folder `file_name` is joined to, relative to the data dir
    clean_lvis_suffix: bool  # PACO cuts "_(...)" LVIS disambiguations, PASCAL-Part does not
    allow_whole_objects: bool  # PACO has object categories, PASCAL-Part only "obj:part"


PACO_LVIS = PartSource(
    name="paco_lvis",
    annotation_file="vlpart/paco/annotations/paco_lvis_v1_train.json",
    image_dir="coco",  # file names carry their "train2017/" folder
    clean_lvis_suffix=True,
    allow_whole_objects=True,
)
PASCAL_PART = PartSource(
    name="pascal_part",
    annotation_file="vlpart/pascal_part/train.json",
    image_dir="vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages",
    clean_lvis_suffix=False,
    allow_whole_objects=False,
)
PART_SOURCES = {source.name: source for source in (PACO_LVIS, PASCAL_PART)}


@dataclass(frozen=True)
class PartAnnotation:
    ann_id: int
    category: PartCategory
    segmentation: object  # as in the file; checked when decoded


@dataclass(frozen=True)
class PartItem:
    """One image the reference can draw, with its annotations in the file's order (the
    order `np.random.choice` sees them in)."""

    source: str
    image_id: int
    image: str  # relative to the data dir, joined as text; confine it before reading
    width: int  # from the JSON: annToMask sizes masks by it
    height: int
    annotations: tuple[PartAnnotation, ...]
    annotation_file: str  # for issue rows

    def fingerprint(self) -> bytes:
        payload = [self.source, self.image, self.width, self.height,
                   [[a.ann_id, a.category.object, a.category.part, a.segmentation] for a in self.annotations]]
        return json.dumps(payload, sort_keys=True, default=str).encode("utf-8")


@dataclass
class PartDataset:
    source: str
    annotation_file: str
    categories: dict[int, PartCategory]  # usable categories by id
    items: list[PartItem]  # images with at least one usable annotation, in the file's image order
    issues: list[Issue] = field(default_factory=list)


def part_phrases(category: PartCategory) -> list[str]:
    """The names the reference can put in a question for this category, in draw order.

    A whole object has one name. A part has two: the first when `random.random() < 0.5`,
    else the second (dvlab-research/LISA utils/sem_seg_dataset.py:229-233). Questions
    then lower-case the name (`class_name=text.lower()`, :283)."""
    if category.part is None:
        return [category.object]
    return [f"{category.object} {category.part}", f"the {category.part} of the {category.object}"]


def category_from_name(name: str, source: PartSource) -> PartCategory:
    """The reference's naming of one category (ValueError with the reason if it crashes
    or misbehaves on it there).

    PACO-LVIS: strip, split at ":" into one or two pieces, cut each at the first "_("
    (`bottle_(drink)` -> `bottle`); underscores otherwise stay. PASCAL-Part: strip, split
    at ":" into exactly two pieces, used as they are."""
    pieces = name.strip().split(":")
    if source.clean_lvis_suffix:
        pieces = [piece.split("_(")[0] for piece in pieces]
    if len(pieces) == 1 and source.allow_whole_objects:
        category = PartCategory(pieces[0])
    elif len(pieces) == 2:
        category = PartCategory(pieces[0], pieces[1])
    else:
        expected = "`object` or `object:part`" if source.allow_whole_objects else "`object:part`"
        raise ValueError(f"name {name!r:.80} has {len(pieces) - 1} ':' (expected {expected})")
    for phrase in part_phrases(category):
        if "||" in phrase:  # the reference asserts a class name holds no "||" (:281)
            raise ValueError(f"name {name!r:.80} contains '||', which the reference refuses")
        if not phrase.strip():
            raise ValueError(f"name {name!r:.80} gives an empty class name")
    return category


def load_paco_lvis(data_dir: str | os.PathLike, max_bytes: int = DEFAULT_MAX_JSON_BYTES) -> PartDataset:
    return load_part_source(data_dir, PACO_LVIS, max_bytes)


def load_pascal_part(data_dir: str | os.PathLike, max_bytes: int = DEFAULT_MAX_JSON_BYTES) -> PartDataset:
    return load_part_source(data_dir, PASCAL_PART, max_bytes)


def load_part_source(data_dir: str | os.PathLike, source: PartSource,
                     max_bytes: int = DEFAULT_MAX_JSON_BYTES) -> PartDataset:
    """Read and check one annotation file; raises PartsError only if the file as a whole
    is unusable. Every category, image and annotation entry is checked on its own: one
    that fails is an issue row and costs only itself (and what depends on it)."""
    document = _read_json(Path(data_dir), source, max_bytes)
    name = source.annotation_file
    issues: list[Issue] = []

    categories = _categories(document, source, issues)
    images = _images(document, name, issues)
    by_image = _annotations_by_image(document, name, images, categories, issues)

    items, without = [], []
    for image_id, entry in images.items():
        annotations = by_image.get(image_id)
        if not annotations:
            without.append(image_id)
            continue
        items.append(PartItem(source=source.name, image_id=image_id,
                              # Joined as text (`Path / "/abs"` would drop the folder); the
                              # name was checked to be relative and free of "..".
                              image=f"{source.image_dir}/{entry['file_name']}",
                              width=entry["width"], height=entry["height"],
                              annotations=tuple(annotations), annotation_file=name))
    if without:
        issues.append(Issue("warning", name, "no_annotations",
                            f"{len(without)} image(s) have no usable annotation and are skipped, as the "
                            f"reference redraws when it picks one: ids {_listed(without)}"))
    return PartDataset(source=source.name, annotation_file=name, categories=categories, items=items, issues=issues)


def read_annotations(item: PartItem) -> tuple[AnnotatedImage | None, list[Issue]]:
    """Decode one image's masks as `COCO.annToMask` does (polygons merged, RLE decoded,
    sized by the JSON's height and width). An annotation that cannot be decoded is an
    error row and is left out; None when none is left."""
    issues: list[Issue] = []
    image = AnnotatedImage(source=item.source, id=str(item.image_id), image=item.image,
                           width=item.width, height=item.height)
    for annotation in item.annotations:
        mask, mask_issues = annotation_mask(item, annotation)
        issues += mask_issues
        if mask is not None:
            image.categories.append(annotation.category)
            image.masks.append(mask)
    return (image if image.masks else None), issues


def annotation_mask(item: PartItem, annotation: PartAnnotation) -> tuple[np.ndarray | None, list[Issue]]:
    """One annotation's bool mask (None with an error row when it cannot be decoded)."""
    try:
        mask = ann_to_mask(annotation.segmentation, item.height, item.width)
    except SegmentationError as error:
        return None, [Issue("error", item.annotation_file, "bad_segmentation",
                            f"annotation {annotation.ann_id} (image {item.image_id}): {error}")]
    if not mask.any():
        return mask.astype(bool), [Issue("warning", item.annotation_file, "empty_segmentation",
                                         f"annotation {annotation.ann_id} (image {item.image_id}) has an empty mask")]
    return mask.astype(bool), []


def ann_to_mask(segmentation, height: int, width: int):
    """uint8 mask exactly as pycocotools' `annToMask`, or SegmentationError where that
    raises (the reference then drops the whole sample) or where keyseg refuses input
    pycocotools would decode silently (odd or short polygons, an RLE of another size)."""
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        raise SegmentationError("the segmentation is empty (pycocotools' annToMask raises on it)")
    if isinstance(segmentation, list):
        first = segmentation[0]
        if isinstance(first, list) and len(first) == 4:
            raise SegmentationError("the first polygon has 4 coordinates, which pycocotools reads as a box "
                                    "and fails on")
        if any(isinstance(part, dict) and not isinstance(part.get("counts"), list) for part in segmentation):
            raise SegmentationError("a list of compressed RLEs (pycocotools' annToMask cannot read it)")
        if not (all(isinstance(part, list) for part in segmentation)
                or all(isinstance(part, dict) for part in segmentation)):
            raise SegmentationError("expected a list of polygons or of uncompressed RLEs")
    elif not isinstance(segmentation, dict):
        raise SegmentationError(f"segmentation is {type_name(segmentation)}, expected polygons or an RLE dict")
    return segmentation_to_mask(segmentation, height, width)


def _read_json(data_dir: Path, source: PartSource, max_bytes: int) -> dict:
    name = source.annotation_file
    try:
        path = confined_path(data_dir, name)
    except DataError as error:
        raise PartsError(f"{name}: {error}") from None
    if not path.is_file():
        raise PartsError(f"{name}: file not found")
    size = path.stat().st_size
    if size > max_bytes:
        raise PartsError(f"{name}: {size} bytes, more than the limit of {max_bytes}")
    data = path.read_bytes()
    if len(data) > max_bytes:  # grew since stat
        raise PartsError(f"{name}: more than the limit of {max_bytes} bytes")
    try:
        document = json.loads(data)
    except RecursionError:
        raise PartsError(f"{name}: invalid JSON (nested too deeply)") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, a 4300-digit integer
        raise PartsError(f"{name}: invalid JSON ({error})") from None
    if not isinstance(document, dict):
        raise PartsError(f"{name}: expected a COCO object, found {type_name(document)}")
    for key in ("images", "annotations", "categories"):
        if key not in document:
            raise PartsError(f"{name}: not a COCO file with categories (lacks `{key}`)")
        if not isinstance(document[key], list):
            raise PartsError(f"{name}: `{key}` is {type_name(document[key])}, expected a list")
    return document


def _categories(document: dict, source: PartSource, issues: list[Issue]) -> dict[int, PartCategory]:
    name = source.annotation_file
    categories: dict[int, PartCategory] = {}
    for position, entry in enumerate(document["categories"]):
        if not isinstance(entry, dict) or not is_int(entry.get("id")):
            what = type_name(entry) if not isinstance(entry, dict) else "an entry without an integer `id`"
            issues.append(Issue("error", name, "bad_category", f"`categories[{position}]` is {what}"))
            continue
        category_id = entry["id"]
        if category_id in categories:
            # pycocotools indexes by id: the last entry wins.
            issues.append(Issue("warning", name, "duplicate_category_id",
                                f"category {category_id} appears more than once; the last entry is used"))
            del categories[category_id]
        if not is_text(entry.get("name")):
            issues.append(Issue("error", name, "bad_category",
                                f"category {category_id}: `name` is {type_name(entry.get('name'))}, expected a string"))
            continue
        try:
            categories[category_id] = category_from_name(entry["name"], source)
        except ValueError as error:
            issues.append(Issue("error", name, "bad_category", f"category {category_id}: {error}"))
    return categories


def _images(document: dict, name: str, issues: list[Issue]) -> dict[int, dict]:
    images: dict[int, dict] = {}
    bad: set[int] = set()
    for position, entry in enumerate(document["images"]):
        if not isinstance(entry, dict) or not is_int(entry.get("id")):
            what = type_name(entry) if not isinstance(entry, dict) else "an entry without an integer `id`"
            issues.append(Issue("error", name, "bad_image_entry", f"`images[{position}]` is {what}"))
            continue
        image_id = entry["id"]
        if image_id in images or image_id in bad:
            issues.append(Issue("warning", name, "duplicate_image_id",
                                f"image {image_id} appears more than once; the last entry is used"))
            bad.discard(image_id)
        reason = check_image_entry(entry) or _file_name_problem(entry["file_name"])
        if reason is not None:
            issues.append(Issue("error", name, "bad_image_entry", f"image {image_id} {reason}"))
            images.pop(image_id, None)
            bad.add(image_id)
            continue
        # pycocotools keeps a re-used id at its first position with the last entry.
        images[image_id] = entry
    return images


def _file_name_problem(file_name: str) -> str | None:
    """A `file_name` that would read outside the image folder (os.path.join drops the
    folder for an absolute name; ".." climbs out)."""
    if "\x00" in file_name:
        return "`file_name` has a NUL byte"
    if PurePosixPath(file_name).is_absolute() or PureWindowsPath(file_name).is_absolute() \
            or PureWindowsPath(file_name).drive:
        return f"`file_name` {file_name!r:.80} is absolute"
    if ".." in PurePosixPath(file_name.replace("\\", "/")).parts:
        return f"`file_name` {file_name!r:.80} leaves the image folder"
    return None


def _annotations_by_image(document: dict, name: str, images: dict[int, dict],
                          categories: dict[int, PartCategory], issues: list[Issue]) -> dict[int, list[PartAnnotation]]:
    entries: list[dict] = []
    last_position: dict[int, int] = {}
    for position, entry in enumerate(document["annotations"]):
        if not isinstance(entry, dict) or not is_int(entry.get("id")):
            what = type_name(entry) if not isinstance(entry, dict) else "an entry without an integer `id`"
            issues.append(Issue("error", name, "bad_annotation", f"`annotations[{position}]` is {what}"))
            continue
        for key in ("image_id", "category_id"):
            if not is_int(entry.get(key)):
                issues.append(Issue("error", name, "bad_annotation",
                                    f"annotation {entry['id']}: `{key}` is {type_name(entry.get(key))}, "
                                    "expected an integer"))
                break
        else:
            if "segmentation" not in entry:
                issues.append(Issue("error", name, "bad_annotation", f"annotation {entry['id']} lacks `segmentation`"))
                continue
            if entry["id"] in last_position:
                issues.append(Issue("warning", name, "duplicate_annotation_id",
                                    f"annotation id {entry['id']} appears more than once; only the last entry "
                                    "is kept"))
            last_position[entry["id"]] = len(entries)
            entries.append(entry)

    by_image: dict[int, list[PartAnnotation]] = {}
    missing_images: dict[int, int] = {}
    unknown_categories: dict[int, int] = {}
    for position, entry in enumerate(entries):
        if last_position[entry["id"]] != position:
            continue
        if entry["image_id"] not in images:
            missing_images[entry["image_id"]] = missing_images.get(entry["image_id"], 0) + 1
            continue
        category = categories.get(entry["category_id"])
        if category is None:
            unknown_categories[entry["category_id"]] = unknown_categories.get(entry["category_id"], 0) + 1
            continue
        by_image.setdefault(entry["image_id"], []).append(
            PartAnnotation(ann_id=entry["id"], category=category, segmentation=entry["segmentation"]))
    for image_id, count in missing_images.items():
        issues.append(Issue("warning", name, "missing_image_entry",
                            f"{count} annotation(s) point at image {image_id}, which `images` lacks or refused; "
                            "the reference never draws them"))
    for category_id, count in unknown_categories.items():
        issues.append(Issue("error", name, "unknown_category",
                            f"{count} annotation(s) have category {category_id}, which `categories` lacks or "
                            "refused (the reference would crash on them)"))
    return by_image


def _listed(ids: list[int]) -> str:
    shown = ", ".join(str(value) for value in ids[:LISTED_IDS])
    return shown + (f" and {len(ids) - LISTED_IDS} more" if len(ids) > LISTED_IDS else "")
