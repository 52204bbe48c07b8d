"""The one mask drawer: gallery triptychs, prepare's and predict's overlays, one colour convention."""

from collections import Counter

import cv2
import numpy as np
import pytest

from fixtures import square, write_reasonseg
from keyseg.evaluation.gallery import GalleryItem, write_gallery
from keyseg.masks.overlay import (
    BANNER_HEIGHT,
    GAP,
    IGNORE_RGB,
    OUTLINE_RGB,
    OVERLAY_HEIGHT,
    PANEL_HEIGHT,
    PREDICTION_RGB,
    TARGET_RGB,
    TINT_ALPHA,
    ascii_safe,
    overlay_png,
    overlay_strip,
    panel_width,
    prediction_overlay,
    target_overlay,
    triptych,
)
from pipelines.prepare import PrepareConfig, run
from overlay_scene import scene



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


# --- triptych (the gallery's picture) -----------------------------------------------------


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
    square_ = (slice(height // 4, height // 2), slice(width // 4, width // 2))
    predicted = (slice(height // 3, 2 * height // 3), slice(width // 3, 2 * width // 3))
    ignore = (slice(height - height // 8, height), slice(0, width))
    background = (slice(0, height // 5), slice(3 * width // 4, width))

    # Image panel: untouched grey everywhere.
    assert np.abs(panel_region(picture, 0, *square_, height, width) - 128).max() <= 2
    # Ground truth: green target, red ignore, grey background.
    assert tinted_towards(panel_region(picture, 1, *square_, height, width), TARGET_RGB)
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
def test_odd_captions_do_not_crash(caption):
    image, target, prediction = scene()
    assert triptych(image, target, prediction, caption, float("nan")).shape[0] == BANNER_HEIGHT + PANEL_HEIGHT
    assert target_overlay(image, target, [], caption).shape[0] == BANNER_HEIGHT + OVERLAY_HEIGHT
    assert prediction_overlay(image, prediction, caption).shape[0] == BANNER_HEIGHT + OVERLAY_HEIGHT


def test_ascii_safe():
    assert ascii_safe("café\n☕") == "cafe ?"
    assert all(" " <= c <= "~" for c in ascii_safe("漢字 ∑ ü\t\x00"))


def test_mismatched_or_float_inputs_are_refused():
    image, target, prediction = scene()
    with pytest.raises(ValueError):
        triptych(image, target, prediction[:-1], "q", 0.0)
    with pytest.raises(ValueError):
        triptych(image.astype(np.float32), target, prediction, "q", 0.0)
    with pytest.raises(ValueError):
        target_overlay(image, target[None], [], "q")


def test_image_of_other_size_and_greyscale_is_drawn_at_the_mask_size():
    image, target, prediction = scene(120, 200)
    picture = triptych(image[:60, :100, 0], target, prediction, "q", 0.0)
    assert picture.shape == (BANNER_HEIGHT + PANEL_HEIGHT, 3 * panel_width(120, 200) + 2 * GAP, 3)
    overlay = target_overlay(image[:60, :100], target, [], "q")
    assert overlay.shape == (BANNER_HEIGHT + OVERLAY_HEIGHT, panel_width(120, 200, OVERLAY_HEIGHT), 3)


# --- prepare's and predict's overlays -----------------------------------------------------


def overlay_box(picture, rows, cols, height):
    """Pixels of a single overlay (banner on top) for full-resolution rows/cols, a little inside."""
    scale = OVERLAY_HEIGHT / height
    top, bottom = BANNER_HEIGHT + int(rows.start * scale), BANNER_HEIGHT + int(rows.stop * scale)
    left, right = int(cols.start * scale), int(cols.stop * scale)
    return picture[top + 4: bottom - 4, left + 4: right - 4].reshape(-1, 3).astype(int)


def test_target_overlay_tints_target_and_ignore_and_draws_given_outlines():
    height, width = 120, 200
    image, target, _ = scene(height, width)
    rows, cols = slice(height // 4, height // 2), slice(width // 4, width // 2)
    picture = target_overlay(image, target, [], "the square")
    assert tinted_towards(overlay_box(picture, rows, cols, height), TARGET_RGB)
    assert tinted_towards(overlay_box(picture, slice(height - height // 8, height), slice(0, width), height), IGNORE_RGB)
    # A polygon outline given by the annotation is drawn where it is, not traced from the mask.
    polygon = np.array([[150, 10], [190, 10], [190, 40], [150, 40]], dtype=np.int32)
    outlined = target_overlay(image, target, [polygon], "the square")
    scale = OVERLAY_HEIGHT / height
    corner = (BANNER_HEIGHT + round(10.5 * scale - 0.5), round(150.5 * scale - 0.5))
    near = outlined[corner[0] - 1: corner[0] + 2, corner[1] - 1: corner[1] + 2].reshape(-1, 3).astype(int)
    assert np.abs(near - np.array(OUTLINE_RGB)).sum(axis=1).min() < 60


def test_prediction_overlay_is_orange_where_predicted():
    height, width = 120, 200
    image, _, prediction = scene(height, width)
    picture = prediction_overlay(image, prediction, "where?")
    inside = overlay_box(picture, slice(height // 3, 2 * height // 3), slice(width // 3, 2 * width // 3), height)
    outside = overlay_box(picture, slice(0, height // 5), slice(3 * width // 4, width), height)
    assert tinted_towards(inside, PREDICTION_RGB) and np.abs(outside - 128).max() <= 2


def test_overlay_strip_pads_shorter_panels():
    strip = overlay_strip([np.full((10, 5, 3), 200, np.uint8), np.full((6, 3, 3), 100, np.uint8)], gap=2)
    assert strip.shape == (10, 10, 3) and (strip[6:, 7:] == 0).all() and (strip[:, 5:7] == 0).all()


def test_overlay_png_writes_the_colours_not_their_bgr_mirror():
    picture = np.zeros((4, 4, 3), np.uint8)
    picture[:] = IGNORE_RGB
    decoded = cv2.imdecode(np.frombuffer(overlay_png(picture), np.uint8), cv2.IMREAD_COLOR)
    assert tuple(int(v) for v in decoded[0, 0, ::-1]) == IGNORE_RGB


# --- one colour convention across prepare, predict and the gallery ---------------------------


def blend(colour, grey=128):
    """A fully covered pixel of a flat grey photo under a tint of `colour`."""
    return tuple(int(grey * (1 - TINT_ALPHA) + c * TINT_ALPHA) for c in colour)


def colours(png_path, top, bottom, left, right):
    """The distinct RGB colours of a box of a PNG file, most common first."""
    bgr = cv2.imread(str(png_path))
    box = bgr[top:bottom, left:right, ::-1].reshape(-1, 3)
    return [colour for colour, _ in Counter(map(lambda p: tuple(int(v) for v in p), box)).most_common()]


def test_gallery_prepare_and_predict_pictures_share_one_colour_convention(tmp_path):
    """The same flat grey scene through `keyseg prepare --visualize`, the gallery and the
    predict overlay: target, ignore and prediction pixels come out of the PNG files alike.

    Green is its own BGR mirror, so the red ignore and the orange prediction are what
    would show a drawer that swapped the channel order.
    """
    height, width = 48, 64
    target_box, ignore_box = (4, 4, 20), (36, 20, 20)  # x, y, size
    data, out = tmp_path / "data", tmp_path / "out"
    _, image_path = write_reasonseg(data, "val", "flat", [square(*target_box), square(*ignore_box, label="ignore")],
                                    width, height)
    grey = np.full((height, width, 3), 128, np.uint8)
    image_path.write_bytes(cv2.imencode(".jpg", grey)[1].tobytes())  # a flat JPEG decodes exactly
    run(PrepareConfig(data_dir=data, out=out, show_progress=False, visualize=1))
    (prepared,) = (out / "reasonseg/val/overlays").glob("*.png")

    mask = np.zeros((height, width), np.uint8)
    for (x, y, size), value in ((target_box, 1), (ignore_box, 255)):
        mask[y: y + size + 1, x: x + size + 1] = value
    predicted = np.zeros((height, width), bool)
    predicted[4:25, 4:25] = True
    row = {"split": "val", "id": "flat", "query": "q", "iou": 0.5, "intersection": 1, "union": 2}
    gallery = write_gallery(tmp_path / "gallery", [row],
                            {0: GalleryItem("flat", "q", 0.5, grey, mask, predicted)},
                            {"worst": [0], "best": []}, "colours")
    (triptych_png,) = (gallery.parent / "images").glob("*.png")
    predict_png = tmp_path / "predict.png"
    predict_png.write_bytes(overlay_png(prediction_overlay(grey, predicted, "q")))

    def inside(png, x, y, size, panel_height, panel_left=0):
        """The colours well inside a full-resolution square of one panel of a picture."""
        scale = panel_height / height
        return colours(png, BANNER_HEIGHT + int((y + 3) * scale), BANNER_HEIGHT + int((y + size - 3) * scale),
                       panel_left + int((x + 3) * scale), panel_left + int((x + size - 3) * scale))

    pw = panel_width(height, width)
    # Target: a flat tint (no outline inside), the same in prepare's overlay and the gallery.
    assert inside(prepared, *target_box, OVERLAY_HEIGHT) == [blend(TARGET_RGB)]
    assert inside(triptych_png, *target_box, PANEL_HEIGHT, pw + GAP) == [blend(TARGET_RGB)]
    # Ignore: the red tint and the red hatching, in both.
    assert set(inside(prepared, *ignore_box, OVERLAY_HEIGHT)) == {blend(IGNORE_RGB), IGNORE_RGB}
    assert set(inside(triptych_png, *ignore_box, PANEL_HEIGHT, pw + GAP)) == {blend(IGNORE_RGB), IGNORE_RGB}
    # Prediction: the same orange in predict's overlay and the gallery's prediction panel.
    assert inside(predict_png, 4, 4, 20, OVERLAY_HEIGHT) == [blend(PREDICTION_RGB)]
    assert inside(triptych_png, 4, 4, 20, PANEL_HEIGHT, 2 * (pw + GAP)) == [blend(PREDICTION_RGB)]


def test_masks_stay_visible_on_an_image_of_the_mask_colours():
    """On a photo coloured like the tints themselves (orange on orange), the mask panels
    still separate masked from unmasked pixels: they tint a grey copy of the image."""
    height, width = 120, 200
    _, target, prediction = scene(height, width)
    for colour in (PREDICTION_RGB, TARGET_RGB):
        image = np.empty((height, width, 3), np.uint8)
        image[:] = colour
        picture = triptych(image, target, prediction, "q", 0.5).astype(int)
        pw = panel_width(height, width)
        panel = picture[BANNER_HEIGHT:, 2 * (pw + GAP):]
        inside = panel[PANEL_HEIGHT * 2 // 5, pw // 2]  # predicted, not on an outline
        outside = panel[PANEL_HEIGHT // 10, pw * 9 // 10]
        assert np.abs(inside - outside).max() > 30, (colour, inside, outside)  # tinting the photo itself: 0
