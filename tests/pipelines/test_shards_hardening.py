"""Hostile shards: `shards verify`, `shards stats` and the loader report bad samples and
shards with a reason, keep going with the good ones, never decode a bomb, never read a
shard path that leaves the shard set, and print data text as itself."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import numpy as np
import pytest
from loader_rank_worker import build_shard_set, make_jpeg, make_sample
from typer.testing import CliRunner

from cli import app
from keyseg.data import CorruptSampleError, SampleConfig, SampleDecoder, make_eval_pipeline, resolve_shards
from keyseg.shards.samples import check_sample_json, encode_mask, sample_json_bytes

SPLIT = "reasonseg:val"
CONFIG = SampleConfig(sam_size=32, clip_size=16, mode="eval")


def bomb_jpeg(side: int = 30000) -> bytes:
    """A real 16 x 16 JPEG (under 1 KB) whose SOF0 header announces side x side pixels."""
    data = bytearray(make_jpeg(16, 16, seed=1))
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    data[at + 5:at + 9] = side.to_bytes(2, "big") * 2
    return bytes(data)


def keys(count: int) -> list[str]:
    return [make_sample("reasonseg", "val", index)["key"] for index in range(count)]


def edited_json(index: int, edit) -> bytes:
    document = make_sample("reasonseg", "val", index)["json"]
    edit(document)
    return sample_json_bytes(document)


def cli(*args: str, code: int):
    """Run the CLI; it must exit with `code` through typer (an uncaught error also exits 1)."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    assert result.exit_code == code, result.output
    assert code == 0 or isinstance(result.exception, SystemExit), result.exception
    return result


def verify_report(root: Path) -> dict:
    return json.loads((root / "verify_report.json").read_text())


def eval_pass(root: Path) -> tuple[list[str], list]:
    """(delivered keys, skip records) of one eval pass over the split, in this process."""
    delivered, skipped = [], []
    for batch in make_eval_pipeline(resolve_shards(root, SPLIT), CONFIG, 2):
        delivered += batch["keys"]
        skipped += batch["skipped"]
    return delivered, skipped


# ---------------------------------------------------------------- one schema check (point 7)
def set_path(document, path, value):
    for step in path[:-1]:
        document = document[step]
    document[path[-1]] = value


@pytest.mark.parametrize("path, value, reason", [
    (("targets", 0, "keyword"), 5, "targets[0].keyword is 5 (int), expected a string or null"),
    (("targets",), 5, "targets is 5 (int), expected a non-empty list"),
    (("targets",), [], "targets is [] (list), expected a non-empty list"),
    (("targets",), [5], "targets[0] is 5 (int), expected an object"),
    (("width",), "64", "width is '64' (str)"),
    (("height",), 0, "height is 0 (int)"),
    (("width",), True, "width is True (bool)"),
    (("id",), "../../etc/x", "id is '../../etc/x' (str), expected a plain name"),
    (("targets", 0, "texts"), ["ok", 3], "texts is ['ok', 3] (list), expected a non-empty list of strings"),
    (("targets", 0, "is_sentence"), "yes", "is_sentence is 'yes' (str), expected true or false"),
    (("targets", 0, "ann_id"), 1.5, "ann_id is 1.5 (float), expected an integer or null"),
    (("targets", 0, "mask", "target", "counts"), 7, "mask.target counts is 7 (int), expected a string"),
    (("targets", 0, "mask", "ignore", "size"), [1, 1], "mask size mismatch: targets[0].mask.ignore is 1x1"),
    (("targets", 0, "mask", "target", "counts"), "0o", "bad mask RLE: targets[0].mask.target counts ends inside"),
    (("targets", 0, "mask", "target", "counts"), "12", "bad mask RLE: targets[0].mask.target runs cover 3 pixels"),
    (("targets", 0, "mask", "target", "counts"), "0\u00e9", "counts has non-ASCII characters"),
])
def test_check_sample_json_names_what_is_wrong(path, value, reason):
    sample = make_sample("reasonseg", "val", 0)["json"]
    assert check_sample_json(sample) is None
    set_path(sample, path, value)
    found = check_sample_json(sample)
    assert found is not None and reason in found


