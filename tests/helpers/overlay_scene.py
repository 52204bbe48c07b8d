"""A small picture to draw overlays on, shared by the overlay and gallery tests."""

import numpy as np


def scene(height=120, width=200):
    """A flat grey photo, a target square, an ignore strip and a shifted prediction."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    target = np.zeros((height, width), dtype=np.uint8)
    target[height // 4: height // 2, width // 4: width // 2] = 1
    target[-height // 8:, :] = 255
    prediction = np.zeros((height, width), dtype=bool)
    prediction[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = True
    return image, target, prediction
