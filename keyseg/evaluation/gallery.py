"""An evaluation picture gallery: the worst and best predictions as one offline HTML page.

Numbers say how good a model is; pictures say *why* it fails. Each prediction becomes a
triptych (image | ground truth | prediction with the target outline on top) and the page
lists the K worst and K best of them with query, IoU and keywords.

The page is meant to be copied around and opened from disk (file://), on machines without
network access: inline CSS only, no scripts, fonts or CDNs, and relative image links.
"""

from __future__ import annotations

import html
import math
import numbers
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

import cv2
import numpy as np

from keyseg.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from keyseg.masks.png import encode_png
from keyseg.masks.raster import IGNORE_VALUE, TARGET_VALUE

# All colours are RGB: triptychs are RGB arrays and only become BGR when encoded.
TARGET_RGB = (60, 200, 60)  # green, as in the `keyseg prepare` overlays
IGNORE_RGB = (230, 60, 60)  # red
IGNORE_PREDICTION_RGB = (150, 150, 150)  # grey: predictions there are not scored
PREDICTION_RGB = (255, 140, 0)  # orange: far from green, so the two never get confused
OUTLINE_RGB = (0, 220, 255)  # cyan target outline, readable over both green and orange
BACKGROUND_GREY = 30

PANEL_HEIGHT = 256  # pictures for browsing a page of dozens, not for measuring
GAP = 4  # dark separator between panels
TINT_ALPHA = 0.5

FONT = cv2.FONT_HERSHEY_SIMPLEX
CAPTION_SCALE = 0.5
CAPTION_LINES = 2
LINE_HEIGHT = 18
# Fixed banner height (room for CAPTION_LINES lines) so every triptych has the same height.
BANNER_HEIGHT = CAPTION_LINES * LINE_HEIGHT + 8
LABEL_SCALE = 0.4


# --------------------------------------------------------------------------- triptych


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


def panel_width(height: int, width: int) -> int:
    """Width of one panel of a `height` x `width` picture scaled to PANEL_HEIGHT."""
    return max(1, round(width * PANEL_HEIGHT / height))


def triptych(image_rgb: np.ndarray, target: np.ndarray, prediction: np.ndarray, caption: str,
             iou: float) -> np.ndarray:
    """Image | ground truth | prediction side by side, under a banner with IoU and query.

    `target` holds 0 / 1 / 255 (background / target / ignore), `prediction` is boolean, both
    of the image's size. Returns an RGB uint8 array of height BANNER_HEIGHT + PANEL_HEIGHT
    and width 3 * panel_width(H, W) + 2 * GAP.
    """
    image_rgb, target, prediction = _checked_inputs(image_rgb, target, prediction)
    height, width = target.shape
    size = (panel_width(height, width), PANEL_HEIGHT)  # OpenCV sizes are (width, height)

    # Scale first, paint afterwards: painting a 4000 x 3000 photo to show it at 256 px
    # would waste most of the work. Masks are scaled as coverage fractions, so a thin or
    # tiny region fades instead of vanishing the way nearest-neighbour sampling would.
    base = cv2.resize(image_rgb, size, interpolation=_interpolation(height, PANEL_HEIGHT)).astype(np.float32)
    target_cover = _coverage(target == TARGET_VALUE, size)
    ignore_cover = _coverage(target == IGNORE_VALUE, size)
    predicted_cover = _coverage(prediction, size)
    hatch = _hatch(size) & (ignore_cover >= 0.5)
    outlines = _scaled_outlines(target == TARGET_VALUE, size)

    truth_panel = _tint(_tint(base, target_cover, TARGET_RGB), ignore_cover, IGNORE_RGB)
    truth_panel[hatch] = IGNORE_RGB
    truth_panel = truth_panel.astype(np.uint8)

    predicted_panel = _tint(base, predicted_cover, PREDICTION_RGB)
    predicted_panel[hatch] = IGNORE_PREDICTION_RGB
    predicted_panel = predicted_panel.astype(np.uint8)

    # The outline goes on both mask panels: on the prediction it shows misses and spill-over
    # at a glance; on the ground truth it keeps thin targets visible.
    for panel in (truth_panel, predicted_panel):
        _draw_outlines(panel, outlines)

    panels = [base.astype(np.uint8), truth_panel, predicted_panel]
    for panel, label in zip(panels, ("image", "ground truth", "prediction")):
        _label(panel, label)
    gap = np.full((PANEL_HEIGHT, GAP, 3), BACKGROUND_GREY, dtype=np.uint8)
    strip = np.hstack([panels[0], gap, panels[1], gap, panels[2]])
    return np.vstack([_banner(strip.shape[1], caption, iou), strip])