def test_check_sample_json_refuses_missing_fields_and_non_objects():
    sample = make_sample("refcoco", "val", 1)["json"]
    del sample["targets"][1]["explanatory_query"]
    assert check_sample_json(sample) == "bad json fields: targets[1].explanatory_query is missing"
    assert check_sample_json([1, 2]).startswith("bad json fields: the sample is [1, 2] (list)")


def test_non_string_keyword_is_a_bad_sample_for_verify_stats_and_the_loader(tmp_path):
    names = keys(4)
    bad = {names[1]: {"json": edited_json(1, lambda d: d["targets"][0].update(keyword=5))},
           names[2]: {"json": edited_json(2, lambda d: d.update(targets=5))}}
    build_shard_set(tmp_path, {SPLIT: [4]}, corrupt=bad)

    cli("shards", "verify", "--shards", str(tmp_path), "--no-progress", code=1)
    report = verify_report(tmp_path)
    assert report["samples"] == 4
    assert {problem["key"]: problem["problem"] for problem in report["problems"]} == {
        names[1]: "bad json fields: targets[0].keyword is 5 (int), expected a string or null",
        names[2]: "bad json fields: targets is 5 (int), expected a non-empty list"}

    delivered, skipped = eval_pass(tmp_path)
    assert sorted(delivered) == [names[0], names[3]]
    assert {skip.key: skip.reason for skip in skipped} == {
        problem["key"]: problem["problem"] for problem in report["problems"]}


# ---------------------------------------------------------------- decompression bombs (point 6)
def bomb_set(root: Path) -> list[str]:
    """4 samples: #1's jpg is the bomb (json says 64 x ...), #2's json claims 30000 x 30000."""
    names = keys(4)
    claims = edited_json(2, lambda d: d.update(width=30000, height=30000))
    build_shard_set(root, {SPLIT: [4]}, corrupt={names[1]: {"jpg": bomb_jpeg()},
                                                 names[2]: {"jpg": bomb_jpeg(), "json": claims}})
    return names


def test_verify_reports_a_decompression_bomb_and_verifies_the_rest(tmp_path):
    names = bomb_set(tmp_path)
    assert len(bomb_jpeg()) < 1000
    result = cli("shards", "verify", "--shards", str(tmp_path), "--no-progress", code=1)
    report = verify_report(tmp_path)
    assert report["samples"] == 4
    problems = {problem["key"]: problem["problem"] for problem in report["problems"]}
    assert sorted(problems) == names[1:3]  # the index hashes match: only the two samples are bad
    assert problems[names[1]].startswith("undecodable jpg:") and "900000000" in problems[names[1]].replace(",", "")
    assert problems[names[2]].startswith("image too large: 30000x30000 = 900,000,000 pixels")
    assert names[1] in result.output and names[2] in result.output


def test_verify_max_image_pixels_option_sets_the_bound(tmp_path):
    names = keys(2)
    build_shard_set(tmp_path, {SPLIT: [2]})
    sizes = [(make_sample("reasonseg", "val", i)["json"]["width"], make_sample("reasonseg", "val", i)["json"]["height"])
             for i in range(2)]
    bound = min(w * h for w, h in sizes)  # the smaller image fits exactly, the larger one does not
    cli("shards", "verify", "--shards", str(tmp_path), "--no-progress", code=0)
    cli("shards", "verify", "--shards", str(tmp_path), "--no-progress", "--max-image-pixels", str(bound), code=1)
    (problem,) = verify_report(tmp_path)["problems"]
    larger = names[max(range(2), key=lambda i: sizes[i][0] * sizes[i][1])]
    assert problem["key"] == larger and f"over the bound of {bound:,}" in problem["problem"]
    cli("shards", "verify", "--shards", str(tmp_path), "--no-progress", "--max-image-pixels", "0", code=2)


