"""Per-split metrics with the short/long breakdown, their JSON, and the paper tables."""

import json

import pytest

from keyseg.metrics import SplitMetrics, metrics_json, paper_table


def filled(name, samples):
    split = SplitMetrics(name)
    for intersection, union, is_sentence in samples:
        split.add(intersection, union, is_sentence)
    return split


SAMPLES = [(3, 4, False), (0, 5, False), (0, 0, True), (9, 10, True), (1, 8, True)]


def test_short_long_breakdown():
    split = filled("reasonseg:test", SAMPLES)
    result = split.to_dict()
    assert set(result) == {"giou", "ciou", "count", "intersection", "union", "short", "long"}
    assert (result["count"], result["intersection"], result["union"]) == (5, 13, 27)
    assert (result["short"]["count"], result["short"]["intersection"], result["short"]["union"]) == (2, 3, 9)
    assert (result["long"]["count"], result["long"]["intersection"], result["long"]["union"]) == (3, 10, 18)

    short_ious = [3 / (4 + 1e-5), 0.0]
    long_ious = [1.0, 9 / (10 + 1e-5), 1 / (8 + 1e-5)]  # U == 0 counts as 1.0
    assert result["short"]["giou"] == pytest.approx(sum(short_ious) / 2, abs=1e-12)
    assert result["long"]["giou"] == pytest.approx(sum(long_ious) / 3, abs=1e-12)
    assert result["giou"] == pytest.approx(sum(short_ious + long_ious) / 5, abs=1e-12)
    assert result["ciou"] == 13 / 27
    assert result["short"]["ciou"] == 3 / 9 and result["long"]["ciou"] == 10 / 18


def test_empty_subset_is_kept_with_count_zero():
    result = filled("refcoco:val", [(3, 4, False)]).to_dict()
    assert result["long"] == {"giou": 0.0, "ciou": 0.0, "count": 0, "intersection": 0, "union": 0}
    assert result["short"]["count"] == 1


def test_merge_equals_single_accumulator():
    whole = filled("reasonseg:val", SAMPLES)
    for cut in range(len(SAMPLES) + 1):
        first, second = filled("reasonseg:val", SAMPLES[:cut]), filled("reasonseg:val", SAMPLES[cut:])
        assert first.merge(second) == whole
        assert first.merge(second).to_dict() == whole.to_dict()
    with pytest.raises(ValueError):
        whole.merge(SplitMetrics("reasonseg:test"))


def test_tensor_round_trip_and_reduce():
    split = filled("reasonseg:val", SAMPLES)
    back = SplitMetrics.from_tensor("reasonseg:val", split.to_tensor())
    for name in ("overall", "short", "long"):
        original, restored = getattr(split, name), getattr(back, name)
        assert (restored.count, restored.intersection, restored.union) == \
            (original.count, original.intersection, original.union)
        assert restored.giou == pytest.approx(original.giou, abs=1e-15)
    reduced = SplitMetrics.from_tensor("reasonseg:val", split.to_tensor() + split.to_tensor())
    doubled = split.merge(split)
    assert reduced.overall.intersection == doubled.overall.intersection
    assert reduced.long.count == doubled.long.count == 6


def test_metrics_json_with_extra():
    splits = {"reasonseg:val": filled("reasonseg:val", SAMPLES), "refcoco:testA": filled("refcoco:testA", SAMPLES[:2])}
    result = metrics_json(splits, extra={"reasonseg:val": {"leakage": "trained_on_val", "keywords": {"hit": 0.5}}})
    assert set(result) == {"reasonseg:val", "refcoco:testA"}
    assert result["reasonseg:val"]["leakage"] == "trained_on_val"
    assert result["reasonseg:val"]["count"] == 5 and "leakage" not in result["refcoco:testA"]
    assert json.loads(json.dumps(result)) == result  # plain JSON types only

    with pytest.raises(ValueError, match="overwrite"):
        metrics_json(splits, extra={"reasonseg:val": {"giou": 1.0}})
    with pytest.raises(ValueError, match="not evaluated"):
        metrics_json(splits, extra={"reasonseg:test": {"x": 1}})
    with pytest.raises(ValueError, match="key"):
        metrics_json({"reasonseg:test": splits["reasonseg:val"]})


