"""Label-map semantic segmentation (ADE20K, COCO-Stuff, Mapillary Vistas v2.0), read as
the reference's `sem_seg` loader reads them (LISA utils/sem_seg_dataset.py; the rules,
with the lines they come from, are in docs/sources.md).

Discovery (`find_*`) lists files only (an item's width and height are 0 and its map None
until it is read); `read_label_map` (or `convert_label_map` on bytes
already read) decodes one label map into the reference's convention (value = index into
the source's class list, 255 = ignore) and names the classes present. Nothing is written.

Every problem with one image is an `Issue` for that image, never an exception: a file
that is missing, unreadable, over the pixel bound, of the wrong size or kind, a label the
class list does not have (the reference would crash on it), or a link out of its folder.
"""

from __future__ import annotations

import io
import json
import os
from importlib import resources
from pathlib import Path
from struct import error as struct_error

import numpy as np
from PIL import Image, UnidentifiedImageError

from keyseg.errors import DataError
from keyseg.formats.fields import is_text
from keyseg.images import ImageError, check_image_size
from keyseg.paths import confined_path
from keyseg.sources.records import Issue, read_image_header
from keyseg.sources.semantic import LabelMapImage, SemanticClass

SEMSEG_SOURCES = ("ade20k", "cocostuff", "mapillary")
IGNORE_LABEL = 255  # the reference's `ignore_label`: never a class, never sampled

ADE20K_IMAGES = "ade20k/images/training"
ADE20K_ANNOTATIONS = "ade20k/annotations/training"
COCOSTUFF_LABELS = "cocostuff/train2017"
COCOSTUFF_IMAGES = "coco/train2017"
MAPILLARY_CONFIG = "mapillary/config_v2.0.json"
MAPILLARY_LABELS = "mapillary/training/v2.0/labels"
MAPILLARY_IMAGES = "mapillary/training/images"

# The reference's class lists, shipped byte for byte (keyseg/sources/data/).
ADE20K_CLASSES_FILE = "ade20k_classes.json"
COCOSTUFF_CLASSES_FILE = "cocostuff_classes.txt"

# PIL modes whose array is one uint8 value per pixel: grey, or palette indices. OpenCV
# would expand a palette PNG to colours, so label maps are read with PIL, as the reference.
LABEL_MAP_MODES = ("L", "P")


def _package_text(name: str) -> str:
    return resources.files("keyseg.sources").joinpath("data", name).read_text(encoding="utf-8")


def ade20k_classes() -> list[str]:
    """The 150 ADE20K names; label value k (after the shift) is entry k."""
    return list(json.loads(_package_text(ADE20K_CLASSES_FILE)))


def cocostuff_classes() -> list[str]:
    """The 182 COCO-Stuff names, the file's header line ("0: unlabeled") skipped, so label
    value k is line k+1; the 11 thing ids COCO never used ("street sign", "hat"...) stay."""
    lines = io.StringIO(_package_text(COCOSTUFF_CLASSES_FILE)).readlines()[1:]
    return [line.strip().split(": ")[-1] for line in lines]


def mapillary_classes(data_dir: str | os.PathLike) -> list[str]:
    """`readable` of every entry of `labels` in config_v2.0.json, lower-cased, in file
    order. Raises `DataError` naming the config when it cannot be used."""
    folder, name = MAPILLARY_CONFIG.rsplit("/", 1)
    path = confined_path(Path(data_dir) / folder, name, MAPILLARY_CONFIG)
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DataError(MAPILLARY_CONFIG, "file not found") from None
    except OSError as error:
        raise DataError(MAPILLARY_CONFIG, error.strerror or str(error)) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise DataError(MAPILLARY_CONFIG, f"not valid UTF-8 JSON ({error})") from None
    labels = document.get("labels") if isinstance(document, dict) else None
    if not isinstance(labels, list):
        raise DataError(MAPILLARY_CONFIG, "expected an object with a `labels` list")
    names = []
    for position, entry in enumerate(labels):
        readable = entry.get("readable") if isinstance(entry, dict) else None
        if not is_text(readable):
            raise DataError(MAPILLARY_CONFIG, f"labels[{position}] has no `readable` string")
        names.append(readable.lower())
    if len(names) > IGNORE_LABEL:
        raise DataError(MAPILLARY_CONFIG, f"{len(names)} labels; an 8-bit label map holds at most {IGNORE_LABEL}")
    return names


def class_names(source: str, data_dir: str | os.PathLike) -> list[str]:
    """The class list a source's label values index (Mapillary's comes from the data dir)."""
    if source == "ade20k":
        return ade20k_classes()
    if source == "cocostuff":
        return cocostuff_classes()
    if source == "mapillary":
        return mapillary_classes(data_dir)
    raise ValueError(f"unknown label-map source {source!r}; choose from {', '.join(SEMSEG_SOURCES)}")


