"""ReasonSeg: LabelMe JSON + JPEG pairs to one target/ignore mask per image."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from keyseg.formats.fields import is_text, type_name
from keyseg.formats.labelme import LabelMeError, decode_json_text, parse_labelme
from keyseg.masks.raster import Polygon, check_outline, is_flag_label, rasterize_polygons
from keyseg.masks.validate import validate_shapes
from keyseg.sources.records import Issue, PreparedImage, PreparedTarget, read_image_header

REASONSEG_ROOT = Path("reason_seg") / "ReasonSeg"
REASONSEG_SPLITS = ("train", "val", "test")
EXPLANATORY_FILE = REASONSEG_ROOT / "explanatory" / "train.json"


@dataclass(frozen=True)
class ReasonSegItem:
    name: str  # file stem, shared by the JPEG and the JSON
    image: str  # relative to the data dir
    annotation: str  # relative to the data dir


def discover_reasonseg(data_dir: Path, split: str) -> tuple[list[ReasonSegItem], list[Issue]]:
    """Every stem with a .jpg or a .json in the split folder, sorted; and the file names
    that cannot be used at all (not valid UTF-8: they could not be written to a manifest).

    A stem with only one of the two files is kept, so that conversion reports it.
    """
    folder = data_dir / REASONSEG_ROOT / split
    relative = REASONSEG_ROOT / split
    stems = {path.stem for path in folder.glob("*.jpg")} | {path.stem for path in folder.glob("*.json")}
    items, issues = [], []
    for stem in sorted(stems):
        if not is_text(stem):
            shown = os.fsencode(stem).decode("utf-8", "backslashreplace")
            issues.append(Issue("error", str(relative / shown), "bad_file_name", "the file name is not valid UTF-8"))
            continue
        items.append(ReasonSegItem(name=stem, image=str(relative / f"{stem}.jpg"),
                                   annotation=str(relative / f"{stem}.json")))
    return items, issues


def load_explanatory(data: bytes, file: str) -> tuple[dict[str, dict], list[Issue]]:
    """Map image name -> {"query", "outputs"} from explanatory/train.json."""
    try:
        document, _ = decode_json_text(data)
    except LabelMeError as error:
        return {}, [Issue("error", file, "bad_json", str(error))]
    if not isinstance(document, list):
        return {}, [Issue("error", file, "bad_json", "expected a list of records")]
    by_image: dict[str, dict] = {}
    issues = []
    for position, entry in enumerate(document):
        if not isinstance(entry, dict) or not all(key in entry for key in ("image", "query", "outputs")):
            issues.append(Issue("error", file, "missing_key", f"record {position} lacks image/query/outputs"))
            continue
        wrong = [key for key in ("image", "query", "outputs") if not is_text(entry[key])]
        if wrong:
            issues.append(Issue("error", file, "bad_type",
                                f"record {position}: `{wrong[0]}` is {type_name(entry[wrong[0]])}, expected a string"))
            continue
        by_image[entry["image"]] = {"query": entry["query"], "outputs": entry["outputs"]}
    return by_image, issues


def convert_reasonseg(
    item: ReasonSegItem,
    annotation_bytes: bytes,
    image_bytes: bytes,
    explanatory: dict | None,
    decode_images: bool = False,
) -> PreparedImage:
    """One image's mask (docs/fidelity.md M3) and target record; problems become issues."""
    issues: list[Issue] = []
    try:
        annotation = parse_labelme(annotation_bytes)
    except LabelMeError as error:
        return PreparedImage(item.image, 0, 0, None, [Issue("error", item.annotation, "bad_annotation", str(error))])
    info, image_issues = read_image_header(item.image, image_bytes, decode_images)
    if info is None:
        return PreparedImage(item.image, 0, 0, None, image_issues)
    issues += image_issues
    if annotation.encoding != "utf-8":
        issues.append(Issue("warning", item.annotation, "not_utf8", f"decoded as {annotation.encoding}"))

    for index, shape in enumerate(annotation.shapes):
        too_long = None if is_flag_label(shape.label) else check_outline(shape.points, info.height, info.width)
        if too_long:
            return PreparedImage(item.image, 0, 0, None,
                                 [Issue("error", item.annotation, "bad_annotation", f"shape {index}: {too_long}")])
    for warning in validate_shapes(annotation.shapes, info.width, info.height):
        issues.append(Issue("warning", item.annotation, warning.code, warning.detail))

    polygons = [
        Polygon.from_points(shape.label, shape.points) for shape in annotation.shapes if not is_flag_label(shape.label)
    ]
    target = PreparedTarget(
        texts=annotation.texts,
        is_sentence=annotation.is_sentence,
        mask=rasterize_polygons(polygons, info.height, info.width),
        explanatory=explanatory,
        outlines=[polygon.points for polygon in polygons],
    )
    return PreparedImage(item.image, info.width, info.height, [target], issues)


def explanatory_fingerprint(explanatory: dict | None) -> bytes:
    return json.dumps(explanatory, sort_keys=True, ensure_ascii=False).encode("utf-8")
