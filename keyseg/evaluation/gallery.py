"""The evaluation report: metrics, and every scored query, browsable in one offline page.

Numbers say how good a model is; pictures say *why* it fails. `write_gallery` writes a
page with the metrics table and a list of every scored query (split, query, short/long,
IoU, the model's answer and keyword, the gold keyword), filtered, sorted and paged in the
browser; the queries picked by `select_extremes` (the K worst and K best of each split)
carry a picture, a triptych of image | ground truth | prediction drawn by
`keyseg.masks.overlay`, the drawer `keyseg prepare` and `keyseg predict` use too.

The folder is meant to be copied around and opened from disk (file://), on machines
without network access: inline CSS and script, the rows in a local script file (a page
opened from disk cannot fetch JSON), no fonts or CDNs, relative image links. Data text is
put into the page with `textContent` only, never as markup.
"""

from __future__ import annotations

import html
import json
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
    """What one scored query's picture (image | ground truth | prediction) is drawn from;
    the rest of the query's record is in its row."""

    key: str  # names the picture's file
    query: str
    iou: float
    image_rgb: np.ndarray  # (H, W, 3) uint8
    target: np.ndarray  # (H, W) uint8, 0 / 1 / 255
    prediction: np.ndarray  # (H, W) bool


ROWS_FILE = "rows.js"
PAGE_SIZE = 50


def write_gallery(out_dir: Path, rows: Sequence[dict], drawn: dict[int, GalleryItem], sections: dict[str, list[int]],
                  title: str, summary: dict | None = None) -> Path:
    """Write the evaluation report: `index.html` (metrics table, then every scored query,
    filterable, sortable and paged in the browser), `rows.js` (the rows as data),
    `images/<key>_<n>.png` (the drawn rows' pictures) and `gallery.json`; return the page.

    `rows` are `per_sample.jsonl` records (split, id, query, is_sentence, iou, intersection,
    union, answer, keyword, predicted_keyword, keyword_match); `drawn` maps a row's index to
    its picture; `sections` names row indices ({"worst": [...], "best": [...]}, per split),
    which `gallery.json` lists with their pictures for tools. `summary` is metrics.json.
    Pictures are written before the page, so it never links a missing picture.
    """
    out_dir = Path(out_dir)
    pictures: dict[int, str] = {}
    for number, (index, item) in enumerate(sorted(drawn.items())):
        picture = triptych(item.image_rgb, item.target, item.prediction, item.query, item.iou)
        relative = f"images/{_file_stem(item.key)}_{number}.png"
        atomic_write_bytes(out_dir / relative, overlay_png(picture))
        pictures[index] = relative
    tags = {index: name for name, indices in sections.items() for index in indices}
    data = {"page_size": PAGE_SIZE,
            "splits": list(dict.fromkeys(str(row.get("split")) for row in rows)),
            "rows": [_row_data(row, pictures.get(index), tags.get(index)) for index, row in enumerate(rows)]}
    # A script file, not JSON: pages opened from disk may load scripts but not fetch files.
    atomic_write_text(out_dir / ROWS_FILE, "window.KEYSEG_GALLERY = " + json.dumps(data, ensure_ascii=True) + ";\n")
    atomic_write_json(out_dir / "gallery.json", {
        name: [{"key": rows[index].get("id"), "split": rows[index].get("split"), "iou": float(rows[index]["iou"]),
                "image": pictures[index]} for index in indices if index in pictures]
        for name, indices in sections.items()})
    index_path = out_dir / "index.html"
    atomic_write_text(index_path, _page(title, summary or {}, len(rows), len(pictures)))
    return index_path


def _row_data(row: dict, picture: str | None, tag: str | None) -> dict:
    """The fields the page shows of one per_sample record (a NaN IoU becomes null: JSON has no NaN)."""
    from keyseg.evaluation.inference import readable_answer

    iou, answer = row.get("iou"), row.get("answer")
    return {"split": row.get("split"), "id": row.get("id"), "query": row.get("query"),
            "kind": "long" if row.get("is_sentence") else "short",
            "iou": None if iou is None or math.isnan(iou) else iou,
            "answer": readable_answer(answer) if isinstance(answer, str) else None,
            "keyword": row.get("keyword"), "predicted_keyword": row.get("predicted_keyword"),
            "match": row.get("keyword_match"), "image": quote(picture) if picture else None, "tag": tag}


def _file_stem(key: str) -> str:
    # Keys can hold path separators or spaces ("val/123 a"): keep file names portable and
    # never hidden (no leading dot); the running number keeps them unique.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(key)).strip("._")
    return stem[:80] or "item"


def _text(value: Any) -> str:
    """Escaped display text; missing values (None) show as a dash."""
    return "\u2014" if value is None else html.escape(str(value), quote=True)


def _percent(value: Any) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "\u2014"
    return f"{100 * float(value):.1f}"


