"""The README's picture picks from a demo gallery."""

from pipelines.demo import gallery_picks


def test_gallery_picks_the_best_rows_then_the_worst(tmp_path):
    # A gallery of 3 worst (0-2) then 3 best (3-5); keys sort differently from the numbers.
    for number, key in enumerate(["z-val-9", "a-test-1", "m-val-4", "b-test-2", "y-val-7", "c-test-3"]):
        (tmp_path / f"{key}_{number}.png").write_bytes(b"")
    picks = [path.name for path in gallery_picks(tmp_path, 3)]
    assert picks == ["b-test-2_3.png", "y-val-7_4.png", "z-val-9_0.png"]
    assert [path.name for path in gallery_picks(tmp_path, 1)] == ["z-val-9_0.png"]
