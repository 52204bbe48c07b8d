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



def item(key, iou, query="where?"):
    image, target, prediction = scene()
    return GalleryItem(key=key, query=query, iou=iou, image_rgb=image, target=target, prediction=prediction)


EVIL = "<script>alert(1)</script> & [/] friends"


def rows_and_pictures(count=130):
    """per_sample-like rows over two splits; the 2 worst and 2 best of each drawn."""
    rows = []
    for index in range(count):
        split = "reasonseg:val" if index % 3 else "refcoco:val"
        iou = (index * 37 % 101) / 100
        match = None if split == "reasonseg:val" else index % 2 == 0
        rows.append({"split": split, "id": f"{split}/{index:04d} a", "query": EVIL if index == 7 else f"query {index}",
                     "is_sentence": index % 4 == 0, "iou": iou, "intersection": index, "union": 200,
                     "answer": "sure , [SEG] .", "keyword": None if match is None else "cup",
                     "predicted_keyword": "cup" if match else "mug", "keyword_match": match})
    sections = {"worst": [], "best": []}
    for split in ("reasonseg:val", "refcoco:val"):
        indices = [i for i, row in enumerate(rows) if row["split"] == split]
        worst, best = select_extremes(indices, 2, key=lambda i: rows[i]["iou"])
        sections["worst"] += worst
        sections["best"] += best
    drawn = {i: item(rows[i]["id"], rows[i]["iou"], query=rows[i]["query"])
             for i in sections["worst"] + sections["best"]}
    summary = {"reasonseg:val": {"giou": 0.61234, "ciou": 0.70001, "count": 87, "skipped": 0,
                                 "short": {"giou": 0.5, "count": 60}, "long": {"giou": 0.75, "count": 27}},
               "refcoco:val": {"giou": 0.5, "ciou": 0.25, "count": 43, "skipped": 1,
                               "keywords": {"match_rate": 0.5, "judged": 43}}}
    return rows, drawn, sections, summary


def test_write_gallery_page_is_offline_escaped_and_complete(tmp_path):
    rows, drawn, sections, summary = rows_and_pictures()
    index = write_gallery(tmp_path / "gallery", rows, drawn, sections, "Run <7> & co", summary)
    assert index == tmp_path / "gallery" / "index.html"
    page = index.read_text(encoding="utf-8")

    # Every row is in rows.js; the drawn ones link a picture that exists, all distinct.
    data = json.loads((index.parent / "rows.js").read_text().removeprefix("window.KEYSEG_GALLERY = ").rstrip(";\n"))
    assert len(data["rows"]) == len(rows) and data["splits"] == ["refcoco:val", "reasonseg:val"]
    sources = [row["image"] for row in data["rows"] if row["image"]]
    assert len(sources) == 8 == len(set(sources))
    for source in sources:
        assert not source.startswith(("/", "file:")) and ":" not in source
        picture = cv2.imread(str(index.parent / source))
        assert picture is not None and picture.shape[0] == BANNER_HEIGHT + PANEL_HEIGHT
    assert sorted(p.name for p in (index.parent / "images").iterdir()) == sorted(Path(s).name for s in sources)
    assert data["rows"][0]["answer"] == "Sure, [SEG]."  # answers read cleanly
    # gallery.json lists the pictured rows per section, for tools.
    listing = json.loads((index.parent / "gallery.json").read_text(encoding="utf-8"))
    assert [entry["iou"] for entry in listing["worst"]] == [rows[i]["iou"] for i in sections["worst"]]
    assert sorted(quote(entry["image"]) for entry in listing["worst"] + listing["best"]) == sorted(sources)

    # The title is escaped; data text never reaches the page as markup (rows.js is data).
    assert "<script>alert" not in page and "Run &lt;7&gt; &amp; co" in page
    assert data["rows"][7]["query"] == EVIL  # the text travels as a JSON string, unchanged
    assert "innerHTML" not in page  # rows are rendered with textContent only

    # Offline: no network references; the only scripts are inline or the local rows file.
    assert "http://" not in page and "https://" not in page
    assert not re.search(r'(src|href)="//', page) and "<link" not in page.lower()
    assert re.findall(r'<script src="([^"]+)"', page) == ["rows.js"]

    # The metrics table holds numbers in percent, never dicts.
    table = page[page.index('<table class="summary"'):page.index("</table>")]
    assert "{" not in table and "'" not in table
    for number in ("61.2", "70.0", "87", "50.0", "75.0", "25.0", "43", "50.0 %"):
        assert f"<td>{number}</td>" in table
    for colour in (TARGET_RGB, IGNORE_RGB, PREDICTION_RGB, OUTLINE_RGB):
        assert f"rgb{colour}" in page


