import json
import os
import random

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from reference_parts import reference_images, reference_phrase

from keyseg.demo.parts import write_paco_lvis, write_pascal_part
from keyseg.sources.parts import (PACO_LVIS, PASCAL_PART, PartsError, ann_to_mask, category_from_name, load_paco_lvis,
                                  load_pascal_part, part_phrases, read_annotations)
from keyseg.sources.semantic import PartCategory

LOADERS = {"paco_lvis": (write_paco_lvis, load_paco_lvis), "pascal_part": (write_pascal_part, load_pascal_part)}
SOURCES = {"paco_lvis": PACO_LVIS, "pascal_part": PASCAL_PART}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts_demo")
    write_paco_lvis(root, seed=3, n_images=8, width=96, height=72)
    write_pascal_part(root, seed=3, n_images=8, width=96, height=72)
    return root


def _as_reference_name(category: PartCategory):
    return category.object if category.part is None else (category.object, category.part)


def _codes(issues):
    return [issue.code for issue in issues]


@pytest.mark.parametrize("source", sorted(LOADERS))
def test_masks_and_names_match_the_reference(demo_dir, source):
    dataset = LOADERS[source][1](demo_dir)
    expected = reference_images(str(demo_dir), source)
    assert [item.image_id for item in dataset.items] == [image["id"] for image in expected]
    for item, reference in zip(dataset.items, expected):
        image, issues = read_annotations(item)
        assert issues == []
        assert image.image == os.path.relpath(reference["image_path"], demo_dir)
        assert (demo_dir / image.image).is_file()
        assert [_as_reference_name(category) for category in image.categories] == reference["names"]
        assert len(image.masks) == len(reference["masks"])
        for mask, reference_mask in zip(image.masks, reference["masks"]):
            assert mask.dtype == bool and mask.shape == reference_mask.shape == (item.height, item.width)
            assert np.array_equal(mask, reference_mask.astype(bool))
        for category, name in zip(image.categories, reference["names"]):
            assert part_phrases(category)[0] == reference_phrase(name, 0.25)
            assert part_phrases(category)[-1] == reference_phrase(name, 0.75)


def sample_part_phrase(category: PartCategory, rng: random.Random) -> str:
    """One name drawn as the reference draws it (`rng.random()` only for parts): proves
    `part_phrases` lists the names in the reference's draw order."""
    phrases = part_phrases(category)
    if len(phrases) == 1:
        return phrases[0]
    return phrases[0] if rng.random() < 0.5 else phrases[1]


@pytest.mark.parametrize("source", sorted(LOADERS))
def test_sampled_phrases_replay_the_reference_random_stream(demo_dir, source):
    dataset = LOADERS[source][1](demo_dir)
    names = [name for image in reference_images(str(demo_dir), source) for name in image["names"]]
    categories = [annotation.category for item in dataset.items for annotation in item.annotations]
    ours, theirs = random.Random(7), random.Random(7)
    for _ in range(5):
        for category, name in zip(categories, names):
            # The reference draws random.random() only for (object, part) names.
            expected = reference_phrase(name, theirs.random()) if isinstance(name, tuple) else name
            assert sample_part_phrase(category, ours) == expected
    assert ours.random() == theirs.random()


def test_demo_awkward_cases(demo_dir):
    paco = load_paco_lvis(demo_dir)
    assert paco.categories[5] == PartCategory("bottle")  # "bottle_(drink)"
    assert paco.categories[6] == PartCategory("bottle", "cap")  # " bottle_(drink):cap_(bottle) "
    assert paco.categories[3] == PartCategory("trash_can")  # the reference keeps underscores
    assert paco.categories[7] == PartCategory("mug", "handle")  # used by no annotation
    assert part_phrases(PartCategory("dog", "tail")) == ["dog tail", "the tail of the dog"]
    assert part_phrases(PartCategory("dog")) == ["dog"]
    pascal = load_pascal_part(demo_dir)
    assert pascal.categories[4] == PartCategory("cat", "leg")  # " cat:leg "
    for dataset in (paco, pascal):
        assert sorted(_codes(dataset.issues)) == ["missing_image_entry", "no_annotations"]
        ids = {item.image_id for item in dataset.items}
        assert len(ids) == 7  # 8 images, one without annotations
        forms = {type(a.segmentation).__name__ + (str(type(a.segmentation.get("counts")).__name__)
                                                  if isinstance(a.segmentation, dict) else "")
                 for item in dataset.items for a in item.annotations}
        assert forms == {"list", "dictstr", "dictlist"}
        has_parts = [a.category.part is not None for item in dataset.items for a in item.annotations]
        assert any(has_parts)
    assert not all(a.category.part is not None for item in paco.items for a in item.annotations)


