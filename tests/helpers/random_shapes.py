"""Random LabelMe shapes that hit every rule of docs/fidelity.md M3 (shared by the mask tests)."""

from __future__ import annotations

import numpy as np

LABELS = ["target", "Target", "ignore", "IGNORE_region", "flag", "Flag", "other"]


def random_shapes(rng: np.random.Generator, width: int, height: int) -> list[dict]:
    shapes = []
    for _ in range(int(rng.integers(1, 6))):
        kind = rng.random()
        label = str(rng.choice(LABELS))
        if kind < 0.2 and shapes:
            # An exact copy moved elsewhere: equal areas, so the tie order matters.
            source = np.array(shapes[-1]["points"])
            points = source + rng.integers(-20, 20, 2)
        elif kind < 0.35 and shapes:
            # A small shape inside the previous one (ignore inside target and the like).
            centre = np.array(shapes[-1]["points"]).mean(axis=0)
            points = centre + rng.normal(0, 3, (int(rng.integers(3, 6)), 2))
        else:
            count = int(rng.integers(1, 12))  # 1 and 2 points are degenerate but legal
            centre = rng.uniform(-0.2, 1.2, 2) * [width, height]  # some centres outside
            points = centre + rng.normal(0, rng.uniform(1, 0.5 * max(width, height)), (count, 2))
        if rng.random() < 0.5:
            points = np.round(points)  # integer coordinates, as many tools write them
        shapes.append({"label": label, "points": points.tolist(), "group_id": None,
                       "shape_type": "polygon", "flags": {}})
    return shapes
