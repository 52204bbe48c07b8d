"""Per-split metrics, their JSON form, and markdown tables laid out as papers print them.

A split is named "source:split" ("reasonseg:test", "refcoco+:testA"). Each split keeps
overall sums plus a short/long query breakdown (ReasonSeg reports both: short = a phrase,
long = a sentence). `to_dict` always includes "short" and "long", with count 0 when a
split has no query of that kind, so every split's JSON has the same shape; the tables
print "-" for such an empty subset.
"""

from __future__ import annotations

import torch

from keyseg.metrics.iou import IoUStats

# Row / column order of the published tables; unknown names follow, sorted.
REASONSEG_SPLITS = ("val", "test")
REFCOCO_DATASETS = ("refcoco", "refcoco+", "refcocog", "refclef")
REFCOCO_SPLITS = ("val", "testA", "testB", "testC", "test")
_SUBSETS = ("short", "long")
_METRIC_KEYS = ("giou", "ciou", "count", "intersection", "union")


class SplitMetrics:
    """Sums of one evaluated split, overall and by query type."""

    def __init__(self, name: str):
        self.name = name
        self.overall = IoUStats()
        self.short = IoUStats()  # is_sentence False: a phrase / referring expression
        self.long = IoUStats()   # is_sentence True: a full sentence

    def add(self, intersection: int, union: int, is_sentence: bool) -> None:
        self.overall.add(intersection, union)
        (self.long if is_sentence else self.short).add(intersection, union)

    def merge(self, other: "SplitMetrics") -> "SplitMetrics":
        """A new SplitMetrics holding both (e.g. two ranks or shards of one split)."""
        if other.name != self.name:
            raise ValueError(f"cannot merge split {other.name!r} into {self.name!r}")
        merged = SplitMetrics(self.name)
        merged.overall = self.overall.merge(other.overall)
        merged.short = self.short.merge(other.short)
        merged.long = self.long.merge(other.long)
        return merged

    def to_tensor(self) -> torch.Tensor:
        """(3, 4) float64 rows overall / short / long, for a summing all-reduce."""
        return torch.stack([self.overall.to_tensor(), self.short.to_tensor(), self.long.to_tensor()])

    @classmethod
    def from_tensor(cls, name: str, values: torch.Tensor) -> "SplitMetrics":
        metrics = cls(name)
        metrics.overall, metrics.short, metrics.long = (IoUStats.from_tensor(row) for row in values)
        return metrics

    def to_dict(self) -> dict:
        return {**self.overall.to_dict(), "short": self.short.to_dict(), "long": self.long.to_dict()}

    def __eq__(self, other) -> bool:
        if not isinstance(other, SplitMetrics):
            return NotImplemented
        return (self.name, self.overall, self.short, self.long) == \
            (other.name, other.overall, other.short, other.long)

    def __repr__(self) -> str:
        return f"SplitMetrics({self.name!r}, overall={self.overall!r}, short={self.short!r}, long={self.long!r})"


def metrics_json(splits: dict[str, SplitMetrics], extra: dict[str, dict] | None = None) -> dict:
    """{"source:split": split.to_dict() + extra["source:split"]} — plain types for json.dump.

    `extra` adds per-split fields (leakage flags, keyword diagnostics...). It may not
    overwrite a metric or name a split that was not evaluated: both would be silent bugs.
    """
    extra = extra or {}
    unknown = sorted(set(extra) - set(splits))
    if unknown:
        raise ValueError(f"extra given for splits that were not evaluated: {unknown}")
    result = {}
    for key, split in splits.items():
        if key != split.name:
            raise ValueError(f"split {split.name!r} stored under key {key!r}")
        record = split.to_dict()
        clashes = sorted(set(record) & set(extra.get(key, {})))
        if clashes:
            raise ValueError(f"extra for {key!r} would overwrite metrics: {clashes}")
        result[key] = {**record, **extra.get(key, {})}
    return result


# ---------------------------------------------------------------------------- tables
def paper_table(metrics: dict[str, dict]) -> str:
    """Markdown tables of `metrics_json` output, in percent with one decimal.

    - ReasonSeg (sources starting with "reasonseg"): one row per split, columns gIoU and
      cIoU for short query, long query and overall, as in the LISA / KeySeg tables.
    - refCOCO family and refCLEF (sources starting with "refcoco" or "refclef"): one
      row per dataset, one column per split (val, testA, testB, testC, test; only splits present
      in some dataset), cell = cIoU, which is what papers report there. gIoU follows in a
      second table of the same layout rather than in parentheses, so each table can be
      pasted next to a paper's as is.
    - Any other source: one row per split with overall gIoU and cIoU (nothing is dropped).
    A family with no split present gets no table; "-" marks a missing or empty cell.
    """
    reasonseg, refcoco, other = {}, {}, {}
    for key, record in metrics.items():
        source, _, split = key.partition(":")
        if source.lower().startswith("reasonseg"):
            reasonseg[key] = record
        elif source.lower().startswith(("refcoco", "refclef")):
            refcoco[key] = record
        else:
            other[key] = record
    tables = []
    if reasonseg:
        tables.append(_reasonseg_table(reasonseg))
    if refcoco:
        tables.append(_refcoco_table(refcoco, "ciou", "cIoU"))
        tables.append(_refcoco_table(refcoco, "giou", "gIoU"))
    if other:
        tables.append(_other_table(other))
    return "\n\n".join(tables) + "\n" if tables else ""


def _percent(record: dict | None, metric: str) -> str:
    if not record or not record.get("count"):
        return "-"
    return f"{100 * record[metric]:.1f}"


def _ordered(names, canonical) -> list:
    """`names` in the papers' order, unknown names after it, sorted."""
    names = set(names)
    return [name for name in canonical if name in names] + sorted(names - set(canonical))


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _reasonseg_table(records: dict[str, dict]) -> str:
    by_row = {}
    for key, record in records.items():
        source, _, split = key.partition(":")
        # The plain "reasonseg" source is the benchmark itself: label rows by split only.
        by_row[split if source.lower() == "reasonseg" else key] = record
    header = ["split", "short gIoU", "short cIoU", "long gIoU", "long cIoU", "overall gIoU", "overall cIoU"]
    rows = []
    for label in _ordered(by_row, REASONSEG_SPLITS):
        record = by_row[label]
        rows.append([label] + [_percent(subset, metric)
                               for subset in (record.get("short"), record.get("long"), record)
                               for metric in ("giou", "ciou")])
    return "**ReasonSeg** (%, short query | long query | overall)\n\n" + _markdown(header, rows)


def _refcoco_table(records: dict[str, dict], metric: str, title: str) -> str:
    cells: dict[str, dict[str, dict]] = {}
    for key, record in records.items():
        source, _, split = key.partition(":")
        cells.setdefault(source, {})[split] = record
    datasets = _ordered(cells, REFCOCO_DATASETS)
    splits = _ordered({split for by_split in cells.values() for split in by_split}, REFCOCO_SPLITS)
    rows = [[dataset] + [_percent(cells[dataset].get(split), metric) for split in splits] for dataset in datasets]
    return f"**refCOCO family, {title}** (%)\n\n" + _markdown(["dataset"] + splits, rows)


def _other_table(records: dict[str, dict]) -> str:
    rows = [[key, _percent(records[key], "giou"), _percent(records[key], "ciou")] for key in sorted(records)]
    return "**Other splits** (%)\n\n" + _markdown(["split", "gIoU", "cIoU"], rows)