def test_stats_counts_a_claimed_bomb_as_bad_and_takes_the_bound_option(tmp_path):
    names = bomb_set(tmp_path)
    cli("shards", "stats", "--shards", str(tmp_path), "--no-picture", code=1)
    stats = json.loads((tmp_path / "stats.json").read_text())[SPLIT]
    assert stats["samples"] == 3 and stats["bad_samples"] == 1  # stats reads the json, not the pixels
    assert stats["problems"][0]["key"] == names[2]
    assert stats["problems"][0]["problem"].startswith("image too large: 30000x30000")
    cli("shards", "stats", "--shards", str(tmp_path), "--no-picture", "--max-image-pixels", "1000", code=1)
    stats = json.loads((tmp_path / "stats.json").read_text())[SPLIT]
    assert stats["samples"] == 0 and stats["bad_samples"] == 4
    assert all("over the bound of 1,000" in problem["problem"] for problem in stats["problems"])


def test_loader_skips_a_decompression_bomb_without_decoding_it(tmp_path):
    names = bomb_set(tmp_path)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    delivered, skipped = eval_pass(tmp_path)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert sorted(delivered) == [names[0], names[3]]
    reasons = {skip.key: skip.reason for skip in skipped}
    assert sorted(reasons) == names[1:3]
    assert reasons[names[1]].startswith("undecodable jpg:") and "900000000" in reasons[names[1]].replace(",", "")
    assert reasons[names[2]].startswith("image too large:")
    assert grown < 1_000_000  # decoding the bomb would take 2.7 GB


def test_decoder_refuses_a_sliver_image_before_decoding_it():
    # 1 x 2000 pixels is within any pixel bound, but its CLIP view would be 224 x 448,000
    # pixels and its 32px SAM view 0 pixels tall: refused by shape, with the reason.
    sample = make_sample("reasonseg", "val", 0)
    document = json.loads(json.dumps(sample["json"]))
    document.update(width=2000, height=1)
    for target in document["targets"]:
        target["mask"] = encode_mask(np.zeros((1, 2000), np.uint8))
    raw = {"__key__": sample["key"], "jpg": make_jpeg(2000, 1, seed=0), "json": sample_json_bytes(document)}
    with pytest.raises(CorruptSampleError, match="unusable image shape: 2000x1 is more elongated than 100:1"):
        SampleDecoder(CONFIG)(raw)


def test_decoder_refuses_a_key_that_differs_from_the_json_id():
    sample = make_sample("reasonseg", "val", 0)
    raw = {"__key__": "../../outside/x", "jpg": sample["jpg"], "json": sample_json_bytes(sample["json"])}
    with pytest.raises(CorruptSampleError, match="key mismatch"):
        SampleDecoder(CONFIG)(raw)


# ---------------------------------------------------------------- stats on corrupt shards (point 14)
def corrupt_set(root: Path) -> tuple[list[str], dict]:
    """Shard 0: 4 samples, #1 bad json, #2 `targets: 5`; shard 1: truncated inside its data."""
    names = keys(7)
    bad = {names[1]: {"json": b"{not json"}, names[2]: {"json": edited_json(2, lambda d: d.update(targets=5))}}
    build_shard_set(root, {SPLIT: [4, 3]}, corrupt=bad)
    index = json.loads((root / "index.json").read_text())
    truncated = root / index["splits"][SPLIT]["shards"][1]["path"]
    truncated.write_bytes(truncated.read_bytes()[: 512 + 100])
    return names, index


