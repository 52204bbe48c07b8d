"""Image inputs of a LISA-style model: the SAM view and the CLIP view of one RGB image.

SAM view (`sam_input`), as LISA's `ResizeLongestSide` + `preprocess` do it:
  1. scale = L / max(h, w); new side = int(old * scale + 0.5)   (L = 1024 for SAM ViT-H)
  2. PIL `Image.resize((new_w, new_h), Image.BILINEAR)` on the RGB uint8 image (PIL
     antialiases when it shrinks)
  3. (x - mean) / std on 0-255 pixels, mean (123.675, 116.28, 103.53),
     std (58.395, 57.12, 57.375), in float32
  4. zero-pad bottom and right to L x L (after normalising, so padding is exactly 0)
The model needs `resize` = (new_h, new_w) to crop its low-resolution masks back before
upsampling to `original_size` = (h, w).

CLIP view (`ClipInput` / `clip_input`): what transformers' CLIP image processor computes
(LISA calls `CLIPImageProcessor.preprocess`): shortest side S (short = S, long =
int(S * long / short)) with PIL bicubic, centre crop S x S at ((h - S) // 2, (w - S) // 2),
rescale by 1/255 (float64, cast to float32), normalise with the OpenAI CLIP mean/std in
float32. `ClipInput.reference` runs the processor itself (`clip_processor`, built locally,
nothing downloaded) and the tests check both agree bit for bit.

Speed: after resizing, pixels are uint8 again, so the per-pixel float arithmetic (SAM's
step 3, CLIP's rescale + normalise) has only 256 possible results per channel. We
compute those 256 values once with the very same float operations and apply them as a
lookup table: bit-identical output in a fraction of the time.

Images are expected as decoded by `decode_rgb`: OpenCV's decoder (EXIF orientation
applied, like `cv2.imread`) converted BGR -> RGB, so their size equals the shard json's.

Shape bound (`check_view_size`): the CLIP view scales the short side up to S, so a sliver
is a memory bomb within any pixel bound (a 1 x 100000 image becomes 224 x 22,400,000
pixels, 15 GB), and SAM rounds a sliver's short side down to 0. Images more than
`MAX_ASPECT_RATIO` times longer than wide (or the reverse) are refused before decoding.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from keyseg.images import decode_image

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Photos stay far below 100:1; at 100:1 the CLIP resize is 224 x 22,400 pixels (15 MB).
MAX_ASPECT_RATIO = 100


def decode_rgb(data: bytes) -> np.ndarray:
    """RGB uint8 (h, w, 3) exactly as `cv2.imread` + BGR->RGB gives it (raises ImageError)."""
    return cv2.cvtColor(decode_image(data), cv2.COLOR_BGR2RGB)


def sam_resize_shape(height: int, width: int, size: int = 1024) -> tuple[int, int]:
    """(new_h, new_w) with the longest side `size`; SAM rounds with int(x + 0.5)."""
    scale = size * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def check_view_size(height: int, width: int, sam_size: int = 1024) -> None:
    """ValueError for an image too elongated for the two views (see the module docstring)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size {width}x{height} is not positive")
    if max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        raise ValueError(f"{width}x{height} is more elongated than {MAX_ASPECT_RATIO}:1")
    if min(sam_resize_shape(height, width, sam_size)) < 1:
        raise ValueError(f"{width}x{height} has a side that rounds to 0 pixels in the {sam_size}px SAM view")


def _check_rgb(image_rgb: np.ndarray) -> None:
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (h, w, 3) image, got {image_rgb.dtype} {image_rgb.shape}")


