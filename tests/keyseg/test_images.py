import io

import cv2
import numpy as np
import pytest
from PIL import Image

from keyseg.images import ImageError, image_info


def jpeg_bytes(width, height, orientation=None, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def opencv_size(data):
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return decoded.shape[1], decoded.shape[0]


@pytest.mark.parametrize("orientation", [None, 1, 2, 3, 4, 5, 6, 7, 8])
def test_jpeg_size_matches_opencv_imread_with_exif(tmp_path, orientation):
    data = jpeg_bytes(48, 30, orientation)
    path = tmp_path / "image.jpg"
    path.write_bytes(data)
    info = image_info(data)
    height, width = cv2.imread(str(path)).shape[:2]
    assert (info.width, info.height) == (width, height) == opencv_size(data)
    assert not info.truncated


def test_png_falls_back_to_opencv_decode():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((20, 33, 3), np.uint8)).save(buffer, format="PNG")
    info = image_info(buffer.getvalue())
    assert (info.width, info.height, info.format) == (33, 20, "PNG")


def test_decode_option_gives_the_same_size():
    data = jpeg_bytes(40, 25, orientation=6)
    assert image_info(data, decode=True).width == image_info(data).width == 25


@pytest.mark.parametrize("data,reason", [(b"", "empty"), (b"not an image at all", "not a readable image")])
def test_bad_images_raise_with_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        image_info(data)


def test_truncated_jpeg_is_flagged():
    data = jpeg_bytes(64, 64)
    info = image_info(data[: len(data) // 2])
    assert info.truncated and (info.width, info.height) == (64, 64)
