import re
from pathlib import Path

import numpy as np

from keyseg.evaluation.gallery import GalleryItem, select_extremes, triptych, write_gallery


def item(key, iou, query="the red circle"):
    image = np.full((60, 80, 3), 120, np.uint8)
    target = np.zeros((60, 80), np.uint8)
    target[10:30, 10:30] = 1
    target[40:45, 40:45] = 255
    prediction = np.zeros((60, 80), bool)
    prediction[15:35, 15:35] = True
    return GalleryItem(key=key, split="reasonseg:val", query=query, iou=iou, intersection=225, union=575,
                       image_rgb=image, target=target, prediction=prediction, keyword="circle",
                       predicted_keyword="circle")


def test_triptych_shows_three_panels_and_survives_unicode():
    picture = triptych(item("a", 0.4).image_rgb, item("a", 0.4).target, item("a", 0.4).prediction,
                       "caf\u00e9 \u2019quoted\u2019 shape", 0.4)
    assert picture.ndim == 3 and picture.shape[1] > 2.5 * picture.shape[0] * 80 / 60 * 0.8
    assert len({tuple(px) for px in picture.reshape(-1, 3)[::97]}) > 5  # tints, not a flat copy


def test_gallery_page_is_offline_escaped_and_links_existing_images(tmp_path):
    worst = [item("k1", 0.0, "<script>alert(1)</script> & more"), item("k2", 0.1)]
    best = [item("k3", 0.9)]
    index = write_gallery(tmp_path / "g", worst, best, title="demo",
                          summary={"reasonseg:val": {"giou": 0.4321, "ciou": 0.5, "count": 3}})
    page = index.read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page and "&amp; more" in page
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert len(sources) == 3 and all((index.parent / source).is_file() for source in sources)
    assert "43.2" in page or "0.432" in page


def test_select_extremes_is_deterministic_and_disjoint():
    class Record:
        def __init__(self, key, iou):
            self.key, self.iou = key, iou

    records = [Record(f"k{i}", iou) for i, iou in enumerate([0.5, 0.1, 0.9, 0.1, 0.7])]
    worst, best = select_extremes(records, 2)
    assert [r.iou for r in worst] == [0.1, 0.1] and [r.iou for r in best] == [0.9, 0.7]
    worst, best = select_extremes(records[:3], 2)
    assert not {id(r) for r in worst} & {id(r) for r in best}
