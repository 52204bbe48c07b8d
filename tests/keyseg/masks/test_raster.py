import numpy as np
import pytest

from keyseg.masks.raster import IGNORE_VALUE, Polygon, is_flag_label, rasterize_polygons
from reference_impl import reference_mask_from_shapes
from random_shapes import random_shapes


def ours(shapes, height, width):
    polygons = [Polygon.from_points(s["label"], s["points"]) for s in shapes if not is_flag_label(s["label"])]
    return rasterize_polygons(polygons, height, width)


def test_random_polygons_bit_exact_with_independent_reference():
    rng = np.random.default_rng(1234)
    for _ in range(2000):
        width, height = (int(v) for v in rng.integers(4, 160, 2))
        shapes = random_shapes(rng, width, height)
        expected = reference_mask_from_shapes(shapes, height, width)
        np.testing.assert_array_equal(ours(shapes, height, width), expected)


def test_smaller_shapes_overwrite_larger_and_ignore_is_255():
    target = {"label": "target", "points": [[0, 0], [39, 0], [39, 29], [0, 29]]}
    hole = {"label": "ignore", "points": [[10, 10], [20, 10], [20, 20], [10, 20]]}
    flag = {"label": "FLAG", "points": [[0, 0], [5, 0], [5, 5]]}
    for order in ([target, hole, flag], [hole, flag, target]):
        mask = ours(order, 30, 40)
        assert mask[15, 15] == IGNORE_VALUE and mask[2, 30] == 1
        assert set(np.unique(mask)) == {1, IGNORE_VALUE}


def test_float_coordinates_truncate_toward_zero():
    polygon = Polygon.from_points("target", [[-0.9, 1.9], [5.99, 1.2], [5.5, 7.7]])
    assert polygon.points.tolist() == [[0, 1], [5, 1], [5, 7]]


def test_shape_without_points_is_left_out():
    mask = ours([{"label": "target", "points": []}, {"label": "target", "points": [[1, 1], [4, 1], [4, 4]]}], 8, 8)
    assert mask.sum() > 0


@pytest.mark.parametrize("label,flag", [("flag", True), ("Flag", True), ("flags", False), ("target", False)])
def test_flag_label(label, flag):
    assert is_flag_label(label) is flag
