"""refCOCO / refCOCO+ / refCOCOg / refCLEF: one record per image and split, one mask per ref."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from keyseg.formats.fields import is_int
from keyseg.formats.refer import (REFER_DATASETS, CocoInstances, ReferError, check_ref, load_instances, load_refs,
                                  refs_file, splits_of_ref)
from keyseg.images import ImageError, image_info
from keyseg.masks.coco import SegmentationError, segmentation_to_mask
from keyseg.sources.records import Issue, PreparedImage, PreparedTarget

REFER_ROOT = Path("refer_seg")
COCO_IMAGE_DIR = REFER_ROOT / "images" / "mscoco" / "images" / "train2014"
# refCLEF's images: instances.json's `file_name` is joined to this folder as it is, subfolders
# included (LISA `utils/refer_seg_dataset.py:76-79`, `utils/refer.py:53-54`).
SAIAPR_IMAGE_DIR = REFER_ROOT / "images" / "saiapr_tc-12"


def refer_image_dir(dataset: str) -> Path:
    """The folder a dataset's `file_name`s are relative to: saiapr_tc-12 for refCLEF, COCO
    train2014 for the refCOCO family."""
    return SAIAPR_IMAGE_DIR if dataset == "refclef" else COCO_IMAGE_DIR


@dataclass(frozen=True)
class ReferItem:
    image_id: int
    image: str  # relative to the data dir
    height: int  # from instances.json: the reference sizes masks by it
    width: int
    refs: tuple  # of {"ref_id", "ann_id", "sents"}
    segmentations: dict  # ann_id -> segmentation
    refs_file: str  # for issue rows
    instances_file: str

    def fingerprint(self) -> bytes:
        payload = [self.image, self.height, self.width, self.refs, sorted(self.segmentations.items())]
        return json.dumps(payload, sort_keys=True, default=str).encode("utf-8")


@dataclass
class ReferSplits:
    items: dict[str, list[ReferItem]]  # split -> items sorted by image id
    issues: dict[str, list[Issue]]  # split -> problems found while joining refs to anns
    general: list[Issue]  # problems that belong to no split (a ref whose `split` is unusable)


def load_refer_dataset(data_dir: Path, dataset: str, split_by: str) -> tuple[CocoInstances, list]:
    """Read instances.json and refs(<split_by>).p; raises ReferError with the file named.

    Only a file that is unusable as a whole raises: its entries are checked one by one
    in `group_refer_items`."""
    dataset_dir = data_dir / REFER_ROOT / dataset
    refs_path, instances_path = refs_file(dataset_dir, split_by), dataset_dir / "instances.json"
    for path in (refs_path, instances_path):
        if not path.is_file():
            raise ReferError(f"{path.relative_to(data_dir)}: file not found")
    try:
        refs = load_refs(refs_path.read_bytes())
    except ReferError as error:
        raise type(error)(f"{refs_path.relative_to(data_dir)}: {error}") from None
    try:
        instances = load_instances(instances_path.read_bytes())
    except ReferError as error:
        raise ReferError(f"{instances_path.relative_to(data_dir)}: {error}") from None
    return instances, refs


def group_refer_items(
    instances: CocoInstances, refs: list, dataset: str, split_by: str, splits: tuple[str, ...]
) -> ReferSplits:
    """Join refs to their annotations and images, one item per (split, image).

    Every ref and entry is checked against its schema first; one that fails is an error
    row naming the file and the field, and the others go on."""
    refs_name = str(REFER_ROOT / dataset / f"refs({split_by}).p")
    instances_name = str(REFER_ROOT / dataset / "instances.json")
    grouped: dict[str, dict[int, list[dict]]] = {split: defaultdict(list) for split in splits}
    issues: dict[str, list[Issue]] = {split: [] for split in splits}
    general = [Issue("error", instances_name, "bad_entry", problem) for problem in instances.problems]
    known_splits = REFER_DATASETS[dataset][split_by]
    image_dir = refer_image_dir(dataset).as_posix()
    for position, ref in enumerate(refs):
        reason = check_ref(ref)
        split = ref.get("split") if isinstance(ref, dict) else None
        member_of = splits_of_ref(split, known_splits) if isinstance(split, str) else ()
        if not member_of:
            if reason is None:
                reason = f"`split` {split!r:.40} is not one of {', '.join(known_splits)}"
            split = None  # unusable: reported once, under no split
        else:
            member_of = tuple(name for name in member_of if name in grouped)
            if not member_of:
                continue  # a split nobody asked for: not ours to judge
            split = member_of[0]  # where a problem with the ref is reported
        if reason is not None:
            name = f"ref {ref['ref_id']}" if isinstance(ref, dict) and is_int(ref.get("ref_id")) else \
                f"ref at position {position}"
            row = Issue("error", refs_name, "bad_ref", f"{name} {reason}")
            (issues[split] if split is not None else general).append(row)
            continue
        if ref["image_id"] in instances.bad_images:
            issues[split].append(Issue("error", instances_name, "bad_image_entry",
                                       f"ref {ref['ref_id']}: image {ref['image_id']} "
                                       f"{instances.bad_images[ref['image_id']]}"))
            continue
        if ref["ann_id"] not in instances.annotations:
            issues[split].append(
                Issue("error", refs_name, "missing_annotation",
                      f"ref {ref['ref_id']} points at annotation {ref['ann_id']}, which instances.json lacks")
            )
            continue
        if ref["image_id"] not in instances.images:
            issues[split].append(
                Issue("error", refs_name, "missing_image_entry",
                      f"ref {ref['ref_id']} points at image {ref['image_id']}, which instances.json lacks")
            )
            continue
        for name in member_of:
            grouped[name][ref["image_id"]].append(ref)

    items: dict[str, list[ReferItem]] = {}
    for split, by_image in grouped.items():
        items[split] = []
        for image_id in sorted(by_image):
            entry = instances.images[image_id]
            image_refs = sorted(by_image[image_id], key=lambda ref: ref["ref_id"])
            items[split].append(
                ReferItem(
                    image_id=image_id,
                    # Joined as text: `Path / "/etc/passwd"` would drop the folder. The
                    # worker confines it to the image folder before reading anything.
                    image=f"{image_dir}/{entry['file_name']}",
                    height=entry["height"],
                    width=entry["width"],
                    refs=tuple(
                        {"ref_id": ref["ref_id"], "ann_id": ref["ann_id"],
                         "sents": [sentence["sent"] for sentence in ref["sentences"]]}
                        for ref in image_refs
                    ),
                    segmentations={ref["ann_id"]: instances.annotations[ref["ann_id"]].get("segmentation")
                                   for ref in image_refs},
                    refs_file=refs_name,
                    instances_file=instances_name,
                )
            )
    return ReferSplits(items=items, issues=issues, general=general)


def convert_refer(item: ReferItem, image_bytes: bytes, decode_images: bool = False) -> PreparedImage:
    """One mask per ref, decoded by pycocotools at the size instances.json gives."""
    try:
        info = image_info(image_bytes, decode=decode_images)
    except ImageError as error:
        return PreparedImage(item.image, item.width, item.height, None,
                             [Issue("error", item.image, "bad_image", str(error))])
    issues = []
    if (info.width, info.height) != (item.width, item.height):
        issues.append(Issue("warning", item.image, "size_mismatch",
                            f"image is {info.width}x{info.height}, instances.json says {item.width}x{item.height}"))
    targets = []
    for ref in item.refs:
        try:
            mask = segmentation_to_mask(item.segmentations[ref["ann_id"]], item.height, item.width)
        except SegmentationError as error:
            issues.append(Issue("error", item.instances_file, "bad_segmentation",
                                f"annotation {ref['ann_id']} (ref {ref['ref_id']}): {error}"))
            continue
        if not mask.any():
            issues.append(Issue("warning", item.instances_file, "empty_segmentation",
                                f"annotation {ref['ann_id']} (ref {ref['ref_id']}) has an empty mask"))
        if not ref["sents"]:
            issues.append(Issue("warning", item.refs_file, "no_sentences", f"ref {ref['ref_id']} has no sentences"))
        targets.append(PreparedTarget(texts=list(ref["sents"]), is_sentence=False, mask=mask,
                                      ann_id=ref["ann_id"], ref_id=ref["ref_id"]))
    if not targets:
        return PreparedImage(item.image, item.width, item.height, None, issues)
    return PreparedImage(item.image, item.width, item.height, targets, issues)

