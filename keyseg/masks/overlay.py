"""Masks drawn over their image, for people: the one drawer of every keyseg picture.

`keyseg prepare --visualize` (`target_overlay`), `keyseg predict` (`prediction_overlay`)
and the evaluation gallery (`triptych`) all draw here, so a colour means the same thing
in every picture:

    target                      green  TARGET_RGB            (60, 200, 60)
    ignore (not scored)         red    IGNORE_RGB            (230, 60, 60), hatched
    prediction                  orange PREDICTION_RGB        (255, 140, 0)
    prediction inside ignore    grey   IGNORE_PREDICTION_RGB (150, 150, 150), hatched
    target outline              cyan   OUTLINE_RGB           (0, 220, 255)

Masks are tinted half-transparent (TINT_ALPHA) so the photo stays visible; the hatching
keeps ignore regions recognisable without telling red from green, and orange is far from
green so target and prediction never get confused.

Channel order: every array here is RGB, in and out, and colours are RGB triples (the
order HTML's `rgb()` uses too). OpenCV's BGR appears only at the file boundary:
`overlay_png` converts when it encodes, so callers holding OpenCV's BGR pixels flip them
to RGB before drawing (`image[:, :, ::-1]`).
"""

from __future__ import annotations

import unicodedata

import cv2
import numpy as np

from keyseg.masks.png import encode_png
from keyseg.masks.raster import IGNORE_VALUE, TARGET_VALUE

TARGET_RGB = (60, 200, 60)
IGNORE_RGB = (230, 60, 60)
PREDICTION_RGB = (255, 140, 0)
IGNORE_PREDICTION_RGB = (150, 150, 150)  # predictions there are not scored
OUTLINE_RGB = (0, 220, 255)  # readable over both green and orange
TINT_ALPHA = 0.5
BACKGROUND_GREY = 30

# Pictures for looking at, not for measuring: single overlays (prepare, predict) are a
# little larger than the triptych panels a gallery page shows dozens of.
OVERLAY_HEIGHT = 360
PANEL_HEIGHT = 256
GAP = 4  # dark separator between panels

FONT = cv2.FONT_HERSHEY_SIMPLEX
CAPTION_SCALE = 0.5
CAPTION_LINES = 2
LINE_HEIGHT = 18
# Fixed banner height (room for CAPTION_LINES lines) so pictures of one kind line up.
BANNER_HEIGHT = CAPTION_LINES * LINE_HEIGHT + 8
ANSWER_BANNER_HEIGHT = 3 * LINE_HEIGHT + 8  # query, answer, keyword
LABEL_SCALE = 0.4


# --------------------------------------------------------------------------- pictures


def target_overlay(image_rgb: np.ndarray, target: np.ndarray, outlines: list[np.ndarray] | None,
                   caption: str) -> np.ndarray:
    """A ground-truth mask over its image, the caption above: `keyseg prepare`'s overlays.

    `target` holds 0 / 1 / 255 (background / target / ignore); `outlines` are the target's
    (N, 2) polygons in image pixels, or empty to trace them from the mask (RLE masks).
    Returns RGB uint8 of height BANNER_HEIGHT + OVERLAY_HEIGHT.
    """
    image_rgb = _checked_image(image_rgb)
    target = _checked_mask(target, "target")
    size = (panel_width(*target.shape, OVERLAY_HEIGHT), OVERLAY_HEIGHT)
    base = _scaled_image(image_rgb, size)
    traced = outlines if outlines is not None and len(outlines) else _contours(target == TARGET_VALUE)
    panel = _truth_panel(base, target, size, _panel_outlines(traced, target.shape, size))
    return np.vstack([_banner(panel.shape[1], ascii_safe(caption)), panel])