def label_table(source: str, names: list[str]) -> np.ndarray:
    """uint8[256]: raw label-file value -> value in the reference's convention.

    ADE20K: 0 ("other") and 255 become ignore, every other value drops by one.
    COCO-Stuff: every class whose name has a "-" (the stuff classes "wall-brick",
    "floor-other"...) becomes ignore; as in the reference, where a name repeats only its
    last index does. Mapillary: unchanged (its "unlabeled" entry stays a class).
    """
    table = np.arange(256, dtype=np.int64)
    if source == "ade20k":
        table -= 1
        table[0] = IGNORE_LABEL
        table[IGNORE_LABEL] = IGNORE_LABEL
    elif source == "cocostuff":
        last_index = {name: index for index, name in enumerate(names)}
        for name, index in last_index.items():
            if "-" in name:
                table[index] = IGNORE_LABEL
    elif source != "mapillary":
        raise ValueError(f"unknown label-map source {source!r}")
    return table.astype(np.uint8)


# --- discovery -------------------------------------------------------------------------


def _names(data_dir: Path, folder: str) -> tuple[list[str], list[Issue]]:
    """Entry names of a folder, sorted; none (and no issue) when the folder is absent."""
    try:
        names = os.listdir(data_dir / folder)
    except FileNotFoundError:
        return [], []
    except OSError as error:
        return [], [Issue("error", folder, "unreadable_folder", error.strerror or str(error))]
    return sorted(names), []


def _bad_name(folder: str, name: str) -> Issue:
    shown = os.fsencode(name).decode("utf-8", "backslashreplace")
    return Issue("error", f"{folder}/{shown}", "bad_file_name", "the file name is not valid UTF-8")


def _globbed(names: list[str], suffix: str) -> list[str]:
    """What `glob(folder + "/*" + suffix)` gives on Linux: hidden names left out."""
    return [name for name in names if name.endswith(suffix) and not name.startswith(".")]


def find_ade20k(data_dir: str | os.PathLike) -> tuple[list[LabelMapImage], list[Issue]]:
    """Every `*.jpg` name in images/training (hidden ones too, as `os.listdir` lists
    them), sorted; the label is the image path with ".jpg" -> ".png" and "images" ->
    "annotations", replaced anywhere in the path as the reference does."""
    names, issues = _names(Path(data_dir), ADE20K_IMAGES)
    items = []
    for name in names:
        if not name.endswith(".jpg"):
            continue
        if not is_text(name):
            issues.append(_bad_name(ADE20K_IMAGES, name))
            continue
        label = f"{ADE20K_IMAGES}/{name}".replace(".jpg", ".png").replace("images", "annotations")
        items.append(LabelMapImage("ade20k", name[:-4], f"{ADE20K_IMAGES}/{name}", label, 0, 0))
    return items, issues


def find_cocostuff(data_dir: str | os.PathLike) -> tuple[list[LabelMapImage], list[Issue]]:
    """Every `*.png` label in cocostuff/train2017, sorted (the reference keeps glob's
    order, which only changes which random draw picks an image); the image is the label
    path with ".png" -> ".jpg" and "cocostuff" -> "coco"."""
    names, issues = _names(Path(data_dir), COCOSTUFF_LABELS)
    items = []
    for name in _globbed(names, ".png"):
        if not is_text(name):
            issues.append(_bad_name(COCOSTUFF_LABELS, name))
            continue
        label = f"{COCOSTUFF_LABELS}/{name}"
        image = label.replace(".png", ".jpg").replace("cocostuff", "coco")
        items.append(LabelMapImage("cocostuff", name[:-4], image, label, 0, 0))
    return items, issues


def find_mapillary(data_dir: str | os.PathLike) -> tuple[list[LabelMapImage], list[Issue]]:
    """Every `*.png` label in training/v2.0/labels, sorted; the image is the label path
    with ".png" -> ".jpg" and "v2.0/labels" -> "images". Nothing when config_v2.0.json is
    unusable (no label has a name then): one error for the config instead."""
    data_dir = Path(data_dir)
    names, issues = _names(data_dir, MAPILLARY_LABELS)
    if not names:
        return [], issues
    try:
        mapillary_classes(data_dir)
    except DataError as error:
        return [], [*issues, Issue("error", MAPILLARY_CONFIG, "bad_class_list", error.reason)]
    items = []
    for name in _globbed(names, ".png"):
        if not is_text(name):
            issues.append(_bad_name(MAPILLARY_LABELS, name))
            continue
        label = f"{MAPILLARY_LABELS}/{name}"
        image = label.replace(".png", ".jpg").replace("v2.0/labels", "images")
        items.append(LabelMapImage("mapillary", name[:-4], image, label, 0, 0))
    return items, issues


def find_label_maps(source: str, data_dir: str | os.PathLike) -> tuple[list[LabelMapImage], list[Issue]]:
    finders = {"ade20k": find_ade20k, "cocostuff": find_cocostuff, "mapillary": find_mapillary}
    if source not in finders:
        raise ValueError(f"unknown label-map source {source!r}; choose from {', '.join(SEMSEG_SOURCES)}")
    return finders[source](data_dir)


# --- reading ---------------------------------------------------------------------------

