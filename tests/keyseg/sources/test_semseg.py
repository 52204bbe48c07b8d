"""Label-map sources (keyseg/sources/semseg.py) against an independent implementation of the
reference's rules (tests/helpers/reference_semseg.py), on the demo layouts of keyseg/demo/semseg.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reference_semseg as ref
from keyseg.demo.semseg import SPECIALS, write_ade20k, write_cocostuff, write_mapillary
from keyseg.images import image_pixel_bound
from keyseg.sources import semseg
from keyseg.sources.semantic import LabelMapImage

W, H = 64, 48
N_IMAGES = 9
DATA_FILES = Path(semseg.__file__).parent / "data"

# sha256 of the class lists at dvlab-research/LISA 3cb2d4301f1af4691bd4f3938335ef06e76f155a
# (utils/ade20k_classes.json, utils/cocostuff_classes.txt; the KeySeg release has the same bytes).
REFERENCE_SHA256 = {
    "ade20k_classes.json": "42a48047f61fe071c4cbc4b16cc8720fdd91a886a7a9b7e34c293d1592677644",
    "cocostuff_classes.txt": "6292e91f089828221aa3a7867e41bcb885e7614f3cc6fe4edae2eef45ff26205",
}

# What keyseg must say about each awkward demo image (None: read, with these warnings).
EXPECTED = {
    "ade20k": {0: None, 1: "missing_file", 2: "label_size_mismatch", 3: "no_classes", 4: "unknown_label"},
    "cocostuff": {0: None, 1: None, 2: "missing_file", 3: "label_size_mismatch", 4: "unknown_label",
                  5: "no_classes"},
    "mapillary": {0: None, 1: "missing_file", 2: "label_size_mismatch", 3: "unknown_label"},
}
WRITERS = {"ade20k": write_ade20k, "cocostuff": write_cocostuff, "mapillary": write_mapillary}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    # A neutral folder name: the reference rewrites "images", "cocostuff"... anywhere in a path.
    root = tmp_path_factory.mktemp("semseg_demo")
    for writer in WRITERS.values():
        writer(root, 0, N_IMAGES, W, H)
    return root


def _reference(source: str, data_dir: Path):
    base = str(data_dir)
    if source == "ade20k":
        return ref.init_ade20k(base, DATA_FILES / "ade20k_classes.json")
    if source == "cocostuff":
        return ref.init_cocostuff(base, DATA_FILES / "cocostuff_classes.txt")
    return ref.init_mapillary(base)


def _read_all(source: str, data_dir: Path):
    items, issues = semseg.find_label_maps(source, data_dir)
    assert issues == []
    names = semseg.class_names(source, data_dir)
    return items, {item.id: semseg.read_label_map(item, data_dir, names) for item in items}


def test_class_lists_are_the_reference_files():
    for name, digest in REFERENCE_SHA256.items():
        assert hashlib.sha256((DATA_FILES / name).read_bytes()).hexdigest() == digest
    ade, coco = semseg.ade20k_classes(), semseg.cocostuff_classes()
    assert (len(ade), ade[0], ade[-1]) == (150, "wall", "flag")
    assert (len(coco), coco[0], coco[11], coco[-1]) == (182, "person", "street sign", "wood")
    assert sum("-" in name for name in coco) == 28


@pytest.mark.parametrize("source", ["ade20k", "cocostuff", "mapillary"])
def test_label_maps_and_classes_match_the_reference(source, data_dir):
    classes, ref_images, ref_labels = _reference(source, data_dir)
    items, read = _read_all(source, data_dir)
    pairs = sorted(zip(ref_images, ref_labels))
    assert [(str(data_dir / item.image), str(data_dir / item.label)) for item in items] == pairs
    assert semseg.class_names(source, data_dir) == [str(name) for name in classes]

    errors = {index for index, code in EXPECTED[source].items() if code not in (None, "no_classes")}
    assert {index for index, item in enumerate(items) if read[item.id][0] is None} == errors
    compared = 0
    for item, (_, label_path) in zip(items, pairs):
        image, _ = read[item.id]
        if image is None:
            continue
        expected = ref.reference_label(source, label_path, classes)
        assert image.label_map.dtype == np.uint8 and image.label_map.shape == expected.shape
        assert np.array_equal(image.label_map, expected), item.id
        labels, names = ref.reference_classes(expected, classes)
        assert [c.label for c in image.classes] == labels
        assert [c.name for c in image.classes] == names
        for mask, c in zip(ref.reference_masks(expected, classes, names), image.classes):
            assert np.array_equal(mask, image.label_map == c.label)
        assert (image.height, image.width) == expected.shape
        compared += 1
    assert compared >= N_IMAGES - len(SPECIALS[source]) + 1


@pytest.mark.parametrize("source", ["ade20k", "cocostuff", "mapillary"])
def test_awkward_demo_images_are_issues_not_crashes(source, data_dir):
    items, read = _read_all(source, data_dir)
    assert len(items) == N_IMAGES
    for index, item in enumerate(items):
        image, issues = read[item.id]
        expected = EXPECTED[source].get(index)
        codes = [issue.code for issue in issues]
        if expected is None:
            assert image is not None and image.classes and codes == [], (item.id, codes)
        elif expected == "no_classes":
            assert image is not None and image.classes == [] and codes == ["no_classes"]
            assert issues[0].severity == "warning"
        else:
            assert image is None and codes == [expected], (item.id, codes)
            assert issues[0].severity == "error"


def test_reference_would_crash_where_keyseg_reports(data_dir):
    """The unknown label is an IndexError in the reference (sem_seg_dataset.py:267)."""
    classes, _, labels = _reference("ade20k", data_dir)
    expected = ref.reference_label("ade20k", sorted(labels)[4], classes)
    with pytest.raises(IndexError):
        ref.reference_classes(expected, classes)


def test_ignore_rules(data_dir):
    items, read = _read_all("ade20k", data_dir)
    raw = np.array(Image.open(data_dir / items[0].label))
    assert Image.open(data_dir / items[0].label).mode == "P"  # palette indices, not colours
    assert {0, 255} <= set(np.unique(raw).tolist())
    image, _ = read[items[0].id]
    assert np.all(image.label_map[(raw == 0) | (raw == 255)] == 255)
    assert np.array_equal(image.label_map[(raw > 0) & (raw < 255)], raw[(raw > 0) & (raw < 255)] - 1)

    items, read = _read_all("cocostuff", data_dir)
    names = semseg.cocostuff_classes()
    dashed = [i for i, name in enumerate(names) if "-" in name]
    first = read[items[0].id][0]
    raw = np.array(Image.open(data_dir / items[0].label))
    assert np.isin(raw, dashed).any() and np.all(first.label_map[np.isin(raw, dashed)] == 255)
    unused = read[items[1].id][0]  # COCO's unused ids are ordinary classes to the reference
    assert {"street sign", "hat"} <= {c.name for c in unused.classes}

    items, read = _read_all("mapillary", data_dir)
    present = {c.name for item in items if read[item.id][0] is not None for c in read[item.id][0].classes}
    assert "unlabeled" in present and "traffic sign (front)" not in present  # never drawn


def test_demo_is_deterministic(tmp_path):
    digests = []
    for run in ("a", "b"):
        for writer in WRITERS.values():
            writer(tmp_path / run, 3, 4, 40, 30)
        digests.append({str(p.relative_to(tmp_path / run)): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted((tmp_path / run).rglob("*")) if p.is_file()})
    assert digests[0] == digests[1] and len(digests[0]) > 20


def test_demo_rerun_smaller_removes_its_own_leftovers(tmp_path):
    other = tmp_path / "coco" / "train2017" / "000000000009.jpg"  # another source's COCO image
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    write_cocostuff(tmp_path, 0, 8, 40, 30)
    write_cocostuff(tmp_path, 0, 7, 40, 30)
    assert other.exists()
    assert len(list((tmp_path / "cocostuff" / "train2017").glob("*.png"))) == 7
    assert len(list((tmp_path / "coco" / "train2017").glob("*.jpg"))) == 1 + 6  # one special has no image


# --- hostile and broken inputs ---------------------------------------------------------


def _one_ade(tmp_path: Path) -> LabelMapImage:
    write_ade20k(tmp_path, 0, 7, W, H)
    items, _ = semseg.find_ade20k(tmp_path)
    return items[6]


def _codes(result) -> list[str]:
    return [issue.code for issue in result[1]]


def test_link_out_of_the_data_dir_is_refused(tmp_path):
    item = _one_ade(tmp_path / "data")
    secret = tmp_path / "secret.png"
    secret.write_bytes((tmp_path / "data" / item.label).read_bytes())
    label = tmp_path / "data" / item.label
    label.unlink()
    label.symlink_to(secret)
    image, issues = semseg.read_label_map(item, tmp_path / "data")
    assert image is None and [i.code for i in issues] == ["unsafe_path"] and issues[0].file == item.label


def test_folder_linked_in_from_a_shared_copy_is_read(tmp_path):
    item = _one_ade(tmp_path / "shared")
    (tmp_path / "data" / "ade20k").mkdir(parents=True)
    for part in ("images", "annotations"):
        (tmp_path / "data" / "ade20k" / part).symlink_to(tmp_path / "shared" / "ade20k" / part)
    image, issues = semseg.read_label_map(item, tmp_path / "data")
    assert image is not None and issues == []


@pytest.mark.parametrize("label", ["../../etc/passwd", "/etc/passwd", "ade20k/annotations/training/../../../x.png",
                                   "cocostuff/train2017/a.png", "ade20k/annotations/training/a\x00.png"])
def test_hostile_item_paths_are_refused(tmp_path, label):
    item = _one_ade(tmp_path)
    hostile = LabelMapImage("ade20k", item.id, item.image, label, 0, 0)
    assert _codes(semseg.read_label_map(hostile, tmp_path)) == ["unsafe_path"]


def test_bad_file_names_and_stray_entries(tmp_path):
    write_ade20k(tmp_path, 0, 7, W, H)
    folder = tmp_path / "ade20k" / "images" / "training"
    os.mkdir(folder / "dir.jpg")  # listed (it ends in .jpg), unreadable
    (folder / ".hidden.jpg").write_bytes(b"")  # os.listdir lists hidden names too
    (folder / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"")
    items, issues = semseg.find_ade20k(tmp_path)
    assert [i.code for i in issues] == ["bad_file_name"]
    by_id = {item.id: item for item in items}
    assert ".hidden" in by_id and "dir" in by_id and "ADE_train_upper" not in by_id and len(items) == 9
    for name in (".hidden", "dir"):
        result = semseg.read_label_map(by_id[name], tmp_path)
        assert result[0] is None and _codes(result)[0] in {"missing_file", "unreadable_file"}
    # glob("*.png") leaves hidden names out
    (tmp_path / "cocostuff" / "train2017").mkdir(parents=True)
    (tmp_path / "cocostuff" / "train2017" / ".x.png").write_bytes(b"")
    assert semseg.find_cocostuff(tmp_path) == ([], [])


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["rgb", "uint16", "garbage", "empty", "truncated"])
def test_label_files_that_are_not_8bit_maps(tmp_path, kind):
    item = _one_ade(tmp_path)
    path = tmp_path / item.label
    good = path.read_bytes()
    data = {
        "rgb": _png(np.zeros((H, W, 3), np.uint8)),
        "uint16": _png(np.full((H, W), 300, np.uint16)),
        "garbage": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        "empty": b"",
        "truncated": good[: len(good) // 2],
    }[kind]
    path.write_bytes(data)
    result = semseg.read_label_map(item, tmp_path)
    assert result[0] is None and _codes(result) == ["bad_label_map"]


def test_label_map_over_the_pixel_bound_is_refused(tmp_path):
    item = _one_ade(tmp_path)
    with image_pixel_bound(W * H - 1):
        result = semseg.read_label_map(item, tmp_path)
    assert result[0] is None and _codes(result) == ["bad_image"]  # the image is checked first
    image_path = tmp_path / item.image
    image_path.write_bytes(_png(np.zeros((H, W, 3), np.uint8)))  # image small, label huge
    (tmp_path / item.label).write_bytes(_png(np.zeros((4000, 4000), np.uint8)))
    with image_pixel_bound(W * H):
        result = semseg.read_label_map(item, tmp_path)
    assert result[0] is None and _codes(result) == ["bad_label_map"] and "over the bound" in result[1][0].reason


@pytest.mark.parametrize("config", [None, b"{", b"[]", b'{"labels": [{"name": "x"}]}', b"\xff\xfe"])
def test_broken_mapillary_config_is_one_error(tmp_path, config):
    write_mapillary(tmp_path, 0, 3, W, H)
    path = tmp_path / "mapillary" / "config_v2.0.json"
    path.unlink() if config is None else path.write_bytes(config)
    items, issues = semseg.find_mapillary(tmp_path)
    assert items == [] and [(i.code, i.file) for i in issues] == [("bad_class_list", "mapillary/config_v2.0.json")]
    item = LabelMapImage("mapillary", "x", "mapillary/training/images/x.jpg", "mapillary/training/v2.0/labels/x.png",
                         0, 0)
    assert _codes(semseg.read_label_map(item, tmp_path)) == ["bad_class_list"]


def test_absent_sources_find_nothing(tmp_path):
    for source in semseg.SEMSEG_SOURCES:
        assert semseg.find_label_maps(source, tmp_path) == ([], [])


def test_mapillary_config_keys_beyond_readable_are_ignored(tmp_path):
    write_mapillary(tmp_path, 0, 1, W, H)
    config = json.loads((tmp_path / "mapillary" / "config_v2.0.json").read_text())
    assert semseg.mapillary_classes(tmp_path) == [entry["readable"].lower() for entry in config["labels"]]