def prediction_overlay(image_rgb: np.ndarray, prediction: np.ndarray, query: str, answer: str | None = None,
                       keyword: str | None = None) -> np.ndarray:
    """A predicted mask over its image under a banner: the query, and when given the model's
    answer and keyword, one line each (`keyseg predict`, `chat` and `serve`).

    Returns RGB uint8 of height BANNER_HEIGHT + OVERLAY_HEIGHT, or ANSWER_BANNER_HEIGHT +
    OVERLAY_HEIGHT when an answer or keyword is given.
    """
    image_rgb = _checked_image(image_rgb)
    prediction = _checked_mask(prediction, "prediction").astype(bool)
    size = (panel_width(*prediction.shape, OVERLAY_HEIGHT), OVERLAY_HEIGHT)
    panel = _prediction_panel(_scaled_image(image_rgb, size), prediction, size, None, [])
    if answer is None and keyword is None:
        return np.vstack([_banner(panel.shape[1], ascii_safe(query)), panel])
    lines = [f"Q: {query}", f"A: {answer or ''}", f"keyword: {keyword if keyword is not None else '(none)'}"]
    return np.vstack([_line_banner(panel.shape[1], [ascii_safe(line) for line in lines]), panel])


def triptych(image_rgb: np.ndarray, target: np.ndarray, prediction: np.ndarray, caption: str,
             iou: float) -> np.ndarray:
    """Image | ground truth | prediction side by side, under a banner with IoU and query.

    `target` holds 0 / 1 / 255 (background / target / ignore), `prediction` is boolean, both
    of the image's size. Returns an RGB uint8 array of height BANNER_HEIGHT + PANEL_HEIGHT
    and width 3 * panel_width(H, W) + 2 * GAP.
    """
    image_rgb = _checked_image(image_rgb)
    target = _checked_mask(target, "target")
    prediction = np.asarray(prediction)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from target shape {target.shape}")
    prediction = prediction.astype(bool)
    size = (panel_width(*target.shape), PANEL_HEIGHT)

    base = _scaled_image(image_rgb, size)
    muted = _muted(base)
    outlines = _panel_outlines(_contours(target == TARGET_VALUE), target.shape, size)
    # The outline goes on both mask panels: on the prediction it shows misses and spill-over
    # at a glance; on the ground truth it keeps thin targets visible. The mask panels tint a
    # grey, low-contrast copy of the image: the colours read the same on any photo (an
    # orange prediction on an orange object included); the first panel keeps the colours.
    panels = [base.astype(np.uint8), _truth_panel(muted, target, size, outlines),
              _prediction_panel(muted, prediction, size, target, outlines)]
    for panel, label in zip(panels, ("image", "ground truth", "prediction")):
        _label(panel, label)
    gap = np.full((PANEL_HEIGHT, GAP, 3), BACKGROUND_GREY, dtype=np.uint8)
    strip = np.hstack([panels[0], gap, panels[1], gap, panels[2]])
    # The IoU leads the first line so truncating a long query never hides it.
    return np.vstack([_banner(strip.shape[1], f"IoU {iou:.3f} | {ascii_safe(caption)}"), strip])


