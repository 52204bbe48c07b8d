"""Segmentation metrics of the LISA protocol (reference-semantics section 9)."""

from keyseg.metrics.iou import IoUStats, intersection_union, mask_iou
from keyseg.metrics.report import SplitMetrics, metrics_json, paper_table

__all__ = ["IoUStats", "SplitMetrics", "intersection_union", "mask_iou", "metrics_json", "paper_table"]
