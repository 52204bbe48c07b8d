"""Pictures for people: a mask drawn over its image, one panel per target."""

from __future__ import annotations

import cv2
import numpy as np

from keyseg.masks.raster import IGNORE_VALUE, TARGET_VALUE

TARGET_BGR = (60, 200, 60)
IGNORE_BGR = (60, 60, 230)
OUTLINE_BGR = (0, 230, 255)
PANEL_HEIGHT = 360  # overlays are for looking at, not for measuring: keep them small


def mask_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of the target region, for masks that came without polygons (RLE)."""
    contours, _ = cv2.findContours((mask == TARGET_VALUE).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [contour.reshape(-1, 2) for contour in contours]


def overlay_panel(image_bgr: np.ndarray, mask: np.ndarray, outlines: list[np.ndarray], caption: str) -> np.ndarray:
    """Target green, ignore red (half transparent), polygon outlines, caption on top."""
    panel = image_bgr.copy()
    if panel.shape[:2] != mask.shape:
        # Sizes disagree (reported elsewhere); draw on a canvas of the mask's size.
        panel = cv2.resize(panel, (mask.shape[1], mask.shape[0]))
    for value, colour in ((TARGET_VALUE, TARGET_BGR), (IGNORE_VALUE, IGNORE_BGR)):
        region = mask == value
        panel[region] = (0.5 * panel[region] + 0.5 * np.array(colour)).astype(np.uint8)
    for outline in outlines or mask_outlines(mask):
        cv2.polylines(panel, [outline.reshape(-1, 1, 2).astype(np.int32)], True, OUTLINE_BGR, 1, cv2.LINE_AA)
    scale = PANEL_HEIGHT / panel.shape[0]
    panel = cv2.resize(panel, (max(1, round(panel.shape[1] * scale)), PANEL_HEIGHT), interpolation=cv2.INTER_AREA)
    banner = np.full((28, panel.shape[1], 3), 30, dtype=np.uint8)
    text = caption if len(caption) <= 60 else caption[:57] + "..."
    # OpenCV's Hershey fonts are ASCII only.
    text = text.encode("ascii", "replace").decode("ascii")
    cv2.putText(banner, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (240, 240, 240), 1, cv2.LINE_AA)
    return np.vstack([banner, panel])


def overlay_strip(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels side by side, separated by a dark gap."""
    height = max(panel.shape[0] for panel in panels)
    pieces = []
    for index, panel in enumerate(panels):
        if index:
            pieces.append(np.zeros((height, gap, 3), dtype=np.uint8))
        padded = np.zeros((height, panel.shape[1], 3), dtype=np.uint8)
        padded[: panel.shape[0]] = panel
        pieces.append(padded)
    return np.hstack(pieces)