def test_demo_is_deterministic(tmp_path):
    for name in ("a", "b"):
        write_paco_lvis(tmp_path / name, 5, 4, 48, 40)
        write_pascal_part(tmp_path / name, 5, 4, 48, 40)
    for relative in ("vlpart/paco/annotations/paco_lvis_v1_train.json", "vlpart/pascal_part/train.json",
                     "coco/train2017/000000800003.jpg"):
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()


# --- hostile and broken inputs ---------------------------------------------------------

def _write(root, source, document):
    path = root / SOURCES[source].annotation_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def _square(x=2, y=2, size=4):
    return [[x, y, x + size, y, x + size, y + size, x, y + size]]


def _document(categories, annotations, images=None):
    images = images if images is not None else [{"id": 1, "file_name": "train2017/a.jpg", "height": 10, "width": 12}]
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.mark.parametrize("text, reason", [
    ("[1, 2]", "expected a COCO object"),
    ("{not json", "invalid JSON"),
    ("[" * 100000 + "]" * 100000, "invalid JSON"),
    ('{"images": [], "annotations": []}', "lacks `categories`"),
    ('{"images": {}, "annotations": [], "categories": []}', "`images` is dict"),
    ('{"images": [], "annotations": [], "categories": [], "x": 1' + "0" * 5000 + "}", "invalid JSON"),
])
def test_unusable_files_raise_naming_the_file(tmp_path, text, reason):
    _write(tmp_path, "paco_lvis", text)
    with pytest.raises(PartsError, match=reason) as error:
        load_paco_lvis(tmp_path)
    assert PACO_LVIS.annotation_file in str(error.value)


def test_missing_oversized_and_escaping_files(tmp_path):
    with pytest.raises(PartsError, match="file not found"):
        load_pascal_part(tmp_path)
    _write(tmp_path, "pascal_part", _document([], []))
    with pytest.raises(PartsError, match="limit"):
        load_pascal_part(tmp_path, max_bytes=10)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(_document([], [])))
    data = tmp_path / "data"
    (data / "vlpart" / "pascal_part").mkdir(parents=True)
    os.symlink(outside, data / PASCAL_PART.annotation_file)
    with pytest.raises(PartsError, match="outside"):
        load_pascal_part(data)


@pytest.mark.parametrize("name, source, expected", [
    ("dog", "paco_lvis", PartCategory("dog")),
    ("  dog:tail\n", "paco_lvis", PartCategory("dog", "tail")),
    ("bottle_(drink):cap_(bottle)", "paco_lvis", PartCategory("bottle", "cap")),
    ("trash_can:lid", "paco_lvis", PartCategory("trash_can", "lid")),
    ("dog_(a)_(b)", "paco_lvis", PartCategory("dog")),
    ("dog: tail", "paco_lvis", PartCategory("dog", " tail")),  # only the whole name is stripped
    ("pottedplant:pot", "pascal_part", PartCategory("pottedplant", "pot")),
    ("bottle_(x):cap", "pascal_part", PartCategory("bottle_(x)", "cap")),  # no cleaning there
])
def test_category_names(name, source, expected):
    assert category_from_name(name, SOURCES[source]) == expected


@pytest.mark.parametrize("name, source", [
    ("a:b:c", "paco_lvis"), ("dog", "pascal_part"), ("a:b:c", "pascal_part"), ("a||b:c", "pascal_part"),
    ("_(x)", "paco_lvis"), ("   ", "paco_lvis"),
])
def test_category_names_the_reference_cannot_use(name, source):
    with pytest.raises(ValueError):
        category_from_name(name, SOURCES[source])


def test_each_entry_is_checked_on_its_own(tmp_path):
    categories = [{"id": 1, "name": "dog"}, {"id": 2, "name": "a:b:c"}, {"id": 3, "name": 5}, "x",
                  {"id": True, "name": "cat"}]
    images = [
        {"id": 1, "file_name": "train2017/a.jpg", "height": 10, "width": 12},
        {"id": 2, "file_name": "/etc/passwd", "height": 10, "width": 12},
        {"id": 3, "file_name": "../../secret.jpg", "height": 10, "width": 12},
        {"id": 4, "file_name": "train2017/big.jpg", "height": 10**6, "width": 10**6},
        {"id": 5, "file_name": "train2017/e.jpg", "height": "10", "width": 12},
        [],
    ]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _square()},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": _square()},  # refused category
        {"id": 3, "image_id": 1, "category_id": 99, "segmentation": _square()},  # unknown category
        {"id": 4, "image_id": 2, "category_id": 1, "segmentation": _square()},  # absolute path image
        {"id": 5, "image_id": 3, "category_id": 1, "segmentation": _square()},
        {"id": 6, "image_id": 4, "category_id": 1, "segmentation": _square()},
        {"id": 7, "image_id": 1, "category_id": "1", "segmentation": _square()},
        {"id": 8, "image_id": 1, "category_id": 1},
        {"image_id": 1, "category_id": 1, "segmentation": _square()},
    ]
    _write(tmp_path, "paco_lvis", _document(categories, annotations, images))
    dataset = load_paco_lvis(tmp_path)
    assert [item.image_id for item in dataset.items] == [1]
    assert [a.ann_id for a in dataset.items[0].annotations] == [1]
    assert dataset.items[0].image == "coco/train2017/a.jpg"
    codes = _codes(dataset.issues)
    assert codes.count("bad_category") == 4
    assert codes.count("bad_image_entry") == 5
    assert codes.count("bad_annotation") == 3
    assert codes.count("unknown_category") == 2  # categories 2 and 99
    assert codes.count("missing_image_entry") == 3  # images 2, 3, 4
    assert all(issue.file == PACO_LVIS.annotation_file for issue in dataset.issues)


