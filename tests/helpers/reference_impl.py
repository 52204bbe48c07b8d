"""An independent implementation of docs/fidelity.md M3 (ReasonSeg polygons), written for the tests.

It follows the spec step by step on files, the way the reference does (OpenCV decode for
the size, a full-image canvas per shape for the area, argsort of the area list), and
shares no code with `keyseg`.
"""

from __future__ import annotations

import json

import cv2
import numpy as np


def read_annotation(json_path) -> dict:
    try:
        with open(json_path, "r", encoding="utf-8") as handle:
            return json.loads(handle.read())
    except UnicodeDecodeError:
        with open(json_path, "r", encoding="cp1252") as handle:
            return json.loads(handle.read())


def reference_mask_from_shapes(shapes: list[dict], height: int, width: int) -> np.ndarray:
    kept, areas = [], []
    for shape in shapes:
        if shape["label"].lower() == "flag":
            continue
        canvas = np.zeros((height, width), dtype=np.uint8)
        contour = np.array([shape["points"]], dtype=np.int32)
        cv2.polylines(canvas, contour, True, 1, 1)
        cv2.fillPoly(canvas, contour, 1)
        areas.append(canvas.sum())
        kept.append(shape)
    mask = np.zeros((height, width), dtype=np.uint8)
    for index in np.argsort(areas)[::-1]:
        shape = kept[index]
        value = 255 if "ignore" in shape["label"].lower() else 1
        contour = np.array([shape["points"]], dtype=np.int32)
        cv2.polylines(mask, contour, True, value, 1)
        cv2.fillPoly(mask, contour, value)
    return mask


def reference_mask(json_path, image_path) -> np.ndarray:
    height, width = cv2.imread(str(image_path)).shape[:2]
    return reference_mask_from_shapes(read_annotation(json_path)["shapes"], height, width)
