"""Which sources and splits to prepare: `--source` specs and auto-detection.

Spec syntax: `reasonseg[:SPLITS]` or `DATASET[:SPLIT_BY[:SPLITS]]` for the refCOCO
family and refCLEF, SPLITS a comma-separated list, e.g. `refcoco:unc:train,val`,
`refcocog:umd`, `refclef:berkeley:test`. The rest of LISA's training mixture has one
split, `train`: `ade20k`, `cocostuff`, `mapillary` (label maps), `paco_lvis`,
`pascal_part` (parts) and `llava_instruct_150k` (VQA), each also as `SOURCE:train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keyseg.formats.refer import DEFAULT_SPLIT_BY, REFER_DATASETS, refs_file
from keyseg.sources.reasonseg import REASONSEG_ROOT, REASONSEG_SPLITS
from keyseg.sources.parts import PART_SOURCES
from keyseg.sources.refer import REFER_ROOT
from keyseg.sources.semseg import ADE20K_IMAGES, COCOSTUFF_LABELS, MAPILLARY_LABELS

# Where each one-split source is detected: the folder its reader lists, or its file.
# (The LLaVA path is written out: keyseg.sources.llava imports the tokenizer side.)
MIXTURE_SOURCES: dict[str, tuple[str, str]] = {  # name -> (family, what marks it present)
    "ade20k": ("semseg", ADE20K_IMAGES),
    "cocostuff": ("semseg", COCOSTUFF_LABELS),
    "mapillary": ("semseg", MAPILLARY_LABELS),
    "paco_lvis": ("parts", PART_SOURCES["paco_lvis"].annotation_file),
    "pascal_part": ("parts", PART_SOURCES["pascal_part"].annotation_file),
    "llava_instruct_150k": ("vqa", "llava_dataset/llava_instruct_150k.json"),
}
MIXTURE_SPLITS = ("train",)
SOURCE_ALIASES = {"llava_instruct": "llava_instruct_150k"}


@dataclass(frozen=True)
class SourceSplit:
    """One unit of output: a manifest and its masks under `<source>/<split>/`."""

    family: str  # "reasonseg", "refer", "semseg", "parts" or "vqa"
    split: str
    dataset: str = "reasonseg"  # refcoco..refclef for refer; the source name for the others
    split_by: str | None = None

    @property
    def source(self) -> str:
        """Output name: the dataset, plus the splitBy when it is not the usual one
        (`refclef` for unc, `refclef_berkeley`)."""
        if self.family != "refer" or self.split_by == DEFAULT_SPLIT_BY[self.dataset]:
            return self.dataset
        return f"{self.dataset}_{self.split_by}"

    @property
    def name(self) -> str:
        return f"{self.source}:{self.split}"


def _split_list(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    splits = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [split for split in splits if split not in allowed]
    if unknown or not splits:
        raise ValueError(f"unknown split(s) {', '.join(unknown) or '(none)'} for {what}; choose from {', '.join(allowed)}")
    return splits


def parse_source_spec(spec: str) -> list[SourceSplit]:
    parts = spec.split(":")
    dataset = parts[0].strip().lower()
    dataset = SOURCE_ALIASES.get(dataset, dataset)
    if dataset in MIXTURE_SOURCES:
        if len(parts) > 2:
            raise ValueError(f"{spec!r}: use {dataset} or {dataset}:train")
        splits = _split_list(parts[1], MIXTURE_SPLITS, dataset) if len(parts) == 2 else MIXTURE_SPLITS
        return [SourceSplit(MIXTURE_SOURCES[dataset][0], split, dataset) for split in splits]
    if dataset == "reasonseg":
        if len(parts) > 2:
            raise ValueError(f"{spec!r}: use reasonseg or reasonseg:SPLITS")
        splits = _split_list(parts[1], REASONSEG_SPLITS, "reasonseg") if len(parts) == 2 else REASONSEG_SPLITS
        return [SourceSplit("reasonseg", split) for split in splits]
    if dataset not in REFER_DATASETS:
        known = ", ".join(["reasonseg", *REFER_DATASETS, *MIXTURE_SOURCES])
        raise ValueError(f"{spec!r}: unknown source {dataset!r}; choose from {known}")
    if len(parts) > 3:
        raise ValueError(f"{spec!r}: use {dataset}[:SPLIT_BY[:SPLITS]]")
    split_by = parts[1].strip() if len(parts) >= 2 else DEFAULT_SPLIT_BY[dataset]
    if split_by not in REFER_DATASETS[dataset]:
        raise ValueError(f"{spec!r}: {dataset} has splitBy {', '.join(REFER_DATASETS[dataset])}, not {split_by!r}")
    allowed = REFER_DATASETS[dataset][split_by]
    splits = _split_list(parts[2], allowed, f"{dataset}({split_by})") if len(parts) == 3 else allowed
    return [SourceSplit("refer", split, dataset, split_by) for split in splits]


def detect_sources(data_dir: Path) -> list[SourceSplit]:
    """ReasonSeg splits whose folder exists, each refer dataset's usual splitBy, and each
    mixture source whose folder (label maps) or file (parts, VQA) exists."""
    found = [
        SourceSplit("reasonseg", split) for split in REASONSEG_SPLITS if (data_dir / REASONSEG_ROOT / split).is_dir()
    ]
    for dataset, split_by in DEFAULT_SPLIT_BY.items():
        if refs_file(data_dir / REFER_ROOT / dataset, split_by).is_file():
            found += [SourceSplit("refer", split, dataset, split_by) for split in REFER_DATASETS[dataset][split_by]]
    for dataset, (family, marker) in MIXTURE_SOURCES.items():
        path = data_dir / marker
        if path.is_dir() if family == "semseg" else path.is_file():
            found += [SourceSplit(family, split, dataset) for split in MIXTURE_SPLITS]
    return found


def resolve_sources(data_dir: Path, specs: list[str]) -> list[SourceSplit]:
    """The splits named by `specs` (duplicates removed, order kept), or all detected."""
    chosen = [split for spec in specs for split in parse_source_spec(spec)] if specs else detect_sources(data_dir)
    return list(dict.fromkeys(chosen))