def test_duplicate_ids_follow_pycocotools(tmp_path):
    categories = [{"id": 1, "name": "dog"}, {"id": 1, "name": "cat"}]
    images = [{"id": 1, "file_name": "train2017/a.jpg", "height": 10, "width": 12},
              {"id": 1, "file_name": "train2017/b.jpg", "height": 10, "width": 12}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": _square()},
                   {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _square(5, 5, 3)}]
    _write(tmp_path, "paco_lvis", _document(categories, annotations, images))
    dataset = load_paco_lvis(tmp_path)
    assert dataset.categories == {1: PartCategory("cat")}
    [item] = dataset.items
    assert item.image == "coco/train2017/b.jpg"
    assert [a.segmentation for a in item.annotations] == [_square(5, 5, 3)]
    assert sorted(set(_codes(dataset.issues))) == ["duplicate_annotation_id", "duplicate_category_id",
                                                   "duplicate_image_id"]


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def test_bad_segmentations_cost_only_their_annotation(tmp_path):
    good = np.zeros((10, 12), dtype=np.uint8)
    good[1:4, 2:9] = 1
    segmentations = {
        1: _square(),  # fine
        2: [],  # pycocotools raises
        3: None,  # pycocotools raises
        4: [[1, 1, 5, 5]],  # 4 coordinates: pycocotools takes it for a box and raises
        5: [[1, 1, 5, 1, 5]],  # odd: pycocotools drops the last value silently, keyseg refuses
        6: [[1, 1, 5, 1, float("nan"), 5]],
        7: _rle(np.zeros((20, 20))),  # another size than the image
        8: [_rle(good)],  # a list of compressed RLEs: pycocotools raises
        9: {"size": [10, 12], "counts": "0Q?0"},  # runs past the image: pycocotools raises
        10: _rle(good),  # fine
        11: {"size": [10, 12], "counts": 5},
        12: "polygon",
    }
    annotations = [{"id": k, "image_id": 1, "category_id": 1, "segmentation": v} for k, v in segmentations.items()]
    _write(tmp_path, "paco_lvis", _document([{"id": 1, "name": "dog"}], annotations))
    [item] = load_paco_lvis(tmp_path).items
    image, issues = read_annotations(item)
    assert len(image.masks) == 2 and np.array_equal(image.masks[1], good.astype(bool))
    assert _codes(issues) == ["bad_segmentation"] * 10
    failed = {int(issue.reason.split()[1]) for issue in issues}
    assert failed == set(segmentations) - {1, 10}
    # Where the reference's annToMask raises, keyseg refuses too; where it decodes, equal masks.
    # A NaN coordinate is left out: pycocotools turns it into an enormous allocation.
    del segmentations[6]
    annotations = [{"id": k, "image_id": 1, "category_id": 1, "segmentation": v} for k, v in segmentations.items()]
    _write(tmp_path / "reference", "paco_lvis", _document([{"id": 1, "name": "dog"}], annotations))
    [reference] = reference_images(str(tmp_path / "reference"), "paco_lvis")
    for ann_id, reference_mask in zip(segmentations, reference["masks"]):
        if reference_mask is None:
            assert ann_id in failed
        elif ann_id not in failed:
            assert np.array_equal(ann_to_mask(segmentations[ann_id], 10, 12), reference_mask)


def test_an_image_whose_annotations_all_fail_reads_as_none(tmp_path):
    _write(tmp_path, "pascal_part", _document([{"id": 1, "name": "dog:head"}],
                                              [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": []}]))
    [item] = load_pascal_part(tmp_path).items
    assert item.image == "vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages/train2017/a.jpg"
    image, issues = read_annotations(item)
    assert image is None and _codes(issues) == ["bad_segmentation"]


def test_empty_mask_is_a_warning(tmp_path):
    _write(tmp_path, "paco_lvis", _document([{"id": 1, "name": "dog"}], [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rle(np.zeros((10, 12)))}]))
    [item] = load_paco_lvis(tmp_path).items
    image, issues = read_annotations(item)
    assert len(image.masks) == 1 and not image.masks[0].any()
    assert _codes(issues) == ["empty_segmentation"]
