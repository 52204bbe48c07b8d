"""Segmentation metrics of the LISA protocol (reference-semantics section 9)."""

from keyseg.metrics.iou import IoUStats, intersection_union

__all__ = ["IoUStats", "intersection_union"]