def _checked_inputs(image_rgb, target, prediction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image_rgb, target, prediction = np.asarray(image_rgb), np.asarray(target), np.asarray(prediction)
    if target.ndim != 2 or 0 in target.shape:
        raise ValueError(f"target must be a non-empty (H, W) mask, got shape {target.shape}")
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from target shape {target.shape}")
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
    # size below): the masks are what was scored, and the page is where one notices.
    return np.ascontiguousarray(image_rgb), target, prediction.astype(bool)


def _interpolation(source_height: int, panel_height: int) -> int:
    # INTER_AREA averages when shrinking (no aliasing); it is blocky when enlarging.
    return cv2.INTER_AREA if source_height >= panel_height else cv2.INTER_LINEAR


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


_SHIFT_BITS = 4  # polylines takes fixed-point points: sub-pixel outlines after scaling


def _scaled_outlines(region: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    """Contours found at full resolution, mapped into panel coordinates.

    Tracing the full-resolution mask keeps targets smaller than one panel pixel outlined.
    """
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    scale = np.array([size[0] / region.shape[1], size[1] / region.shape[0]])
    outlines = []
    for contour in contours:
        # Pixel centres: full-resolution centre i + 0.5 lands at (i + 0.5) * scale - 0.5.
        points = (contour.reshape(-1, 2) + 0.5) * scale - 0.5
        outlines.append(np.round(points * (1 << _SHIFT_BITS)).astype(np.int32).reshape(-1, 1, 2))
    return outlines


MIN_OUTLINE_EXTENT = 3  # panel pixels; smaller targets get a ring instead of an outline
MARKER_RADIUS = 5


def _draw_outlines(panel: np.ndarray, outlines: list[np.ndarray]) -> None:
    """Draw target outlines; a target shrunk to a few pixels gets a ring around it instead.

    A 2 x 2 target in a 4000-pixel photo scales to a fraction of a pixel, which an
    anti-aliased line renders as nearly nothing, yet tiny targets are where models fail.
    """
    for outline in outlines:
        points = outline.reshape(-1, 2) / (1 << _SHIFT_BITS)
        if np.ptp(points, axis=0).max() < MIN_OUTLINE_EXTENT:
            centre = tuple(int(v) for v in np.round(points.mean(axis=0)))
            cv2.circle(panel, centre, MARKER_RADIUS, OUTLINE_RGB, 1, cv2.LINE_AA)
        else:
            cv2.polylines(panel, [outline], True, OUTLINE_RGB, 1, cv2.LINE_AA, shift=_SHIFT_BITS)


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


def _banner(width: int, caption: str, iou: float) -> np.ndarray:
    # The IoU leads the first line so truncating a long query never hides it.
    text = f"IoU {iou:.3f} | {ascii_safe(caption)}"
    banner = np.full((BANNER_HEIGHT, width, 3), BACKGROUND_GREY, dtype=np.uint8)
    for row, line in enumerate(_wrap(text, width - 12, CAPTION_LINES)):
        baseline_y = 4 + LINE_HEIGHT * (row + 1) - 5
        cv2.putText(banner, line, (6, baseline_y), FONT, CAPTION_SCALE, (240, 240, 240), 1, cv2.LINE_AA)
    return banner


# --------------------------------------------------------------------------- selection


def select_extremes(records: Sequence[Any], k: int, key: Callable[[Any], float] = lambda r: r.iou
                    ) -> tuple[list[Any], list[Any]]:
    """The `k` lowest-scoring records (lowest first) and the `k` highest (highest first).

    `key` gives the score (IoU by default). Ties break on the record's `.key` (then on the
    input position), so reruns pick the same pictures. With fewer than 2k records the two
    lists are disjoint: `best` skips records already shown under `worst`.
    """
    if k <= 0 or not records:
        return [], []
    scores = [_sortable_score(key(record)) for record in records]
    ties = [_tie_break(record, index) for index, record in enumerate(records)]
    ascending = sorted(range(len(records)), key=lambda i: (scores[i], ties[i]))
    descending = sorted(range(len(records)), key=lambda i: (-scores[i], ties[i]))
    worst = ascending[:k]
    shown = set(worst)
    best = [index for index in descending if index not in shown][:k]
    return [records[i] for i in worst], [records[i] for i in best]


def _sortable_score(score: float) -> float:
    # NaN compares false with everything and would make the order arbitrary; a NaN score
    # means something broke, so it belongs among the worst.
    score = float(score)
    return -math.inf if math.isnan(score) else score


def _tie_break(record: Any, index: int) -> tuple[str, int]:
    name = record.get("key") if isinstance(record, dict) else getattr(record, "key", None)
    return ("" if name is None else str(name), index)


# --------------------------------------------------------------------------- gallery


@dataclass
class GalleryItem:
    """One scored prediction with everything its gallery card shows."""

    key: str
    split: str
    query: str
    iou: float
    intersection: int
    union: int
    image_rgb: np.ndarray  # (H, W, 3) uint8
    target: np.ndarray  # (H, W) uint8, 0 / 1 / 255
    prediction: np.ndarray  # (H, W) bool
    keyword: str | None = None  # gold keyword
    predicted_keyword: str | None = None


def write_gallery(out_dir: Path, worst: list[GalleryItem], best: list[GalleryItem], title: str,
                  summary: dict | None = None) -> Path:
    """Write `out_dir/images/<key>_<n>.png` triptychs, `out_dir/index.html` and
    `out_dir/gallery.json` (`{"worst": [...], "best": [...]}`, each entry's key, split, IoU
    and picture path relative to `out_dir`, for tools); return the page's path.

    `summary` maps split -> {"giou": ..., "ciou": ..., "count": ...} (other columns are shown
    too). Pictures are written before the page, so the page never links a missing picture.
    Pictures of earlier runs in `images/` are left alone (the page no longer links them).
    """
    out_dir = Path(out_dir)
    sections = []
    listing: dict[str, list[dict]] = {"worst": [], "best": []}
    number = 0  # runs across both sections: the same key can appear twice without clashing
    for section, heading, items in (("worst", f"Worst {len(worst)}", worst), ("best", f"Best {len(best)}", best)):
        cards = []
        for item in items:
            picture = triptych(item.image_rgb, item.target, item.prediction, item.query, item.iou)
            relative = f"images/{_file_stem(item.key)}_{number}.png"
            number += 1
            # encode_png speaks OpenCV's BGR; empty params: OpenCV's defaults suit photos.
            atomic_write_bytes(out_dir / relative, encode_png(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), params=[]))
            cards.append(_card(item, quote(relative), picture.shape))
            listing[section].append({"key": item.key, "split": item.split, "iou": float(item.iou), "image": relative})
        sections.append((heading, cards))
    atomic_write_json(out_dir / "gallery.json", listing)
    index = out_dir / "index.html"
    atomic_write_text(index, _page(title, summary, sections))
    return index


def _file_stem(key: str) -> str:
    # Keys can hold path separators or spaces ("val/123 a"): keep file names portable and
    # never hidden (no leading dot); the running number keeps them unique.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(key)).strip("._")
    return stem[:80] or "item"


def _text(value: Any) -> str:
    """Escaped display text; missing values (None) show as a dash."""
    return "\u2014" if value is None else html.escape(str(value), quote=True)


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _text(value)
    # numbers.* so NumPy scalars (np.int64 counts, np.float32 IoUs) format like Python's.
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4f}"
    return _text(value)