def _apply_lut(planes_hwc: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    """out[c] = lut[c][planes_hwc[..., c]]; `out` may be a row-strided view (cv2 writes in place)."""
    for channel, plane in enumerate(cv2.split(planes_hwc)):
        cv2.LUT(plane, lut[channel], dst=out[channel])


def _sam_lut() -> np.ndarray:
    # Exactly LISA's float32 torch arithmetic, evaluated on every possible pixel value.
    values = torch.arange(256, dtype=torch.float32).view(1, 1, 256).expand(3, 1, 256)
    mean = torch.tensor(SAM_PIXEL_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD, dtype=torch.float32).view(-1, 1, 1)
    return ((values - mean) / std).reshape(3, 1, 256, 1).numpy().copy()


def sam_input(image_rgb: np.ndarray, size: int = 1024, lut: np.ndarray | None = None
              ) -> tuple[torch.Tensor, tuple[int, int]]:
    """float32 (3, size, size) SAM input and the (new_h, new_w) it was resized to.

    Steps in the module docstring. `lut` is `SamInput`'s cached table (recomputed if None).
    """
    _check_rgb(image_rgb)
    height, width = image_rgb.shape[:2]
    check_view_size(height, width, size)
    new_h, new_w = sam_resize_shape(height, width, size)
    if (new_h, new_w) == (height, width):
        resized = image_rgb  # PIL returns a copy of the same pixels for a same-size resize
    else:
        resized = np.asarray(Image.fromarray(image_rgb).resize((new_w, new_h), Image.BILINEAR))
    out = torch.empty((3, size, size), dtype=torch.float32)
    canvas = out.numpy()
    canvas[:, new_h:, :] = 0.0  # zero only the padding: the table fills the rest
    canvas[:, :new_h, new_w:] = 0.0
    _apply_lut(resized, _sam_lut() if lut is None else lut, canvas[:, :new_h, :new_w])
    return out, (new_h, new_w)


class SamInput:
    """`sam_input` with its lookup table computed once."""

    def __init__(self, size: int = 1024):
        self.size = size
        self.lut = _sam_lut()

    def __call__(self, image_rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        return sam_input(image_rgb, self.size, self.lut)


def clip_processor(size: int = 224):
    """transformers' CLIP image processor for side `size` (built locally, nothing downloaded)."""
    try:  # transformers 5 names the PIL/NumPy backend (its default class wants torchvision)
        from transformers import CLIPImageProcessorPil as processor_class
    except ImportError:  # transformers 4: the PIL-based class is the default one
        from transformers import CLIPImageProcessor as processor_class
    return processor_class(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                           image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def clip_resize_shape(height: int, width: int, size: int = 224) -> tuple[int, int]:
    """(h, w) after the shortest-side resize: short side `size`, long side int(size * long / short)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _clip_lut() -> np.ndarray:
    # The processor's arithmetic on every uint8 value: `rescale` multiplies in float64 and
    # casts to float32, `normalize` subtracts/divides in float32 (the image's dtype).
    scaled = (np.arange(256, dtype=np.uint8).astype(np.float64) * (1 / 255)).astype(np.float32)
    mean, std = np.asarray(CLIP_MEAN, dtype=np.float32), np.asarray(CLIP_STD, dtype=np.float32)
    return ((scaled[None, :] - mean[:, None]) / std[:, None]).reshape(3, 1, 256, 1).copy()


class ClipInput:
    """The CLIP image processor's output (see the module docstring), without importing
    transformers in every data worker (~5 s per process); `reference` runs the processor."""

    def __init__(self, size: int = 224):
        self.size = size
        self.lut = _clip_lut()

    def __call__(self, image_rgb: np.ndarray) -> torch.Tensor:
        """float32 (3, size, size), equal to `reference(image_rgb)`."""
        _check_rgb(image_rgb)
        check_view_size(*image_rgb.shape[:2])
        new_h, new_w = clip_resize_shape(*image_rgb.shape[:2], self.size)
        # The processor resizes through PIL: bicubic, reducing_gap=None.
        resized = np.asarray(Image.fromarray(image_rgb).resize((new_w, new_h), resample=Image.BICUBIC))
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2  # the processor's centre crop
        crop = np.ascontiguousarray(resized[top:top + self.size, left:left + self.size])
        out = torch.empty((3, self.size, self.size), dtype=torch.float32)
        _apply_lut(crop, self.lut, out.numpy())
        return out

    def reference(self, image_rgb: np.ndarray) -> torch.Tensor:
        """`clip_processor(size).preprocess(image)`, slowly: what `__call__` must equal."""
        pixels = clip_processor(self.size).preprocess(image_rgb, return_tensors="pt")["pixel_values"][0]
        return pixels.to(torch.float32)


def clip_input(image_rgb: np.ndarray, size: int = 224) -> torch.Tensor:
    """One-off CLIP input; loops should hold a `ClipInput` instead."""
    return ClipInput(size)(image_rgb)
