"""IoU counting and accumulation against an independent, histogram-based reference."""

import math

import numpy as np
import pytest
import torch

from keyseg.metrics import IoUStats, intersection_union, mask_iou
from keyseg.metrics.iou import FLOAT64_EXACT_LIMIT


# ----------------------------------------------------------------- independent reference
def histogram_intersection_union(prediction: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """Counting the way LISA's intersectionAndUnionGPU does, with numpy histograms.

    Ignore pixels are set to 255 in the output as in the target; the intersection is the
    output where it equals the target; each area is a 2-bin histogram over [0, 1] (the
    255s fall outside it); union = area_output + area_target - area_intersection. The
    foreground bin (1) is the object's I and U.
    """
    output = prediction.astype(np.int64).ravel()
    target = target.astype(np.int64).ravel()
    output[target == 255] = 255
    intersection = output[output == target]

    def histc(values):  # torch.histc(values, bins=2, min=0, max=1)
        return np.histogram(values, bins=2, range=(0, 1))[0]

    area_intersection, area_output, area_target = histc(intersection), histc(output), histc(target)
    area_union = area_output + area_target - area_intersection
    return int(area_intersection[1]), int(area_union[1])


def reference_iou(intersection: int, union: int) -> float:
    return 1.0 if union == 0 else intersection / (union + 1e-5)


def random_case(rng: np.random.Generator):
    """A random (prediction, target) pair, often with one of the edge cases."""
    height, width = rng.integers(1, 48, size=2)
    kind = rng.integers(0, 8)
    prediction = rng.random((height, width)) < rng.random()
    target = (rng.random((height, width)) < rng.random()).astype(np.uint8)
    if kind == 0:
        target[:] = 0  # empty target
    elif kind == 1:
        prediction[:] = False  # empty prediction
    elif kind == 2:
        target[:] = 0  # both empty -> IoU 1.0
        prediction[:] = False
    elif kind == 3:
        target[:] = 255  # nothing evaluable
    if rng.random() < 0.7:  # an ignore rectangle
        top, left = rng.integers(0, height), rng.integers(0, width)
        target[top:top + rng.integers(1, height + 1), left:left + rng.integers(1, width + 1)] = 255
    if rng.random() < 0.5:  # scattered ignore pixels (boundaries)
        target[rng.random((height, width)) < 0.1] = 255
    return prediction, target


# ------------------------------------------------------------------------------ tests
def test_matches_histogram_reference_on_thousands_of_random_masks():
    rng = np.random.default_rng(1234)
    ours, theirs = IoUStats(), []
    kinds_seen = {"both_empty": 0, "empty_target": 0, "empty_prediction": 0, "ignored": 0}
    for index in range(3000):
        prediction, target = random_case(rng)
        expected_i, expected_u = histogram_intersection_union(prediction, target)
        # Alternate numpy and torch inputs: both must count the same.
        if index % 2:
            got_i, got_u = intersection_union(torch.from_numpy(prediction), torch.from_numpy(target))
        else:
            got_i, got_u = intersection_union(prediction, target)
        assert type(got_i) is int and type(got_u) is int
        assert (got_i, got_u) == (expected_i, expected_u), index
        assert mask_iou(got_i, got_u) == pytest.approx(reference_iou(expected_i, expected_u), abs=1e-12)
        ours.add(got_i, got_u)
        theirs.append((expected_i, expected_u))

        valid = target != 255
        kinds_seen["both_empty"] += expected_u == 0
        kinds_seen["empty_target"] += not (target == 1).any()
        kinds_seen["empty_prediction"] += not (prediction & valid).any()
        kinds_seen["ignored"] += (~valid).any()
    assert min(kinds_seen.values()) > 100, kinds_seen  # the edge cases really were exercised

    ious = [reference_iou(i, u) for i, u in theirs]
    assert ours.count == len(theirs)
    assert ours.intersection == sum(i for i, _ in theirs)
    assert ours.union == sum(u for _, u in theirs)
    assert ours.giou == pytest.approx(math.fsum(ious) / len(ious), abs=1e-12)
    assert ours.ciou == pytest.approx(ours.intersection / ours.union, abs=1e-12)
    assert ours.iou_sum == pytest.approx(math.fsum(ious), abs=1e-9)


def test_both_empty_counts_as_one_and_ignore_is_excluded_from_both():
    prediction = np.array([[True, True], [False, False]])
    target = np.array([[255, 255], [0, 0]], dtype=np.uint8)
    assert intersection_union(prediction, target) == (0, 0)
    assert mask_iou(0, 0) == 1.0
    target = np.array([[255, 1], [1, 0]], dtype=np.uint8)
    assert intersection_union(prediction, target) == (1, 2)  # the ignored prediction is not counted
    assert mask_iou(1, 2) == 1 / (2 + 1e-5)


def test_non_boolean_prediction_and_mixed_inputs():
    rng = np.random.default_rng(5)
    prediction, target = random_case(rng)
    expected = histogram_intersection_union(prediction, target)
    assert intersection_union(prediction.astype(np.uint8), target) == expected
    assert intersection_union(torch.from_numpy(prediction), target) == expected
    assert intersection_union(prediction, torch.from_numpy(target).long()) == expected
    logits = torch.where(torch.from_numpy(prediction), 3.0, -3.0).requires_grad_()
    assert intersection_union(logits > 0, torch.from_numpy(target)) == expected


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        intersection_union(np.zeros((4, 4), bool), np.zeros((4, 1), np.uint8))


def test_large_mask_counts_exactly():
    # 4M pixels: beyond float32's exact integers (2**24), a risk of float-based counting.
    prediction = np.ones((2048, 2048), bool)
    target = np.ones((2048, 2048), np.uint8)
    target[0, :5] = 255
    target[1, :7] = 0
    total = 2048 * 2048
    assert intersection_union(prediction, target) == (total - 12, total - 5)


def test_add_refuses_impossible_counts():
    with pytest.raises(ValueError):
        IoUStats().add(5, 3)  # swapped arguments
    with pytest.raises(ValueError):
        IoUStats().add(-1, 3)


# ------------------------------------------------------------------- 64-bit accumulation
def test_sums_are_exact_at_100k_pixels_times_100k_samples():
    stats = IoUStats()
    for _ in range(100_000):
        stats.add(99_999, 100_000)
    assert stats.count == 100_000
    assert stats.intersection == 9_999_900_000  # > 2**32: no 32-bit accumulator survives this
    assert stats.union == 10_000_000_000
    assert stats.ciou == 0.99999
    assert stats.giou == 99_999 / (100_000 + 1e-5)  # the mean of identical values is that value

    tensor = stats.to_tensor()
    assert tensor.dtype == torch.float64
    back = IoUStats.from_tensor(tensor)
    assert (back.count, back.intersection, back.union) == (100_000, 9_999_900_000, 10_000_000_000)
    assert back.giou == pytest.approx(stats.giou, abs=1e-15)

    # A two-rank all-reduce is a sum of the tensors: still exact.
    reduced = IoUStats.from_tensor(torch.stack([tensor, tensor]).sum(0))
    assert (reduced.count, reduced.intersection, reduced.union) == (200_000, 19_999_800_000, 20_000_000_000)


def test_float64_tensor_path_bound():
    below = IoUStats(count=3, iou_sum=2.5, intersection=FLOAT64_EXACT_LIMIT - 1, union=FLOAT64_EXACT_LIMIT - 1)
    assert IoUStats.from_tensor(below.to_tensor()) == below  # largest exact values round-trip
    at = IoUStats(count=1, iou_sum=1.0, intersection=FLOAT64_EXACT_LIMIT, union=FLOAT64_EXACT_LIMIT)
    with pytest.raises(OverflowError):
        at.to_tensor()
    # Two ranks each just below the bound: their float64 sum is no longer exact -> refused.
    with pytest.raises(OverflowError):
        IoUStats.from_tensor(torch.stack([below.to_tensor(), below.to_tensor()]).sum(0))
    # Python ints themselves have no bound.
    assert at.merge(at).union == 2 * FLOAT64_EXACT_LIMIT


# ------------------------------------------------------------------------------- merge
def test_merging_two_accumulators_equals_one_exactly():
    rng = np.random.default_rng(99)
    counts = [intersection_union(*random_case(rng)) for _ in range(2000)]
    single = IoUStats()
    for i, u in counts:
        single.add(i, u)
    for cut in (0, 1, 777, 1999, 2000):
        first, second = IoUStats(), IoUStats()
        for i, u in counts[:cut]:
            first.add(i, u)
        for i, u in counts[cut:]:
            second.add(i, u)
        for merged in (first.merge(second), second.merge(first)):
            assert merged == single  # exact, including the IoU sum
            assert merged.giou == single.giou and merged.ciou == single.ciou
            assert merged.to_dict() == single.to_dict()


def test_merge_is_order_independent_for_many_chunks():
    rng = np.random.default_rng(7)
    counts = [intersection_union(*random_case(rng)) for _ in range(500)]
    chunks = []
    for start in range(0, 500, 37):
        chunk = IoUStats()
        for i, u in counts[start:start + 37]:
            chunk.add(i, u)
        chunks.append(chunk)
    forward, backward = IoUStats(), IoUStats()
    for chunk in chunks:
        forward = forward.merge(chunk)
    for chunk in reversed(chunks):
        backward = chunk.merge(backward)
    assert forward == backward
    assert forward.giou == backward.giou


def test_empty_stats():
    assert IoUStats().to_dict() == {"giou": 0.0, "ciou": 0.0, "count": 0, "intersection": 0, "union": 0}
