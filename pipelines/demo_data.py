"""Write a small deterministic demo data dir (ReasonSeg + refCOCO, native layouts).

Layout under ``config.out``::

    reason_seg/ReasonSeg/{train,val,test}/<name>.{jpg,json}
    reason_seg/ReasonSeg/explanatory/train.json
    refer_seg/images/mscoco/images/train2014/COCO_train2014_<id>.jpg
    refer_seg/refcoco/instances.json
    refer_seg/refcoco/refs(unc).p
    demo_data_config.json
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from keyseg.demo import write_json, write_reasonseg, write_refcoco
from keyseg.runner import StageResult, activity

CONFIG_FILE = "demo_data_config.json"
MIN_IMAGES = 4
MIN_SIDE = 32


@dataclass
class DemoDataConfig:
    out: Path  # output root (the "data dir")
    seed: int = 0
    images: int = 48  # ReasonSeg images (train/val/test = 50/25/25 %); refCOCO gets as many
    width: int = 320  # display size (after EXIF orientation)
    height: int = 240
    show_progress: bool = True

    def validate(self) -> None:
        if int(self.seed) < 0:
            raise ValueError("seed must be >= 0")
        if int(self.images) < MIN_IMAGES:
            raise ValueError(f"images must be >= {MIN_IMAGES}")
        if int(self.width) < MIN_SIDE or int(self.height) < MIN_SIDE:
            raise ValueError(f"width and height must be >= {MIN_SIDE}")

    def to_json(self) -> dict[str, Any]:
        """Field order as declared; paths as str. Display options are not part of the data."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "show_progress":
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


@dataclass
class DemoDataResult(StageResult):
    summary: dict  # {"out", "config", "reason_seg": {...}, "refcoco": {...}}


def run(config: DemoDataConfig, console: Console | None = None) -> DemoDataResult:
    """Generate everything; same config => byte-identical files."""
    console = console or Console(stderr=True)
    config.validate()
    out = Path(config.out)
    seed, n, w, h = int(config.seed), int(config.images), int(config.width), int(config.height)
    with activity(console, config.show_progress, f"writing demo data to {out}"):
        reason = write_reasonseg(out / "reason_seg", seed, n, w, h)
        refer = write_refcoco(out / "refer_seg", seed, n, w, h)
        config_path = write_json(out / CONFIG_FILE, config.to_json())
    summary = {"out": str(out), "config": str(config_path), "reason_seg": reason, "refcoco": refer}
    splits = "/".join(str(count) for count in reason["splits"].values())
    console.print(f"demo data written to {escape(str(out))}: ReasonSeg train/val/test {splits} images, "
                  f"refCOCO {refer['images']} images with {sum(refer['refs_per_split'].values())} refs",
                  soft_wrap=True)
    return DemoDataResult(summary=summary)