def overlay_strip(panels: list[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Panels side by side, separated by a dark gap (shorter panels padded at the bottom)."""
    height = max(panel.shape[0] for panel in panels)
    pieces = []
    for index, panel in enumerate(panels):
        if index:
            pieces.append(np.zeros((height, gap, 3), dtype=np.uint8))
        padded = np.zeros((height, panel.shape[1], 3), dtype=np.uint8)
        padded[: panel.shape[0]] = panel
        pieces.append(padded)
    return np.hstack(pieces)


def overlay_png(picture_rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB picture from this module (OpenCV encodes BGR; converted here)."""
    # Empty params: OpenCV's defaults suit photos (encode_png's default is for masks).
    return encode_png(cv2.cvtColor(np.ascontiguousarray(picture_rgb), cv2.COLOR_RGB2BGR), params=[])


def panel_width(height: int, width: int, panel_height: int = PANEL_HEIGHT) -> int:
    """Width of one panel of a `height` x `width` picture scaled to `panel_height`."""
    return max(1, round(width * panel_height / height))


def ascii_safe(text: str) -> str:
    """Text OpenCV's Hershey fonts can draw: accents dropped, other non-ASCII as '?'."""
    # NFKD splits "é" into "e" + a combining accent, so Latin text stays readable.
    decomposed = unicodedata.normalize("NFKD", text)
    chars = []
    for char in decomposed:
        if unicodedata.combining(char):
            continue
        if char in "\t\r\n":
            chars.append(" ")
        elif " " <= char <= "~":
            chars.append(char)
        else:
            chars.append("?")
    return "".join(chars)


# --------------------------------------------------------------------------- inputs


def _checked_image(image_rgb) -> np.ndarray:
    image_rgb = np.asarray(image_rgb)
    if image_rgb.dtype != np.uint8:
        # A float image in [0, 1] cast to uint8 would silently turn black.
        raise ValueError(f"image must be uint8, got {image_rgb.dtype}")
    if image_rgb.ndim == 2:
        image_rgb = np.repeat(image_rgb[:, :, None], 3, axis=2)
    elif image_rgb.ndim == 3 and image_rgb.shape[2] == 4:
        image_rgb = image_rgb[:, :, :3]
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or 0 in image_rgb.shape:
        raise ValueError(f"image must be (H, W, 3), got shape {image_rgb.shape}")
    # An image whose size differs from its mask is still drawn (stretched to the mask's
    # size): the masks are what was scored or written, and the picture is where one notices.
    return np.ascontiguousarray(image_rgb)


def _checked_mask(mask, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"{name} must be a non-empty (H, W) mask, got shape {mask.shape}")
    return mask


# --------------------------------------------------------------------------- panels
# Scale first, paint afterwards: painting a 4000 x 3000 photo to show it at 256 px would
# waste most of the work. Masks are scaled as coverage fractions, so a thin or tiny region
# fades instead of vanishing the way nearest-neighbour sampling would.


def _interpolation(source_height: int, panel_height: int) -> int:
    # INTER_AREA averages when shrinking (no aliasing); it is blocky when enlarging.
    return cv2.INTER_AREA if source_height >= panel_height else cv2.INTER_LINEAR


def _scaled_image(image_rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image at panel size (OpenCV sizes are (width, height)), as float32."""
    return cv2.resize(image_rgb, size, interpolation=_interpolation(image_rgb.shape[0], size[1])).astype(np.float32)


def _muted(base: np.ndarray) -> np.ndarray:
    """A grey, half-contrast copy of a float32 RGB panel (64-191; mid-grey stays 128), for tinting."""
    luma = base @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat((64.0 + 0.5 * luma)[:, :, None], 3, axis=2).astype(np.float32)


def _coverage(region: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fraction of each panel pixel covered by `region`, in [0, 1]."""
    return cv2.resize(region.astype(np.float32), size, interpolation=_interpolation(region.shape[0], size[1]))


def _tint(panel: np.ndarray, cover: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    alpha = (TINT_ALPHA * np.clip(cover, 0.0, 1.0))[:, :, None]
    return panel * (1.0 - alpha) + np.array(colour, dtype=np.float32) * alpha


def _hatch(size: tuple[int, int]) -> np.ndarray:
    """Diagonal stripes: ignore regions stay recognisable without telling red from green."""
    width, height = size
    rows, cols = np.indices((height, width))
    return (rows + cols) % 6 < 2


def _truth_panel(base: np.ndarray, target: np.ndarray, size: tuple[int, int],
                 outlines: list[np.ndarray]) -> np.ndarray:
    """Target tinted green, ignore tinted red and hatched, target outlines on top."""
    ignore_cover = _coverage(target == IGNORE_VALUE, size)
    panel = _tint(_tint(base, _coverage(target == TARGET_VALUE, size), TARGET_RGB), ignore_cover, IGNORE_RGB)
    panel[_hatch(size) & (ignore_cover >= 0.5)] = IGNORE_RGB
    panel = panel.astype(np.uint8)
    _draw_outlines(panel, outlines)
    return panel


def _prediction_panel(base: np.ndarray, prediction: np.ndarray, size: tuple[int, int], target: np.ndarray | None,
                      outlines: list[np.ndarray]) -> np.ndarray:
    """Prediction tinted orange; with a `target`, its ignore region hatched grey and its outlines."""
    panel = _tint(base, _coverage(prediction, size), PREDICTION_RGB)
    if target is not None:
        panel[_hatch(size) & (_coverage(target == IGNORE_VALUE, size) >= 0.5)] = IGNORE_PREDICTION_RGB
    panel = panel.astype(np.uint8)
    _draw_outlines(panel, outlines)
    return panel


# --------------------------------------------------------------------------- outlines

_SHIFT_BITS = 4  # polylines takes fixed-point points: sub-pixel outlines after scaling
MIN_OUTLINE_EXTENT = 3  # panel pixels; smaller targets get a ring instead of an outline
MARKER_RADIUS = 5


def _contours(region: np.ndarray) -> list[np.ndarray]:
    """(N, 2) outlines of a region, holes included, traced at full resolution.

    Tracing the full-resolution mask keeps targets smaller than one panel pixel outlined.
    """
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return [contour.reshape(-1, 2) for contour in contours]


def _panel_outlines(outlines: list[np.ndarray], shape: tuple[int, int], size: tuple[int, int]) -> list[np.ndarray]:
    """Full-resolution (N, 2) outlines mapped into fixed-point panel coordinates."""
    scale = np.array([size[0] / shape[1], size[1] / shape[0]])
    mapped = []
    for outline in outlines:
        # Pixel centres: full-resolution centre i + 0.5 lands at (i + 0.5) * scale - 0.5.
        points = (np.asarray(outline, dtype=np.float64).reshape(-1, 2) + 0.5) * scale - 0.5
        mapped.append(np.round(points * (1 << _SHIFT_BITS)).astype(np.int32).reshape(-1, 1, 2))
    return mapped


def _draw_outlines(panel: np.ndarray, outlines: list[np.ndarray]) -> None:
    """Draw target outlines; a target shrunk to a few pixels gets a ring around it instead.

    A 2 x 2 target in a 4000-pixel photo scales to a fraction of a pixel, which an
    anti-aliased line renders as nearly nothing, yet tiny targets are where models fail.
    """
    for outline in outlines:
        points = outline.reshape(-1, 2) / (1 << _SHIFT_BITS)
        if len(points) == 0:
            continue
        if np.ptp(points, axis=0).max() < MIN_OUTLINE_EXTENT:
            centre = tuple(int(v) for v in np.round(points.mean(axis=0)))
            cv2.circle(panel, centre, MARKER_RADIUS, OUTLINE_RGB, 1, cv2.LINE_AA)
        else:
            cv2.polylines(panel, [outline], True, OUTLINE_RGB, 1, cv2.LINE_AA, shift=_SHIFT_BITS)


# --------------------------------------------------------------------------- text


def _label(panel: np.ndarray, text: str) -> None:
    """A small name in the panel's top-left corner, on a dark box so it reads on any photo."""
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, LABEL_SCALE, 1)
    cv2.rectangle(panel, (0, 0), (text_width + 6, text_height + baseline + 4), (0, 0, 0), cv2.FILLED)
    cv2.putText(panel, text, (3, text_height + 3), FONT, LABEL_SCALE, (255, 255, 255), 1, cv2.LINE_AA)


def _text_width(text: str) -> int:
    return cv2.getTextSize(text, FONT, CAPTION_SCALE, 1)[0][0]


def _ellipsize(text: str, max_width: int) -> str:
    if _text_width(text) <= max_width:
        return text
    while text and _text_width(text + "...") > max_width:
        text = text[:-1]
    return text.rstrip() + "..."


def _wrap(text: str, max_width: int, max_lines: int) -> list[str]:
    """Greedy word wrap into at most `max_lines`; what does not fit ends in '...'."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and _text_width(candidate) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1:])]
    # Re-check every line: a single long word can overflow on its own.
    return [_ellipsize(line, max_width) for line in lines]


def _line_banner(width: int, lines: list[str], rows: int | None = None) -> np.ndarray:
    """ASCII lines, each cut with '...' when too wide, on a dark strip `rows` lines high
    (default: as many as there are lines)."""
    rows = len(lines) if rows is None else rows
    banner = np.full((rows * LINE_HEIGHT + 8, width, 3), BACKGROUND_GREY, dtype=np.uint8)
    for row, line in enumerate(lines[:rows]):
        baseline_y = 4 + LINE_HEIGHT * (row + 1) - 5
        cv2.putText(banner, _ellipsize(line, width - 12), (6, baseline_y), FONT, CAPTION_SCALE, (240, 240, 240), 1,
                    cv2.LINE_AA)
    return banner


def _banner(width: int, text: str) -> np.ndarray:
    """`text` (ASCII) wrapped into CAPTION_LINES lines on a dark strip BANNER_HEIGHT high."""
    return _line_banner(width, _wrap(text, width - 12, CAPTION_LINES), CAPTION_LINES)