def _summary_table(summary: dict) -> str:
    """One row per split, numbers only: gIoU and cIoU overall, for short and long queries,
    the keyword-match rate, and the query and skip counts."""
    head = ("<tr><th>split</th><th>queries</th><th>gIoU</th><th>cIoU</th><th>short gIoU</th><th>long gIoU</th>"
            "<th>keyword match</th><th>skipped</th></tr>")
    body = []
    for split, row in summary.items():
        short, long_ = row.get("short") or {}, row.get("long") or {}
        keywords = row.get("keywords") or {}
        cells = [_text(row.get("count")), _percent(row.get("giou")), _percent(row.get("ciou")),
                 _percent(short.get("giou")) if short.get("count") else "\u2014",
                 _percent(long_.get("giou")) if long_.get("count") else "\u2014",
                 (_percent(keywords.get("match_rate")) + " %") if keywords.get("match_rate") is not None else "\u2014",
                 _text(row.get("skipped", 0))]
        body.append(f"<tr><th>{_text(split)}</th>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return ('<table class="summary"><caption>gIoU and cIoU in percent (LISA protocol)</caption>\n'
            + head + "\n" + "\n".join(body) + "\n</table>")


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; color: #222; max-width: 1400px; }
h1 { font-size: 1.5rem; }
table { border-collapse: collapse; }
table.summary { margin-bottom: 1rem; }
table.summary caption { text-align: left; color: #555; padding-bottom: 0.3rem; }
table.summary th, table.summary td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
table.summary th { background: #eee; }
.legend span.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin: 0 0.2em 0 0.8em;
  outline: 1px solid #333; }
form.filters { display: flex; flex-wrap: wrap; gap: 0.5rem 1.2rem; align-items: end; margin: 1rem 0; }
form.filters label { display: flex; flex-direction: column; font-size: 0.85rem; color: #444; }
form.filters input[type=number] { width: 5em; }
table.rows { width: 100%; table-layout: fixed; background: #fff; }
table.rows th, table.rows td { border: 1px solid #ddd; padding: 0.3rem 0.5rem; vertical-align: top; overflow-wrap: break-word; }
table.rows th { background: #eee; cursor: pointer; user-select: none; text-align: left; }
table.rows th.sorted-asc::after { content: " \\25B2"; } table.rows th.sorted-desc::after { content: " \\25BC"; }
table.rows td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.rows img { max-width: 100%; height: auto; display: block; border: 1px solid #999; }
col.picture { width: 30%; } col.split { width: 10%; } col.query { width: 20%; } col.kind { width: 5%; }
col.iou { width: 6%; } col.answer { width: 9%; } col.keyword { width: 10%; } col.predicted { width: 10%; }
.differ { color: #b00; font-weight: 600; }
.pager { margin: 0.8rem 0; display: flex; gap: 0.8rem; align-items: center; }
.tag { font-size: 0.75rem; color: #fff; background: #555; border-radius: 3px; padding: 0 0.3em; margin-left: 0.3em; }
""".strip()

# Renders the rows of rows.js with DOM calls and textContent only: data text is never markup.
_SCRIPT = r"""
(function () {
  const data = window.KEYSEG_GALLERY;
  const form = document.getElementById("filters");
  const body = document.getElementById("rows-body");
  const status = document.getElementById("status");
  const split = form.elements.split;
  for (const name of data.splits) split.add(new Option(name, name));
  let sortKey = "iou", sortAsc = true, page = 0;
  const numeric = {iou: true};
  function value(row, key) { const v = row[key]; return v === null || v === undefined ? "" : v; }
  function matches(row) {
    const f = form.elements;
    if (f.split.value && row.split !== f.split.value) return false;
    if (f.kind.value && row.kind !== f.kind.value) return false;
    if (f.match.value === "yes" && row.match !== true) return false;
    if (f.match.value === "no" && row.match !== false) return false;
    if (f.match.value === "unjudged" && row.match !== null && row.match !== undefined) return false;
    const low = parseFloat(f.iou_min.value), high = parseFloat(f.iou_max.value);
    if (!isNaN(low) && !(row.iou >= low)) return false;
    if (!isNaN(high) && !(row.iou <= high)) return false;
    if (f.pictured.checked && !row.image) return false;
    const text = f.search.value.trim().toLowerCase();
    if (text && !((row.query || "") + " " + (row.id || "")).toLowerCase().includes(text)) return false;
    return true;
  }
  function cell(tr, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function render() {
    const rows = data.rows.filter(matches);
    rows.sort(function (a, b) {
      const x = value(a, sortKey), y = value(b, sortKey);
      // IoUs lie in [0, 1]: a missing one sorts below every real one
      const order = numeric[sortKey] ? (x === "" ? -1 : x) - (y === "" ? -1 : y)
                                     : String(x).localeCompare(String(y));
      return sortAsc ? order : -order;
    });
    const pages = Math.max(1, Math.ceil(rows.length / data.page_size));
    page = Math.min(page, pages - 1);
    body.replaceChildren();
    for (const row of rows.slice(page * data.page_size, (page + 1) * data.page_size)) {
      const tr = document.createElement("tr");
      tr.className = "row";
      const picture = document.createElement("td");
      if (row.image) {
        const link = document.createElement("a"), img = document.createElement("img");
        link.href = row.image; img.src = row.image; img.loading = "lazy"; img.alt = row.query || "";
        link.appendChild(img); picture.appendChild(link);
      } else { picture.textContent = "\u2014"; }
      tr.appendChild(picture);
      const where = cell(tr, row.split);
      if (row.tag) { const tag = document.createElement("span"); tag.className = "tag"; tag.textContent = row.tag; where.appendChild(tag); }
      cell(tr, row.query);
      cell(tr, row.kind);
      cell(tr, row.iou === null ? "\u2014" : row.iou.toFixed(3), "num");
      cell(tr, row.answer === null ? "\u2014" : row.answer);
      cell(tr, row.keyword === null ? "\u2014" : row.keyword);
      const predicted = cell(tr, row.predicted_keyword === null ? "\u2014" : row.predicted_keyword);
      if (row.match === false) predicted.className = "differ";
      body.appendChild(tr);
    }
    status.textContent = rows.length + " of " + data.rows.length + " queries; page " + (page + 1) + " of " + pages;
    document.getElementById("prev").disabled = page === 0;
    document.getElementById("next").disabled = page >= pages - 1;
    for (const th of document.querySelectorAll("th[data-key]")) {
      th.classList.toggle("sorted-asc", th.dataset.key === sortKey && sortAsc);
      th.classList.toggle("sorted-desc", th.dataset.key === sortKey && !sortAsc);
    }
  }
  form.addEventListener("input", function () { page = 0; render(); });
  form.addEventListener("change", function () { page = 0; render(); });
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  for (const th of document.querySelectorAll("th[data-key]")) {
    th.addEventListener("click", function () {
      if (sortKey === th.dataset.key) sortAsc = !sortAsc; else { sortKey = th.dataset.key; sortAsc = true; }
      render();
    });
  }
  document.getElementById("prev").addEventListener("click", function () { page -= 1; render(); });
  document.getElementById("next").addEventListener("click", function () { page += 1; render(); });
  render();
})();
""".strip()


def _legend() -> str:
    def swatch(colour: tuple[int, int, int], label: str) -> str:
        return f'<span class="swatch" style="background: rgb{colour}"></span>{label}'

    return ('<p class="legend">Pictures: image | ground truth | prediction. '
            + swatch(TARGET_RGB, "target") + swatch(IGNORE_RGB, "ignored (hatched)")
            + swatch(PREDICTION_RGB, "prediction") + swatch(OUTLINE_RGB, "target outline") + "</p>")


_FILTERS = """
<form id="filters" class="filters">
<label>search<input type="search" name="search" placeholder="query or id"></label>
<label>split<select name="split"><option value="">all</option></select></label>
<label>query<select name="kind"><option value="">all</option><option value="short">short</option><option value="long">long</option></select></label>
<label>keyword<select name="match"><option value="">all</option><option value="yes">matches</option><option value="no">differs</option><option value="unjudged">not judged</option></select></label>
<label>IoU from<input type="number" name="iou_min" min="0" max="1" step="0.05"></label>
<label>IoU to<input type="number" name="iou_max" min="0" max="1" step="0.05"></label>
<label><span>with picture</span><input type="checkbox" name="pictured"></label>
</form>
<div class="pager"><button type="button" id="prev">previous</button><span id="status"></span><button type="button" id="next">next</button></div>
<table class="rows">
<colgroup><col class="picture"><col class="split"><col class="query"><col class="kind"><col class="iou"><col class="answer"><col class="keyword"><col class="predicted"></colgroup>
<thead><tr><th>picture</th><th data-key="split">split</th><th data-key="query">query</th><th data-key="kind">kind</th><th data-key="iou">IoU</th><th data-key="answer">answer</th><th data-key="keyword">keyword</th><th data-key="predicted_keyword">predicted keyword</th></tr></thead>
<tbody id="rows-body"></tbody>
</table>
""".strip()


def _page(title: str, summary: dict, row_count: int, picture_count: int) -> str:
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
    parts.append(f"<p>{row_count} scored queries, {picture_count} with a picture (the worst and best of each "
                 "split). Click a column to sort; the filters narrow the list.</p>")
    parts.append(_FILTERS)
    parts.append('<noscript><p>The list needs JavaScript; every row is also in per_sample.jsonl.</p></noscript>')
    parts.append(f'<script src="{ROWS_FILE}"></script>')
    parts.append(f"<script>\n{_SCRIPT}\n</script>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
