"""The README's picture picks from a demo gallery."""

import json

from pipelines.demo import gallery_picks


def test_gallery_picks_the_best_rows_then_the_worst(tmp_path):
    listing = {"worst": [{"image": f"images/w{n}.png"} for n in range(3)],
               "best": [{"image": f"images/b{n}.png"} for n in range(3)]}
    (tmp_path / "gallery.json").write_text(json.dumps(listing))
    picks = [path.relative_to(tmp_path).as_posix() for path in gallery_picks(tmp_path, 3)]
    assert picks == ["images/b0.png", "images/b1.png", "images/w0.png"]
    assert [path.name for path in gallery_picks(tmp_path, 1)] == ["w0.png"]


def test_gallery_picks_nothing_without_a_gallery_listing(tmp_path):
    assert gallery_picks(tmp_path, 3) == []