def _card(item: GalleryItem, src: str, shape: tuple[int, ...]) -> str:
    predicted_keyword = _text(item.predicted_keyword)
    if item.keyword is not None and item.predicted_keyword != item.keyword:
        predicted_keyword = f'<span class="differ">{predicted_keyword}</span>'  # easy to spot
    rows = [
        ("key", _text(item.key)),
        ("split", _text(item.split)),
        ("query", _text(item.query)),
        ("IoU", _number(float(item.iou))),
        ("I / U", f"{_number(item.intersection)} / {_number(item.union)}"),
        ("gold keyword", _text(item.keyword)),
        ("predicted keyword", predicted_keyword),
    ]
    details = "\n".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    # width/height reserve the space before the picture loads: the page does not jump.
    return (
        '<figure class="card">\n'
        f'<a href="{src}"><img src="{src}" width="{shape[1]}" height="{shape[0]}" loading="lazy" '
        f'alt="{_text(item.query)}"></a>\n'
        f"<figcaption><dl>\n{details}\n</dl></figcaption>\n"
        "</figure>"
    )


def _summary_table(summary: dict) -> str:
    # The usual columns first, in a fixed order; any others afterwards as given.
    known = {"giou": "gIoU", "ciou": "cIoU", "count": "count"}
    columns = [name for name in known if any(name in row for row in summary.values())]
    for row in summary.values():
        columns += [name for name in row if name not in columns]
    head = "".join(f"<th>{_text(known.get(name, name))}</th>" for name in columns)
    body = "\n".join(
        f"<tr><th>{_text(split)}</th>" + "".join(f"<td>{_number(row.get(name))}</td>" for name in columns) + "</tr>"
        for split, row in summary.items()
    )
    return f'<table class="summary">\n<tr><th>split</th>{head}</tr>\n{body}\n</table>'


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; }
h1 { font-size: 1.5rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ccc; }
table.summary { border-collapse: collapse; }
table.summary th, table.summary td { border: 1px solid #ccc; padding: 0.25rem 0.75rem; text-align: right; }
table.summary th { background: #eee; }
.legend span.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin: 0 0.2em 0 0.8em; }
.cards { display: flex; flex-direction: column; gap: 1rem; }
figure.card { margin: 0; padding: 0.75rem; background: #fff; border: 1px solid #ddd; border-radius: 4px; }
figure.card img { max-width: 100%; height: auto; display: block; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 1rem; margin: 0.5rem 0 0; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
.differ { color: #b00; font-weight: 600; }
""".strip()


def _legend() -> str:
    def swatch(colour: tuple[int, int, int], label: str) -> str:
        return f'<span class="swatch" style="background: rgb{colour}"></span>{label}'

    return ('<p class="legend">' + swatch(TARGET_RGB, "target") + swatch(IGNORE_RGB, "ignored (hatched)")
            + swatch(PREDICTION_RGB, "prediction") + swatch(OUTLINE_RGB, "target outline") + "</p>")


def _page(title: str, summary: dict | None, sections: list[tuple[str, list[str]]]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{_text(title)}</h1>",
    ]
    if summary:
        parts.append(_summary_table(summary))
    parts.append(_legend())
    for heading, cards in sections:
        parts.append(f"<h2>{_text(heading)}</h2>")
        parts.append(('<div class="cards">\n' + "\n".join(cards) + "\n</div>") if cards else "<p>No predictions.</p>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