def test_write_gallery_without_summary_or_rows(tmp_path):
    index = write_gallery(tmp_path, [], {}, {"worst": [], "best": []}, "empty")
    page = index.read_text(encoding="utf-8")
    assert '<table class="summary"' not in page and "0 scored queries" in page
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files behind


def test_the_page_filters_sorts_and_pages_in_a_browser(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from keyseg.demo.report import headless_chromium

    rows, drawn, sections, summary = rows_and_pictures()
    index = write_gallery(tmp_path / "report [x]", rows, drawn, sections, "report", summary)
    driver = headless_chromium()
    try:
        driver.get(index.resolve().as_uri())  # from disk, as users open it

        def shown():
            return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                    for tr in driver.find_elements(By.CSS_SELECTOR, "#rows-body tr")]

        def status():
            return driver.find_element(By.ID, "status").text

        assert status() == f"{len(rows)} of {len(rows)} queries; page 1 of 3" and len(shown()) == 50
        ious = [float(row[4]) for row in shown()]
        assert ious == sorted(ious) and ious[0] == min(row["iou"] for row in rows)  # worst first
        driver.find_element(By.ID, "next").click()
        driver.find_element(By.ID, "next").click()
        assert status().endswith("page 3 of 3") and len(shown()) == len(rows) - 100

        Select(driver.find_element(By.NAME, "split")).select_by_value("refcoco:val")
        refcoco = [row for row in rows if row["split"] == "refcoco:val"]
        assert status() == f"{len(refcoco)} of {len(rows)} queries; page 1 of 1"
        assert all(row[1].startswith("refcoco:val") for row in shown())
        Select(driver.find_element(By.NAME, "match")).select_by_value("no")
        assert len(shown()) == sum(1 for row in refcoco if row["keyword_match"] is False)
        Select(driver.find_element(By.NAME, "match")).select_by_value("")
        Select(driver.find_element(By.NAME, "kind")).select_by_value("long")
        assert len(shown()) == sum(1 for row in refcoco if row["is_sentence"])
        Select(driver.find_element(By.NAME, "kind")).select_by_value("")
        driver.find_element(By.NAME, "iou_min").send_keys("0.5")
        assert all(float(row[4]) >= 0.5 for row in shown())
        assert len(shown()) == sum(1 for row in refcoco if row["iou"] >= 0.5)
        driver.find_element(By.NAME, "iou_min").clear()
        driver.find_element(By.NAME, "pictured").click()
        assert len(shown()) == 4  # the 2 worst and 2 best of refcoco:val
        images = driver.find_elements(By.CSS_SELECTOR, "#rows-body img")
        assert len(images) == 4 and all(image.get_attribute("naturalWidth") != "0" for image in images)

        header = driver.find_element(By.CSS_SELECTOR, "th[data-key=iou]")
        header.click()  # already sorted by IoU ascending: now descending
        ious = [float(row[4]) for row in shown()]
        assert ious == sorted(ious, reverse=True)
        # Data text shows as itself, never as markup.
        driver.find_element(By.NAME, "pictured").click()
        Select(driver.find_element(By.NAME, "split")).select_by_value("")
        driver.find_element(By.NAME, "search").send_keys("alert")
        assert [row[2] for row in shown()] == [EVIL]
        assert driver.find_elements(By.CSS_SELECTOR, "#rows-body script") == []
    finally:
        driver.quit()


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
