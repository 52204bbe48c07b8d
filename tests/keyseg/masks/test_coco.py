import numpy as np
import pytest
from pycocotools import mask as coco_mask

from keyseg.masks.coco import SegmentationError, mask_to_rle, segmentation_to_mask


def pycocotools_reference(segmentation, height, width):
    """Straight from pycocotools' documented API, merged to binary."""
    if isinstance(segmentation, list) and segmentation and isinstance(segmentation[0], list):
        rles = coco_mask.frPyObjects(segmentation, height, width)
        return (coco_mask.decode(rles).sum(axis=2) > 0).astype(np.uint8)
    rle = dict(segmentation)
    if isinstance(rle["counts"], list):
        rle = coco_mask.frPyObjects(rle, height, width)
    elif isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode()
    return coco_mask.decode(rle)


def random_polygons(rng, width, height):
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        centre = rng.uniform(0, 1, 2) * [width, height]
        points = centre + rng.normal(0, 15, (int(rng.integers(3, 9)), 2))
        parts.append(points.reshape(-1).tolist())
    return parts


def test_polygons_and_rles_equal_pycocotools():
    rng = np.random.default_rng(7)
    for _ in range(300):
        width, height = (int(v) for v in rng.integers(10, 120, 2))
        polygons = random_polygons(rng, width, height)
        expected = pycocotools_reference(polygons, height, width)
        np.testing.assert_array_equal(segmentation_to_mask(polygons, height, width), expected)
        compressed = mask_to_rle(expected)
        np.testing.assert_array_equal(segmentation_to_mask(compressed, height, width), expected)
        np.testing.assert_array_equal(segmentation_to_mask([compressed], height, width), expected)
        uncompressed = {"size": [height, width], "counts": _uncompressed_counts(expected)}
        np.testing.assert_array_equal(segmentation_to_mask(uncompressed, height, width),
                                      pycocotools_reference(uncompressed, height, width))


def _uncompressed_counts(mask):
    flat = mask.reshape(-1, order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return [int(c) for c in counts]


def test_empty_segmentation_is_all_zero():
    assert segmentation_to_mask([], 5, 6).shape == (5, 6) and not segmentation_to_mask([], 5, 6).any()


def test_overlapping_parts_merge_to_binary():
    square = [0, 0, 9, 0, 9, 9, 0, 9]
    assert segmentation_to_mask([square, square], 12, 12).max() == 1


@pytest.mark.parametrize(
    "segmentation,reason",
    [
        ([[1, 2, 3]], "coordinates"),
        ({"size": [5, 5], "counts": "xyz"}, "differs from the image"),
        ({"counts": "abc"}, "expected polygons or RLE"),
    ],
)
def test_bad_segmentations(segmentation, reason):
    with pytest.raises(SegmentationError, match=reason):
        segmentation_to_mask(segmentation, 10, 12)


@pytest.mark.parametrize(
    "segmentation,reason",
    [
        ({"size": [30000, 30000], "counts": "0"}, "RLE `size`: image is 30000x30000"),
        ({"size": "10x12", "counts": "0"}, "RLE `size` is '10x12'"),
        ({"size": [10, 12], "counts": 5}, "`counts` is int"),
        ([[0, 0, 1e7, 0, 1e7, 1e7]], "outline is 34,142,136 pixels long"),
        ([[0, 0, 1, 0, float("nan"), 1]], "not a finite number"),
        ([[0, 0, 1, 0, "1", 1]], "not a finite number"),
        ({"size": [10, 12], "counts": [200]}, "pycocotools cannot decode it"),
    ],
)
def test_hostile_segmentations_are_refused_before_any_allocation(segmentation, reason):
    with pytest.raises(SegmentationError, match=reason):
        segmentation_to_mask(segmentation, 10, 12)


def test_instance_sizes_over_the_bound_are_refused():
    with pytest.raises(SegmentationError, match="over the bound"):
        segmentation_to_mask([[0, 0, 5, 0, 5, 5]], 30000, 30000)


def test_many_parts_are_merged_without_one_mask_per_part():
    # 2000 parts used to be decoded to a (h, w, 2000) array before the union.
    square = [0, 0, 9, 0, 9, 9, 0, 9]
    mask = segmentation_to_mask([square] * 2000, 12, 12)
    assert mask.shape == (12, 12) and mask.sum() == np.count_nonzero(segmentation_to_mask([square], 12, 12))
