"""Intersection and union with ignore pixels, gIoU and cIoU (docs/fidelity.md, "Metric").

Per mask: pixels where the target is 255 are excluded from prediction and target alike;
I = |pred AND target|, U = |pred OR target|; IoU = I / (U + 1e-5), and 1.0 when U is 0
(nothing predicted, nothing to find). gIoU is the mean of per-mask IoUs, cIoU is
sum(I) / sum(U).

Accumulation is exact and order-independent, so shards, ranks and processes can be
merged in any grouping and give bit-identical results:
- I and U are Python ints (unbounded; no 32-bit overflow at 100k pixels x 100k masks);
- the sum of per-mask IoUs is kept as an exact integer in units of 2**-1074 (see
  `IoUStats`), so summing in a different order cannot change the last bit of gIoU.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE = 255

# Every finite float64 is an integer multiple of 2**-1074 (the smallest subnormal), so a
# per-mask IoU scaled by 2**IOU_SCALE_BITS is an exact integer, and a sum of such integers
# is the exact sum of the IoUs.
IOU_SCALE_BITS = 1074

# float64 represents every integer below 2**53 exactly; sums of non-negative integers that
# stay below it are exact too (every partial sum is below the total).
FLOAT64_EXACT_LIMIT = 2**53


def intersection_union(prediction, target) -> tuple[int, int]:
    """I and U of one mask, as Python ints.

    `prediction`: (H, W) boolean, torch or numpy (a non-boolean array counts its non-zero
    pixels as predicted, so thresholding logits is the caller's job: `logits > 0`).
    `target`: (H, W) with 1 = object, 255 = ignore, anything else = background.

    CPU inputs are counted with numpy (several times faster than torch's CPU reductions
    on boolean tensors); a CUDA prediction is counted on its device. No floats anywhere.
    """
    if tuple(prediction.shape) != tuple(target.shape):
        # Broadcasting would silently count a different number of pixels.
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    if isinstance(prediction, torch.Tensor) and prediction.device.type != "cpu":
        return _counts_torch(prediction, torch.as_tensor(target, device=prediction.device))
    return _counts_numpy(_as_numpy(prediction), _as_numpy(target))


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()  # zero-copy for CPU tensors
    return np.asarray(array)


def _counts_numpy(prediction: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    if prediction.dtype != np.bool_:
        prediction = prediction != 0
    truth = target == 1  # already excludes ignore pixels
    intersection = np.count_nonzero(prediction & truth)
    # U = |pred on valid pixels| + |truth| - I, which avoids building a third full mask.
    predicted_valid = np.count_nonzero(prediction & (target != IGNORE))
    return int(intersection), int(predicted_valid + np.count_nonzero(truth) - intersection)


def _counts_torch(prediction: torch.Tensor, target: torch.Tensor) -> tuple[int, int]:
    prediction = prediction.bool()
    truth = target == 1
    intersection = int(torch.count_nonzero(prediction & truth))  # int64 on device
    predicted_valid = int(torch.count_nonzero(prediction & (target != IGNORE)))
    return intersection, predicted_valid + int(torch.count_nonzero(truth)) - intersection


def mask_iou(intersection: int, union: int) -> float:
    """Per-mask IoU of the reference: I / (U + 1e-5), and 1.0 when U is 0."""
    return 1.0 if union == 0 else intersection / (union + 1e-5)


def _iou_units(value: float) -> int:
    """`value` * 2**IOU_SCALE_BITS exactly (see IOU_SCALE_BITS)."""
    numerator, denominator = float(value).as_integer_ratio()  # denominator is a power of two
    return numerator << (IOU_SCALE_BITS - (denominator.bit_length() - 1))


class IoUStats:
    """Mergeable sums over one group of masks: count, sum of IoUs, sum of I, sum of U.

    `iou_sum` is a float view of an exact integer accumulator, so `merge` is associative
    and commutative bit for bit, and `giou` is the correctly rounded mean of the exact
    sum (never further than 1 ulp from the true mean, whatever the number of masks).
    """

    __slots__ = ("count", "intersection", "union", "_iou_units")

    def __init__(self, count: int = 0, iou_sum: float = 0.0, intersection: int = 0, union: int = 0):
        self.count = int(count)
        self.intersection = int(intersection)
        self.union = int(union)
        self._iou_units = _iou_units(iou_sum)

    def add(self, intersection: int, union: int) -> None:
        intersection, union = int(intersection), int(union)
        if not 0 <= intersection <= union:
            # I > U cannot come from one mask: most likely the arguments are swapped.
            raise ValueError(f"need 0 <= intersection <= union, got I={intersection} U={union}")
        self.count += 1
        self._iou_units += _iou_units(mask_iou(intersection, union))
        self.intersection += intersection
        self.union += union

    def merge(self, other: "IoUStats") -> "IoUStats":
        """A new IoUStats holding both groups (neither input changes)."""
        merged = IoUStats(self.count + other.count, 0.0,
                          self.intersection + other.intersection, self.union + other.union)
        merged._iou_units = self._iou_units + other._iou_units
        return merged

    @property
    def iou_sum(self) -> float:
        # int / int is correctly rounded in Python, even for huge ints.
        return self._iou_units / (1 << IOU_SCALE_BITS)

    @property
    def giou(self) -> float:
        """Mean per-mask IoU; 0.0 for no masks."""
        return self._iou_units / (self.count << IOU_SCALE_BITS) if self.count else 0.0

    @property
    def ciou(self) -> float:
        """sum(I) / sum(U); 0.0 when the union is empty (as the reference's I / (U + 1e-10))."""
        return self.intersection / self.union if self.union else 0.0

    def to_tensor(self) -> torch.Tensor:
        """[count, iou_sum, intersection, union] as float64, for a summing all-reduce.

        float64 keeps count / I / U exact while the reduced totals stay below 2**53
        (~9.0e15 pixels, ~90,000x a 100k-sample x 100k-pixel evaluation); `from_tensor`
        refuses a total at or above the bound rather than return a rounded count. The
        reduced iou_sum is a float sum over ranks, so it may differ from an exact merge
        by ~1e-16 relative; merge IoUStats objects when bit-exactness matters.
        """
        for name in ("count", "intersection", "union"):
            if getattr(self, name) >= FLOAT64_EXACT_LIMIT:
                raise OverflowError(f"{name}={getattr(self, name)} is not exact in float64 (limit 2**53)")
        return torch.tensor([self.count, self.iou_sum, self.intersection, self.union], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> "IoUStats":
        count, iou_sum, intersection, union = values.detach().cpu().to(torch.float64).tolist()
        for name, value in (("count", count), ("intersection", intersection), ("union", union)):
            # Rounding is monotonic, so a result below 2**53 means the exact total (and
            # every partial sum of non-negative terms) was below it: no rounding happened.
            if not 0 <= value < FLOAT64_EXACT_LIMIT or value != int(value):
                raise OverflowError(f"reduced {name}={value!r} may not be exact in float64 (limit 2**53)")
        return cls(int(count), iou_sum, int(intersection), int(union))

    def to_dict(self) -> dict:
        return {"giou": self.giou, "ciou": self.ciou, "count": self.count,
                "intersection": self.intersection, "union": self.union}

    def __eq__(self, other) -> bool:
        if not isinstance(other, IoUStats):
            return NotImplemented
        return (self.count, self._iou_units, self.intersection, self.union) == \
            (other.count, other._iou_units, other.intersection, other.union)

    def __repr__(self) -> str:
        return (f"IoUStats(count={self.count}, iou_sum={self.iou_sum!r}, "
                f"intersection={self.intersection}, union={self.union})")