def record(giou, ciou, count=10, short=None, long=None):
    result = {"giou": giou, "ciou": ciou, "count": count, "intersection": 0, "union": 0}
    if short is not None:
        result["short"], result["long"] = short, long
    return result


def test_paper_table_reasonseg_and_refcoco_family():
    metrics = {
        "reasonseg:test": record(0.3656, 0.3496, short=record(0.4401, 0.4059), long=record(0.3408, 0.3268)),
        "reasonseg:val": record(0.444, 0.4606, short=record(0.1, 0.2), long=record(0.0, 0.0, count=0)),
        "refcoco:val": record(0.7, 0.746),
        "refcoco:testA": record(0.71, 0.7619),
        "refcoco:testB": record(0.72, 0.713),
        "refcoco+:val": record(0.6, 0.6287),
        "refcoco+:testA": record(0.61, 0.6767),
        "refcoco+:testB": record(0.62, 0.5551),
        "refcocog:val": record(0.65, 0.6664),
        "refcocog:test": record(0.66, 0.6808),
    }
    table = paper_table(metrics)
    lines = table.splitlines()
    assert "| split | short gIoU | short cIoU | long gIoU | long cIoU | overall gIoU | overall cIoU |" in lines
    # Rows in the papers' order (val before test) whatever the dict order.
    assert lines.index("| val | 10.0 | 20.0 | - | - | 44.4 | 46.1 |") < \
        lines.index("| test | 44.0 | 40.6 | 34.1 | 32.7 | 36.6 | 35.0 |")

    ciou_at = lines.index("**refCOCO family, cIoU** (%)")
    giou_at = lines.index("**refCOCO family, gIoU** (%)")
    ciou_table, giou_table = lines[ciou_at:giou_at - 1], lines[giou_at:]
    assert "| dataset | val | testA | testB | test |" in ciou_table
    assert ciou_table[-3:] == ["| refcoco | 74.6 | 76.2 | 71.3 | - |",
                               "| refcoco+ | 62.9 | 67.7 | 55.5 | - |",
                               "| refcocog | 66.6 | - | - | 68.1 |"]
    assert giou_table[-3:] == ["| refcoco | 70.0 | 71.0 | 72.0 | - |",
                               "| refcoco+ | 60.0 | 61.0 | 62.0 | - |",
                               "| refcocog | 65.0 | - | - | 66.0 |"]
    assert "Other" not in table


def test_paper_table_skips_absent_families_and_keeps_other_sources():
    only_reasonseg = paper_table({"reasonseg:val": filled("reasonseg:val", SAMPLES).to_dict()})
    assert "ReasonSeg" in only_reasonseg and "refCOCO" not in only_reasonseg

    only_refcoco = paper_table({"refcocog:val": record(0.5, 0.25)})
    assert "ReasonSeg" not in only_refcoco
    assert "| dataset | val |" in only_refcoco.splitlines()  # only the splits present
    assert "| refcocog | 25.0 |" in only_refcoco.splitlines()

    other = paper_table({"grefcoco:val": record(0.123, 0.456)})
    assert "| grefcoco:val | 12.3 | 45.6 |" in other.splitlines()
    assert paper_table({}) == ""


def test_paper_table_from_accumulated_metrics():
    splits = {"reasonseg:val": filled("reasonseg:val", SAMPLES)}
    table = paper_table(metrics_json(splits))
    short = f"{100 * (3 / (4 + 1e-5)) / 2:.1f}"  # 37.5
    overall_ciou = f"{100 * 13 / 27:.1f}"  # 48.1
    row = next(line for line in table.splitlines() if line.startswith("| val |"))
    assert row.split(" | ")[1] == short == "37.5"
    assert row.rstrip(" |").endswith(overall_ciou) and overall_ciou == "48.1"
