"""Segmentation metrics of the LISA protocol (docs/fidelity.md, "Metric")."""

from keyseg.metrics.iou import IoUStats, intersection_union, mask_iou
from keyseg.metrics.report import SplitMetrics, metrics_json, paper_table

__all__ = ["IoUStats", "SplitMetrics", "intersection_union", "mask_iou", "metrics_json", "paper_table"]
