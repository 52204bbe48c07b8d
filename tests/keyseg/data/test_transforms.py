"""SAM and CLIP inputs against the reference rules, computed the slow, obvious way."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from keyseg.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    ClipInput,
    SamInput,
    clip_input,
    clip_processor,
    clip_resize_shape,
    decode_rgb,
    sam_input,
    sam_resize_shape,
)


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 6, 2), max(width // 6, 2), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR)).copy()


def lisa_sam_input(image: np.ndarray, size: int) -> torch.Tensor:
    """LISA's ResizeLongestSide + preprocess, written out step by step."""
    height, width = image.shape[:2]
    scale = size * 1.0 / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    resized = np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    x = torch.from_numpy(resized).permute(2, 0, 1).contiguous().float()
    x = (x - torch.Tensor(SAM_PIXEL_MEAN).view(-1, 1, 1)) / torch.Tensor(SAM_PIXEL_STD).view(-1, 1, 1)
    return F.pad(x, (0, size - new_w, 0, size - new_h))


@pytest.mark.parametrize("height, width, size, expected", [
    (750, 1000, 1024, (768, 1024)),
    (1000, 750, 1024, (1024, 768)),
    (100, 64, 128, (128, 82)),  # 64 * 1.28 = 81.92 -> 82
    (64, 100, 128, (82, 128)),
    (33, 160, 128, (26, 128)),  # 33 * 0.8 = 26.4 -> 26
    (128, 128, 128, (128, 128)),
    (300, 199, 128, (128, 85)),  # 199 * 128 / 300 = 84.906 -> 85
])
def test_sam_resize_shape_rounds_half_up(height, width, size, expected):
    assert sam_resize_shape(height, width, size) == expected


@pytest.mark.parametrize("height, width", [(96, 160), (160, 64), (77, 131), (128, 128), (200, 150)])
def test_sam_input_matches_lisa_preprocess(height, width):
    image = smooth_image(height, width, seed=height + width)
    tensor, resize = sam_input(image, 128)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 128, 128)
    assert resize == sam_resize_shape(height, width, 128)
    assert torch.equal(tensor, lisa_sam_input(image, 128))
    assert torch.equal(SamInput(128)(image)[0], tensor)


def test_sam_input_normalises_and_pads_with_zeros():
    colour = (200, 17, 103)
    image = np.empty((40, 100, 3), dtype=np.uint8)
    image[:] = colour
    tensor, (new_h, new_w) = sam_input(image, 128)
    assert (new_h, new_w) == (51, 128)  # 40 * 1.28 = 51.2
    for channel in range(3):
        expected = np.float32((np.float32(colour[channel]) - np.float32(SAM_PIXEL_MEAN[channel]))
                              / np.float32(SAM_PIXEL_STD[channel]))
        assert torch.all(tensor[channel, :new_h, :new_w] == torch.tensor(expected))
    assert torch.count_nonzero(tensor[:, new_h:, :]) == 0
    assert torch.count_nonzero(tensor[:, :, new_w:]) == 0


def test_sam_input_rejects_non_rgb():
    with pytest.raises(ValueError):
        sam_input(np.zeros((10, 10), dtype=np.uint8), 32)


@pytest.mark.parametrize("height, width", [(96, 160), (160, 64), (31, 33), (64, 64), (10, 150)])
def test_clip_input_equals_clip_image_processor(height, width):
    image = smooth_image(height, width, seed=height * width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers 5 warns it falls back to the PIL backend
        from transformers import CLIPImageProcessor

        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    expected = processor.preprocess(image, return_tensors="pt")["pixel_values"][0]
    ours = ClipInput(32)
    assert torch.equal(ours(image), expected.float())
    assert torch.equal(ours.reference(image), expected.float())
    assert torch.equal(clip_input(image, 32), expected.float())


def test_clip_constants_and_rules_are_the_processors():
    from transformers.image_transforms import get_resize_output_image_size
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    assert list(CLIP_MEAN) == list(OPENAI_CLIP_MEAN) and list(CLIP_STD) == list(OPENAI_CLIP_STD)
    processor = clip_processor(32)
    assert list(processor.image_mean) == list(CLIP_MEAN) and list(processor.image_std) == list(CLIP_STD)
    assert processor.resample == Image.BICUBIC and processor.rescale_factor == 1 / 255
    for height, width in [(96, 160), (160, 96), (33, 31), (64, 64), (10, 150), (1000, 750), (333, 1000)]:
        probe = np.empty((height, width, 3), dtype=np.uint8)
        expected = get_resize_output_image_size(probe, 32, default_to_square=False, input_data_format="channels_last")
        assert clip_resize_shape(height, width, 32) == tuple(expected)


def test_decode_rgb_is_opencv_with_exif_orientation():
    pixels = smooth_image(40, 70, seed=3)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: displayed size is 40 wide, 70 high
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, exif=exif)
    data = buffer.getvalue()
    rgb = decode_rgb(data)
    assert rgb.shape == (70, 40, 3)
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(rgb, expected)


@pytest.mark.parametrize("height, width", [(1, 2000), (2000, 1), (3, 400)])
def test_sliver_images_are_refused_before_any_resize(height, width):
    # The CLIP view scales the short side up to S: a 1 x 2000 sliver would become
    # 224 x 448,000 pixels. Refused by shape, so nothing is allocated.
    image = np.zeros((height, width, 3), np.uint8)
    with pytest.raises(ValueError, match="more elongated than 100:1"):
        ClipInput(224)(image)
    with pytest.raises(ValueError, match="more elongated than 100:1"):
        sam_input(image, 1024)


def test_sam_view_side_rounding_to_zero_is_refused():
    # 80:1 is within the aspect bound, but a 32px SAM view would be int(0.4 + 0.5) = 0 pixels tall.
    image = np.zeros((1, 80, 3), np.uint8)
    with pytest.raises(ValueError, match="rounds to 0 pixels in the 32px SAM view"):
        sam_input(image, 32)
    assert sam_input(image, 128)[1] == (2, 128)
    assert ClipInput(16)(image).shape == (3, 16, 16)
