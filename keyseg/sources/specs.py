"""Which sources and splits to prepare: `--source` specs and auto-detection.

Spec syntax: `reasonseg[:SPLITS]` or `DATASET[:SPLIT_BY[:SPLITS]]` for the refCOCO
family and refCLEF, SPLITS a comma-separated list, e.g. `refcoco:unc:train,val`,
`refcocog:umd`, `refclef:berkeley:test`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keyseg.formats.refer import DEFAULT_SPLIT_BY, REFER_DATASETS, refs_file
from keyseg.sources.reasonseg import REASONSEG_ROOT, REASONSEG_SPLITS
from keyseg.sources.refer import REFER_ROOT


@dataclass(frozen=True)
class SourceSplit:
    """One unit of output: a manifest and its masks under `<source>/<split>/`."""

    family: str  # "reasonseg" or "refer"
    split: str
    dataset: str = "reasonseg"  # refcoco, refcoco+, refcocog, refclef for the refer family
    split_by: str | None = None

    @property
    def source(self) -> str:
        """Output name: the dataset, plus the splitBy when it is not the usual one
        (`refclef` for unc, `refclef_berkeley`)."""
        if self.family == "reasonseg" or self.split_by == DEFAULT_SPLIT_BY[self.dataset]:
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
    if dataset == "reasonseg":
        if len(parts) > 2:
            raise ValueError(f"{spec!r}: use reasonseg or reasonseg:SPLITS")
        splits = _split_list(parts[1], REASONSEG_SPLITS, "reasonseg") if len(parts) == 2 else REASONSEG_SPLITS
        return [SourceSplit("reasonseg", split) for split in splits]
    if dataset not in REFER_DATASETS:
        known = ", ".join(["reasonseg", *REFER_DATASETS])
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
    """ReasonSeg splits whose folder exists, and each refer dataset's usual splitBy."""
    found = [
        SourceSplit("reasonseg", split) for split in REASONSEG_SPLITS if (data_dir / REASONSEG_ROOT / split).is_dir()
    ]
    for dataset, split_by in DEFAULT_SPLIT_BY.items():
        if refs_file(data_dir / REFER_ROOT / dataset, split_by).is_file():
            found += [SourceSplit("refer", split, dataset, split_by) for split in REFER_DATASETS[dataset][split_by]]
    return found


def resolve_sources(data_dir: Path, specs: list[str]) -> list[SourceSplit]:
    """The splits named by `specs` (duplicates removed, order kept), or all detected."""
    chosen = [split for spec in specs for split in parse_source_spec(spec)] if specs else detect_sources(data_dir)
    return list(dict.fromkeys(chosen))