def test_stats_counts_bad_samples_and_shards_and_exits_1(tmp_path):
    names, index = corrupt_set(tmp_path)
    result = cli("shards", "stats", "--shards", str(tmp_path), "--no-picture", code=1)
    stats = json.loads((tmp_path / "stats.json").read_text())[SPLIT]
    assert stats["samples"] == 2 and stats["bad_samples"] == 2 and stats["bad_shards"] == 1
    problems = {(problem["key"], problem["problem"].split(":")[0]) for problem in stats["problems"]}
    assert (names[1], "corrupt json") in problems and (names[2], "bad json fields") in problems
    assert any(problem["key"] is None and problem["problem"].startswith("unreadable tar")
               for problem in stats["problems"])
    shard1 = index["splits"][SPLIT]["shards"][1]["path"]
    assert any(shard1 in line and "unreadable tar" in line for line in result.output.splitlines())
    assert "targets is 5 (int)" in result.output
    assert any(line.strip().endswith(" 2/1") for line in result.output.splitlines())  # the table's bad column


def test_stats_of_a_good_set_still_exits_0_with_zero_bad(tmp_path):
    build_shard_set(tmp_path, {SPLIT: [3]})
    cli("shards", "stats", "--shards", str(tmp_path), "--no-picture", code=0)
    stats = json.loads((tmp_path / "stats.json").read_text())[SPLIT]
    assert (stats["samples"], stats["bad_samples"], stats["bad_shards"], stats["problems"]) == (3, 0, 0, [])


@pytest.mark.parametrize("command", [["shards", "verify", "--no-progress"], ["shards", "stats", "--no-picture"]])
def test_shard_paths_leaving_the_set_are_reported_not_read(tmp_path, command):
    root = tmp_path / "set"
    build_shard_set(root, {SPLIT: [2]})
    index = json.loads((root / "index.json").read_text())
    good = index["splits"][SPLIT]["shards"][0]
    outside = tmp_path / "outside.tar"  # a real shard, readable if a path could reach it
    shutil.copy(root / good["path"], outside)
    marker = tmp_path / "MARKER"
    hostile = ["../outside.tar", str(outside), f"pipe:touch {marker}", "reasonseg/../../outside.tar"]
    index["splits"][SPLIT]["shards"] += [{**good, "path": path} for path in hostile]
    (root / "index.json").write_text(json.dumps(index))

    cli(*command[:2], "--shards", str(root), *command[2:], code=1)
    assert not marker.exists()
    report = json.loads((root / ("verify_report.json" if command[1] == "verify" else "stats.json")).read_text())
    problems = report["problems"] if command[1] == "verify" else report[SPLIT]["problems"]
    by_shard = {problem["shard"]: problem["problem"] for problem in problems}
    assert sorted(by_shard) == sorted(hostile)
    assert all(problem.startswith("refused shard path:") for problem in by_shard.values()), by_shard
    assert "leaves" in by_shard["../outside.tar"] and "leaves" in by_shard["reasonseg/../../outside.tar"]
    assert "absolute" in by_shard[str(outside)]
    counted = report["samples"] if command[1] == "verify" else report[SPLIT]["samples"]
    assert counted == 2  # only the good shard was read


# ---------------------------------------------------------------- escaping (point 9)
@pytest.mark.parametrize("command", [["shards", "verify", "--no-progress"], ["shards", "stats", "--no-picture"]])
def test_data_text_prints_as_itself(tmp_path, command):
    names = keys(2)
    build_shard_set(tmp_path, {SPLIT: [2]},
                    corrupt={names[1]: {"json": edited_json(1, lambda d: d.update(id="[/]"))}})
    index = json.loads((tmp_path / "index.json").read_text())
    index["splits"][SPLIT]["shards"].append({"path": "x/[/]b[blink].tar", "samples": 1, "bytes": 1, "sha256": "0"})
    (tmp_path / "index.json").write_text(json.dumps(index))
    result = cli(*command[:2], "--shards", str(tmp_path), *command[2:], code=1)
    assert "x/[/]b[blink].tar" in result.output
    assert "id is '[/]' (str)" in result.output
