import zlib

import numpy as np
import pytest

from keyseg.images import max_image_pixels, set_max_image_pixels
from keyseg.masks.png import encode_png, png_size, read_mask_png


def test_round_trip_and_header_size(tmp_path):
    mask = np.zeros((7, 9), np.uint8)
    mask[2:4, 3:5] = 1
    mask[0, 0] = 255
    data = encode_png(mask)
    assert png_size(data) == (9, 7)
    (tmp_path / "m.png").write_bytes(data)
    np.testing.assert_array_equal(read_mask_png(tmp_path / "m.png"), mask)


def test_a_png_bomb_is_refused_from_its_header(tmp_path):
    ihdr = (30000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    header = b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
    # A real bomb would follow with a deflate stream of zeros; the header alone must be enough to refuse it.
    (tmp_path / "bomb.png").write_bytes(header + zlib.compress(b"\0" * 1_000_000, 9))
    with pytest.raises(ValueError, match="30000x30000 = 900,000,000 pixels, over the bound"):
        read_mask_png(tmp_path / "bomb.png")


def test_the_bound_follows_set_max_image_pixels(tmp_path):
    (tmp_path / "m.png").write_bytes(encode_png(np.zeros((10, 10), np.uint8)))
    previous = max_image_pixels()
    set_max_image_pixels(99)
    try:
        with pytest.raises(ValueError, match="over the bound of 99"):
            read_mask_png(tmp_path / "m.png")
    finally:
        set_max_image_pixels(previous)
    assert read_mask_png(tmp_path / "m.png").shape == (10, 10)


def test_not_a_png(tmp_path):
    (tmp_path / "x.png").write_bytes(b"GIF89a....")
    with pytest.raises(ValueError, match="not a PNG"):
        read_mask_png(tmp_path / "x.png")