# The folder each file kind lives in: a path is confined to it (the folder itself may be
# a link to a shared copy, as COCO images often are).
_FOLDERS = {
    "ade20k": (ADE20K_IMAGES, ADE20K_ANNOTATIONS),
    "cocostuff": (COCOSTUFF_IMAGES, COCOSTUFF_LABELS),
    "mapillary": (MAPILLARY_IMAGES, MAPILLARY_LABELS),
}


def _confined(data_dir: Path, relative: str, folder: str) -> Path:
    """`data_dir / relative`, refused (DataError) unless it stays inside `folder`."""
    prefix = folder + "/"
    if not relative.startswith(prefix):
        raise DataError(relative, f"path is not inside {folder}")
    return confined_path(data_dir / folder, relative[len(prefix):], relative)


def read_label_inputs(item: LabelMapImage, data_dir: str | os.PathLike) -> tuple[tuple[bytes, bytes] | None, list[Issue]]:
    """(label bytes, image bytes), or the issue that stops them being read."""
    if item.source not in _FOLDERS:
        raise ValueError(f"unknown label-map source {item.source!r}")
    image_folder, label_folder = _FOLDERS[item.source]
    contents = []
    for file, folder in ((item.label, label_folder), (item.image, image_folder)):
        try:
            contents.append(_confined(Path(data_dir), file, folder).read_bytes())
        except DataError as error:  # absolute, `..`, or a link out of its folder
            return None, [Issue("error", file, "unsafe_path", error.reason)]
        except FileNotFoundError:
            return None, [Issue("error", file, "missing_file", "file not found")]
        except OSError as error:
            return None, [Issue("error", file, "unreadable_file", error.strerror or str(error))]
    return (contents[0], contents[1]), []


def decode_label_file(data: bytes) -> np.ndarray:
    """The label file's values as `np.array(PIL.Image.open(path))` gives them (palette
    indices for a palette PNG), refused unless one uint8 per pixel and within the pixel
    bound. Raises ImageError."""
    if not data:
        raise ImageError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            check_image_size(width, height)
            if image.mode not in LABEL_MAP_MODES:
                raise ImageError(f"PIL mode {image.mode!r}; a label map has one 8-bit value a pixel (mode L or P)")
            values = np.array(image)
    except Image.DecompressionBombError as error:
        raise ImageError(f"decompression bomb refused ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, struct_error) as error:
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"not a readable image ({error})") from None
    if values.dtype != np.uint8 or values.ndim != 2:
        raise ImageError(f"decoded to {values.dtype} {values.shape}, expected 2-D uint8")
    return values


def convert_label_map(
    item: LabelMapImage,
    label_bytes: bytes,
    image_bytes: bytes,
    names: list[str],
    decode_images: bool = False,
) -> tuple[LabelMapImage | None, list[Issue]]:
    """One image's label map in the reference's convention and the classes present.

    None (with an error) when the image cannot be used. An image whose map has no class
    comes back with `classes == []` and a warning: the reference draws another image
    instead (utils/sem_seg_dataset.py:264), so a loader must skip it.
    """
    info, issues = read_image_header(item.image, image_bytes, decode_images)
    if info is None:
        return None, issues
    try:
        raw = decode_label_file(label_bytes)
    except ImageError as error:
        return None, [*issues, Issue("error", item.label, "bad_label_map", str(error))]
    height, width = raw.shape
    if (width, height) != (info.width, info.height):
        return None, [*issues, Issue("error", item.label, "label_size_mismatch",
                                     f"label map is {width}x{height}, the image {info.width}x{info.height}")]
    label_map = label_table(item.source, names)[raw]
    present = [int(value) for value in np.unique(label_map) if value != IGNORE_LABEL]
    unknown = [value for value in present if value >= len(names)]
    if unknown:
        shown = ", ".join(str(value) for value in unknown[:5])
        return None, [*issues, Issue("error", item.label, "unknown_label",
                                     f"label value(s) {shown} (after the source's shift) not in the "
                                     f"{len(names)}-class list of {item.source}; the reference would crash")]
    if not present:
        issues.append(Issue("warning", item.label, "no_classes", "every pixel is ignore: no class to ask about"))
    read = LabelMapImage(item.source, item.id, item.image, item.label, width, height, label_map,
                         [SemanticClass(value, names[value]) for value in present])
    return read, issues


def read_label_map(
    item: LabelMapImage,
    data_dir: str | os.PathLike,
    names: list[str] | None = None,
    decode_images: bool = False,
) -> tuple[LabelMapImage | None, list[Issue]]:
    """`convert_label_map` on the item's files; `names` defaults to the source's class
    list (pass it in to read Mapillary's config once for many images)."""
    if names is None:
        try:
            names = class_names(item.source, data_dir)
        except DataError as error:
            return None, [Issue("error", error.path or MAPILLARY_CONFIG, "bad_class_list", error.reason)]
    inputs, issues = read_label_inputs(item, data_dir)
    if inputs is None:
        return None, issues
    return convert_label_map(item, inputs[0], inputs[1], names, decode_images)
