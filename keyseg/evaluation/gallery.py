"""An evaluation picture gallery: the worst and best predictions as one offline HTML page.

Numbers say how good a model is; pictures say *why* it fails. This module picks which
predictions to show (`select_extremes`: the K worst and K best) and writes the page
(`write_gallery`: query, IoU and keywords next to each picture). The pictures themselves,
triptychs of image | ground truth | prediction, are drawn by `keyseg.masks.overlay`, the
drawer `keyseg prepare` and `keyseg predict` use too, so the colours mean the same there.

The page is meant to be copied around and opened from disk (file://), on machines without
network access: inline CSS only, no scripts, fonts or CDNs, and relative image links.
"""

from __future__ import annotations

import html
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

import numpy as np

from keyseg.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from keyseg.masks.overlay import IGNORE_RGB, OUTLINE_RGB, PREDICTION_RGB, TARGET_RGB, overlay_png, triptych


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
            atomic_write_bytes(out_dir / relative, overlay_png(picture))
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
