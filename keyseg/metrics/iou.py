"""Intersection and union with ignore pixels, gIoU and cIoU, in 64-bit integers.

Per mask: pixels where the target is 255 are excluded from prediction and target alike;
I = |pred AND target|, U = |pred OR target|; IoU = I / (U + 1e-5), and 1.0 when U is 0
(nothing predicted, nothing to find). gIoU is the mean of per-mask IoUs, cIoU is
sum(I) / sum(U). The sums are mergeable, so ranks and processes reduce exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = 255


def intersection_union(prediction, target) -> tuple[int, int]:
    """I and U of one mask; `prediction` is boolean (or logits > 0 done by the caller)."""
    prediction = torch.as_tensor(prediction).bool()
    target = torch.as_tensor(target)
    valid = target != IGNORE
    truth = (target == 1) & valid
    predicted = prediction & valid
    intersection = int((predicted & truth).sum(dtype=torch.int64))
    union = int((predicted | truth).sum(dtype=torch.int64))
    return intersection, union


def mask_iou(intersection: int, union: int) -> float:
    return 1.0 if union == 0 else intersection / (union + 1e-5)


@dataclass
class IoUStats:
    """Mergeable partial sums of one group of masks."""

    count: int = 0
    iou_sum: float = 0.0
    intersection: int = 0
    union: int = 0

    def add(self, intersection: int, union: int) -> None:
        self.count += 1
        self.iou_sum += mask_iou(intersection, union)
        self.intersection += int(intersection)
        self.union += int(union)

    def merge(self, other: "IoUStats") -> "IoUStats":
        return IoUStats(self.count + other.count, self.iou_sum + other.iou_sum,
                        self.intersection + other.intersection, self.union + other.union)

    @property
    def giou(self) -> float:
        return self.iou_sum / self.count if self.count else 0.0

    @property
    def ciou(self) -> float:
        return self.intersection / self.union if self.union else 0.0

    def to_tensor(self) -> torch.Tensor:
        """For an all-reduce: float64 holds integers exactly up to 2**53."""
        return torch.tensor([self.count, self.iou_sum, self.intersection, self.union], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, values: torch.Tensor) -> "IoUStats":
        count, iou_sum, intersection, union = values.tolist()
        return cls(int(round(count)), float(iou_sum), int(round(intersection)), int(round(union)))

    def to_dict(self) -> dict:
        return {"giou": self.giou, "ciou": self.ciou, "count": self.count,
                "intersection": self.intersection, "union": self.union}

