"""Write a small deterministic demo data dir in the native layouts of the chosen sources.

By default one source of each kind LISA trains on (ReasonSeg, refCOCO, ADE20K and
LLaVA-Instruct: reason_seg, refer_seg, sem_seg, vqa), as `make demo` trains on them;
`--source` picks any sources of the LISA mixture instead. Layout
under ``config.out`` (the data dir), as the references lay them out::

    reason_seg/ReasonSeg/{train,val,test}/<name>.{jpg,json}, explanatory/train.json
    refer_seg/refcoco/{instances.json,refs(unc).p}, refer_seg/images/mscoco/images/train2014/
    refer_seg/refclef/{instances.json,refs(unc).p,refs(berkeley).p}, refer_seg/images/saiapr_tc-12/
    ade20k/{images,annotations}/training/, cocostuff/train2017/ over coco/train2017/,
    mapillary/{config_v2.0.json,training/}, vlpart/{paco,pascal_part}/,
    llava_dataset/llava_instruct_150k.json over coco/train2017/
    demo_data_config.json

Each source's writer lives in keyseg/demo/; each includes the awkward cases its reader must
handle (see docs/sources.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from keyseg.demo import write_json, write_reasonseg, write_refcoco
from keyseg.demo.llava import write_llava_instruct
from keyseg.demo.parts import write_paco_lvis, write_pascal_part
from keyseg.demo.refclef import write_refclef
from keyseg.demo.semseg import write_ade20k, write_cocostuff, write_mapillary
from keyseg.runner import StageResult, activity

CONFIG_FILE = "demo_data_config.json"
# Source name -> (writer, folder under the data dir it is given). Order: the order written.
WRITERS = {
    "reasonseg": (write_reasonseg, "reason_seg"),
    "refcoco": (write_refcoco, "refer_seg"),
    "refclef": (write_refclef, "refer_seg"),
    "ade20k": (write_ade20k, ""),
    "cocostuff": (write_cocostuff, ""),
    "mapillary": (write_mapillary, ""),
    "paco_lvis": (write_paco_lvis, ""),
    "pascal_part": (write_pascal_part, ""),
    "llava_instruct_150k": (write_llava_instruct, ""),
}
DEFAULT_SOURCES = ("reasonseg", "refcoco", "ade20k", "llava_instruct_150k")
# Writers that can plant files a reader must refuse (`faults`); the others plant only
# cases that prepare with warnings.
FAULT_WRITERS = ("ade20k", "cocostuff", "mapillary", "llava_instruct_150k")
MIN_IMAGES = 4
MIN_SIDE = 32


@dataclass
class DemoDataConfig:
    out: Path  # output root (the "data dir")
    seed: int = 0
    images: int = 48  # ReasonSeg images (train/val/test = 50/25/25 %); refCOCO gets as many
    width: int = 320  # display size (after EXIF orientation)
    height: int = 240
    sources: tuple[str, ...] = DEFAULT_SOURCES  # keys of WRITERS
    faults: bool = False  # also write the files each reader must refuse (prepare then fails them)
    show_progress: bool = True

    def validate(self) -> None:
        if int(self.seed) < 0:
            raise ValueError("seed must be >= 0")
        if int(self.images) < MIN_IMAGES:
            raise ValueError(f"images must be >= {MIN_IMAGES}")
        unknown = [name for name in self.sources if name not in WRITERS]
        if unknown or not self.sources:
            raise ValueError(f"unknown source(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(WRITERS)}")
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
    written: dict[str, Any] = {}
    with activity(console, config.show_progress, f"writing demo data to {out}"):
        for name in sorted(set(config.sources), key=list(WRITERS).index):
            writer, folder = WRITERS[name]
            options = {"faults": bool(config.faults)} if name in FAULT_WRITERS else {}
            written[name] = writer(out / folder if folder else out, seed, n, w, h, **options)
        config_path = write_json(out / CONFIG_FILE, config.to_json())
    # The first two keep their historical names: make demo and its tests read them.
    summary = {"out": str(out), "config": str(config_path),
               **{{"reasonseg": "reason_seg"}.get(name, name): value for name, value in written.items()}}
    console.print(f"demo data written to {escape(str(out))}: "
                  + ", ".join(_describe(name, value) for name, value in written.items()), soft_wrap=True)
    return DemoDataResult(summary=summary)


def _describe(name: str, written: dict) -> str:
    if name == "reasonseg":
        return "ReasonSeg train/val/test " + "/".join(str(count) for count in written["splits"].values()) + " images"
    if name == "refcoco":
        return f"refCOCO {written['images']} images with {sum(written['refs_per_split'].values())} refs"
    count = written.get("images", written.get("records"))
    return f"{name} {count} images" if count is not None else name
