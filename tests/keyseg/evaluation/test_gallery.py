import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest

from keyseg.evaluation.gallery import (
    BANNER_HEIGHT,
    GAP,
    IGNORE_RGB,
    PANEL_HEIGHT,
    PREDICTION_RGB,
    TARGET_RGB,
    GalleryItem,
    ascii_safe,
    panel_width,
    select_extremes,
    triptych,
    write_gallery,
)


def scene(height=120, width=200):
    """A flat grey photo, a target square, an ignore strip and a shifted prediction."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    target = np.zeros((height, width), dtype=np.uint8)
    target[height // 4: height // 2, width // 4: width // 2] = 1
    target[-height // 8:, :] = 255
    prediction = np.zeros((height, width), dtype=bool)
    prediction[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = True
    return image, target, prediction


def panel_region(picture, index, rows, cols, height, width):
    """The panel pixels that correspond to full-resolution rows/cols of panel `index`."""
    pw = panel_width(height, width)
    scale_y, scale_x = PANEL_HEIGHT / height, pw / width
    top = BANNER_HEIGHT + int(rows.start * scale_y)
    bottom = BANNER_HEIGHT + int(rows.stop * scale_y)
    left = index * (pw + GAP) + int(cols.start * scale_x)
    right = index * (pw + GAP) + int(cols.stop * scale_x)
    # Stay a few pixels inside: outlines and blended edges are not the tint itself.
    return picture[top + 4: bottom - 4, left + 4: right - 4].reshape(-1, 3).astype(int)


def tinted_towards(pixels, colour, grey=128):
    """The mean pixel moved clearly away from grey, in the direction of `colour`."""
    shift = pixels.mean(axis=0) - grey
    direction = np.array(colour, dtype=float) - grey
    cosine = shift @ direction / (np.linalg.norm(shift) * np.linalg.norm(direction) + 1e-9)
    return np.linalg.norm(shift) > 20 and cosine > 0.9


@pytest.mark.parametrize("height,width", [(120, 200), (1000, 300), (50, 50)])
def test_triptych_shape_is_fixed_height_three_panels(height, width):
    picture = triptych(*scene(height, width), "where is it?", 0.5)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[0] == BANNER_HEIGHT + PANEL_HEIGHT
    assert picture.shape[1] == 3 * panel_width(height, width) + 2 * GAP


def test_triptych_colours_where_the_masks_are():
    height, width = 120, 200
    image, target, prediction = scene(height, width)
    picture = triptych(image, target, prediction, "query", 0.25)
    square = (slice(height // 4, height // 2), slice(width // 4, width // 2))
    predicted = (slice(height // 3, 2 * height // 3), slice(width // 3, 2 * width // 3))
    ignore = (slice(height - height // 8, height), slice(0, width))
    background = (slice(0, height // 5), slice(3 * width // 4, width))

    # Image panel: untouched grey everywhere.
    assert np.abs(panel_region(picture, 0, *square, height, width) - 128).max() <= 2
    # Ground truth: green target, red ignore, grey background.
    assert tinted_towards(panel_region(picture, 1, *square, height, width), TARGET_RGB)
    assert tinted_towards(panel_region(picture, 1, *ignore, height, width), IGNORE_RGB)
    assert np.abs(panel_region(picture, 1, *background, height, width) - 128).max() <= 2
    # Prediction: orange where predicted, not where only the target is.
    assert tinted_towards(panel_region(picture, 2, *predicted, height, width), PREDICTION_RGB)
    target_only = (slice(height // 4, height // 3), slice(width // 4, width // 3))
    assert not tinted_towards(panel_region(picture, 2, *target_only, height, width), PREDICTION_RGB)


def test_triptych_draws_target_outline_on_prediction_panel():
    height, width = 120, 200
    image, target, _ = scene(height, width)
    picture = triptych(image, target, np.zeros_like(target, dtype=bool), "q", 0.0)
    pw = panel_width(height, width)
    panel = picture[BANNER_HEIGHT:, 2 * (pw + GAP):].astype(int)
    # Nothing is predicted, so anything non-grey outside the hatched ignore strip is the outline.
    coloured = np.abs(panel - 128).max(axis=2) > 30
    coloured[int(PANEL_HEIGHT * (1 - 1 / 8)) - 2:] = False
    coloured[:20] = False  # panel label
    # It traces the target square (rows h/4..h/2, columns w/4..w/2, scaled) and leaves its inside alone.
    top, bottom = PANEL_HEIGHT * 1 / 4, PANEL_HEIGHT * 1 / 2
    left, right = pw * 1 / 4, pw * 1 / 2
    rows, cols = np.nonzero(coloured)
    assert abs(rows.min() - top) <= 3 and abs(rows.max() - bottom) <= 3
    assert abs(cols.min() - left) <= 3 and abs(cols.max() - right) <= 3
    assert not coloured[round(top) + 4: round(bottom) - 4, round(left) + 4: round(right) - 4].any()


def test_triptych_tiny_target_still_outlined():
    # A 4000-pixel-wide image with a 2-pixel target: nearest-neighbour scaling would lose it.
    image = np.full((3000, 4000, 3), 128, dtype=np.uint8)
    target = np.zeros((3000, 4000), dtype=np.uint8)
    target[1500:1502, 2000:2002] = 1
    picture = triptych(image, target, np.zeros(target.shape, bool), "tiny", 0.0)
    pw = panel_width(3000, 4000)
    truth = picture[BANNER_HEIGHT:, pw + GAP: 2 * pw + GAP].astype(int)
    marked = np.abs(truth - 128).max(axis=2) > 30
    marked[:20] = False  # panel label
    # Marked, and only around where the target is: the middle of the panel.
    rows, cols = np.nonzero(marked)
    assert rows.size and np.abs(rows - PANEL_HEIGHT / 2).max() <= 6 and np.abs(cols - pw / 2).max() <= 6


@pytest.mark.parametrize("caption", ["Où est le café ☕ ?", "café ’quoted’ shape", "漢字だけ", "tab\tand\nnewline", "",
                                     "x" * 500])
def test_triptych_odd_captions_do_not_crash(caption):
    picture = triptych(*scene(), caption, float("nan"))
    assert picture.shape[0] == BANNER_HEIGHT + PANEL_HEIGHT


def test_ascii_safe():
    assert ascii_safe("café\n☕") == "cafe ?"
    assert all(" " <= c <= "~" for c in ascii_safe("漢字 ∑ ü\t\x00"))


def test_triptych_rejects_mismatched_masks():
    image, target, prediction = scene()
    with pytest.raises(ValueError):
        triptych(image, target, prediction[:-1], "q", 0.0)
    with pytest.raises(ValueError):
        triptych(image.astype(np.float32), target, prediction, "q", 0.0)


def test_triptych_accepts_image_of_other_size_and_greyscale():
    image, target, prediction = scene(120, 200)
    picture = triptych(image[:60, :100, 0], target, prediction, "q", 0.0)
    assert picture.shape == (BANNER_HEIGHT + PANEL_HEIGHT, 3 * panel_width(120, 200) + 2 * GAP, 3)


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
