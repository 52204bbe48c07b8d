"""The evaluation gallery: which predictions it picks and the offline page it writes."""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import cv2

from keyseg.evaluation.gallery import GalleryItem, select_extremes, write_gallery
from keyseg.masks.overlay import BANNER_HEIGHT, IGNORE_RGB, OUTLINE_RGB, PANEL_HEIGHT, PREDICTION_RGB, TARGET_RGB
from overlay_scene import scene



def item(key, iou, query="where?", split="val", keyword="cup", predicted_keyword="cup"):
    image, target, prediction = scene()
    return GalleryItem(key=key, split=split, query=query, iou=iou, intersection=12, union=34,
                       image_rgb=image, target=target, prediction=prediction, keyword=keyword,
                       predicted_keyword=predicted_keyword)


def test_write_gallery_page_is_offline_escaped_and_complete(tmp_path):
    evil = "<script>alert(1)</script> & friends"
    worst = [item("val/0001 a", 0.1, query=evil, predicted_keyword=None), item("val/0002", 0.2)]
    best = [item("val/0001 a", 0.9, split="test", keyword=None), item(".hidden", 0.95)]
    summary = {"val": {"giou": 0.61234, "ciou": 0.70001, "count": 200},
               "test": {"giou": 0.5, "ciou": 0.25, "count": 779}}
    index = write_gallery(tmp_path / "gallery", worst, best, "Run <7> & co", summary)

    assert index == tmp_path / "gallery" / "index.html"
    page = index.read_text(encoding="utf-8")

    # Every picture is linked by a relative path that exists, one per item, all distinct.
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 4 and len(set(sources)) == 4
    for source in sources:
        assert not source.startswith(("/", "file:")) and ":" not in source
        picture = cv2.imread(str(index.parent / source))
        assert picture is not None and picture.shape[0] == BANNER_HEIGHT + PANEL_HEIGHT
    assert sorted(p.name for p in (index.parent / "images").iterdir()) == sorted(Path(s).name for s in sources)
    # gallery.json lists the same pictures, section by section, in page order.
    listing = json.loads((index.parent / "gallery.json").read_text(encoding="utf-8"))
    assert [entry["key"] for entry in listing["worst"]] == ["val/0001 a", "val/0002"]
    assert [entry["iou"] for entry in listing["best"]] == [0.9, 0.95]
    assert [quote(entry["image"]) for entry in listing["worst"] + listing["best"]] == sources
    assert not any(Path(s).name.startswith(".") for s in sources)

    # The query and title are escaped, never markup.
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in page
    assert "Run &lt;7&gt; &amp; co" in page

    # Offline: no network references and no scripts of any kind.
    assert "http://" not in page and "https://" not in page
    assert not re.search(r'(src|href)="//', page)
    assert "<script" not in page.lower() and "<link" not in page.lower()

    # Summary numbers, sections, I/U and keywords.
    for number in ("0.6123", "0.7000", "200", "0.5000", "0.2500", "779"):
        assert number in page
    assert "Worst 2" in page and "Best 2" in page
    assert page.index("Worst 2") < page.index("Best 2")
    assert "12 / 34" in page and "0.9500" in page and "cup" in page
    # The legend shows the drawer's colours, the ones in the pictures.
    for colour in (TARGET_RGB, IGNORE_RGB, PREDICTION_RGB, OUTLINE_RGB):
        assert f"rgb{colour}" in page


def test_write_gallery_without_summary_or_items(tmp_path):
    index = write_gallery(tmp_path, [], [], "empty")
    page = index.read_text(encoding="utf-8")
    assert "<table" not in page and "Worst 0" in page
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files behind


@dataclass
class Record:
    key: str
    iou: float


def test_select_extremes_orders_and_breaks_ties_by_key():
    records = [Record("d", 0.5), Record("b", 0.5), Record("a", 0.9), Record("c", 0.5), Record("e", 0.1),
               Record("f", 0.9)]
    worst, best = select_extremes(records, 2)
    assert [r.key for r in worst] == ["e", "b"]
    assert [r.key for r in best] == ["a", "f"]
    # Input order does not matter.
    worst2, best2 = select_extremes(list(reversed(records)), 2)
    assert (worst2, best2) == (worst, best)


def test_select_extremes_disjoint_on_small_lists():
    records = [Record("a", 0.3), Record("b", 0.1), Record("c", 0.7)]
    worst, best = select_extremes(records, 2)
    assert [r.key for r in worst] == ["b", "a"]
    assert [r.key for r in best] == ["c"]
    assert select_extremes(records, 5) == (sorted(records, key=lambda r: r.iou), [])
    assert select_extremes([], 3) == ([], [])
    assert select_extremes(records, 0) == ([], [])


def test_select_extremes_custom_key_and_nan():
    records = [Record("a", 0.3), Record("b", float("nan")), Record("c", 0.7)]
    worst, best = select_extremes(records, 1)
    assert worst[0].key == "b" and best[0].key == "c"
    worst, best = select_extremes(records[::2], 1, key=lambda r: -r.iou)
    assert worst[0].key == "c" and best[0].key == "a"
