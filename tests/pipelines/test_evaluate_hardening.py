"""`keyseg evaluate` on hostile shard sets and predictions: nothing runs, nothing escapes
--out, bad samples are counted and listed, two processes score each sample once and exit
cleanly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from shard_edits import copy_shard_set, edit_sample_json, keys_of, poison_index_path, read_members, shard_files, \
    truncate_inside_second_sample, write_members
from typer.testing import CliRunner

from cli import app
from keyseg.shards.samples import decode_mask
from keyseg.shards.tario import iter_samples
from tiny_export import write_tiny_export

REPO = Path(__file__).resolve().parents[2]
RANK_DRIVER = REPO / "tests" / "helpers" / "evaluate_ranks.py"


@pytest.fixture(scope="module")
def tiny_model(demo_shards, tmp_path_factory):
    from keyseg.data.conversation import template_texts
    from keyseg.training.tokenizer import shard_texts

    texts = template_texts()
    texts += shard_texts(sorted(demo_shards.rglob("*.tar")))
    return write_tiny_export(tmp_path_factory.mktemp("model") / "export", texts, ["refcoco:train"])


def perfect_predictions(shards: Path, split: str, folder: Path) -> int:
    """A PNG per evaluated query equal to its ground truth (refCOCO: one per sentence, the
    lisa protocol); returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in shard_files(shards, split):
        with open(path, "rb") as handle:
            for key, members in iter_samples(handle):
                for number, target in enumerate(json.loads(members["json"])["targets"]):
                    truth = decode_mask(target["mask"])
                    names = ([f"{key}_{number}_{s}" for s in range(len(target["texts"]))]
                             if split.startswith("refcoco") else [f"{key}_{number}"])
                    for name in names:
                        cv2.imwrite(str(folder / f"{name}.png"), (truth == 1).astype(np.uint8) * 255)
                        written += 1
    return written


def evaluate(*args, env=None):
    return CliRunner().invoke(app, ["evaluate", *map(str, args), "--no-progress"],
                              env={"COLUMNS": "300", **(env or {})})


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------- index paths (point 2)
def test_a_pipe_command_in_index_json_is_never_run(demo_shards, tiny_model, tmp_path, monkeypatch):
    shards = copy_shard_set(demo_shards, tmp_path / "set")
    marker = tmp_path / "marker"
    poison_index_path(shards, "reasonseg:val", marker)
    monkeypatch.chdir(shards)  # `--shards .`: the old reader built the bare `pipe:...` string
    result = evaluate("--shards", ".", "--split", "reasonseg:val", "--model", tiny_model, "--out", tmp_path / "out")
    assert not marker.exists()
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and "index.json" in result.output


# ---------------------------------------------------------------- usage and data errors (point 14)
def test_usage_errors_exit_2_and_data_errors_exit_1(demo_shards, tmp_path):
    predictions = tmp_path / "pred"
    predictions.mkdir()
    both = evaluate("--shards", demo_shards, "--split", "reasonseg:val", "--model", tmp_path,
                    "--predictions", predictions, "--out", tmp_path / "o")
    assert both.exit_code == 2 and "exactly one of --model or --predictions" in both.output
    unknown = evaluate("--shards", demo_shards, "--split", "nope:val", "--predictions", predictions,
                       "--out", tmp_path / "o")
    assert unknown.exit_code == 2 and "no split 'nope:val'" in unknown.output
    no_index = evaluate("--shards", tmp_path, "--split", "reasonseg:val", "--predictions", predictions,
                        "--out", tmp_path / "o")
    assert no_index.exit_code == 1 and "index.json" in no_index.output
    assert len(no_index.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- skipped samples (points 8, 14)
def test_truncated_shard_and_bad_samples_are_counted_listed_and_fail_the_run(demo_shards, tmp_path):
    shards = copy_shard_set(demo_shards, tmp_path / "set")
    predictions = tmp_path / "pred"
    perfect_predictions(shards, "reasonseg:val", predictions)
    perfect_predictions(shards, "refcoco:train", predictions)
    truncated = shard_files(shards, "refcoco:train")[0]
    lost = keys_of(truncated)[1:]  # the cut is inside the second sample
    truncate_inside_second_sample(truncated)
    val_shard = shard_files(shards, "reasonseg:val")[0]
    bad_targets, bad_keyword = keys_of(val_shard)[:2]
    edit_sample_json(val_shard, bad_targets, lambda document: document.update(targets=5))
    edit_sample_json(val_shard, bad_keyword, lambda document: document["targets"][0].update(keyword=5))

    args = ["--shards", shards, "--split", "reasonseg:val", "--split", "refcoco:train",
            "--predictions", predictions, "--out", tmp_path / "out"]
    failed = evaluate(*args)
    assert failed.exception is None or isinstance(failed.exception, SystemExit), failed.output
    assert failed.exit_code == 1, failed.output
    assert any("--allow-skips" in line for line in error_lines(failed.output)), failed.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    val, train = metrics["reasonseg:val"], metrics["refcoco:train"]
    assert (val["samples_in_index"], val["samples_scored"], val["skipped"]) == (4, 2, 2)
    assert {skip["key"]: skip["reason"].split(":")[0] for skip in val["skipped_samples"]} == {
        bad_targets: "bad json fields", bad_keyword: "bad json fields"}
    assert "keyword" in next(s["reason"] for s in val["skipped_samples"] if s["key"] == bad_keyword)
    assert train["samples_scored"] == train["samples_in_index"] - len(lost)
    assert train["skipped"] == len(lost)
    broken = [skip for skip in train["skipped_samples"] if skip["shard"] == str(truncated.resolve())]
    assert broken and all(skip["reason"] for skip in broken), train["skipped_samples"]
    assert all(skip["shard"] is not None for skip in val["skipped_samples"] + train["skipped_samples"])
    # The good samples were scored: perfect predictions give a gIoU of 1.
    assert val["giou"] == pytest.approx(1.0, abs=1e-4) and val["count"] == 2

    allowed = evaluate(*args, "--allow-skips")
    assert allowed.exit_code == 0, allowed.output
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["reasonseg:val"]["skipped"] == 2


# ---------------------------------------------------------------- prediction files (point 16, 9)
def test_an_undecodable_prediction_is_an_error_never_an_empty_mask(demo_shards, tmp_path):
    predictions = tmp_path / "pred"
    perfect_predictions(demo_shards, "reasonseg:val", predictions)
    first, second = sorted(predictions.glob("*.png"))[:2]
    first.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    cv2.imwrite(str(second), np.zeros((3, 5), np.uint8))
    out = tmp_path / "out [/] here"  # a file name with markup in it prints as itself
    result = evaluate("--shards", demo_shards, "--split", "reasonseg:val", "--predictions", predictions,
                      "--out", out, "--missing-as-empty")
    assert result.exit_code == 1, result.output
    assert len(error_lines(result.output)) == 1 and "2 prediction(s) unreadable" in result.output
    listed = (out / "invalid_predictions.txt").read_text()
    assert first.name in listed and second.name in listed and "5x3" in listed
    assert not (out / "metrics.json").exists()


def test_data_text_with_markup_prints_as_itself(demo_shards, tmp_path):
    predictions = tmp_path / "pred"
    perfect_predictions(demo_shards, "reasonseg:val", predictions)
    out = tmp_path / "res [/] [blink]x"
    result = evaluate("--shards", demo_shards, "--split", "reasonseg:val", "--predictions", predictions,
                      "--out", out, "--visualize", "1")
    assert result.exit_code == 0, result.output
    assert "[blink]x" in result.output and (out / "gallery" / "index.html").is_file()


# ---------------------------------------------------------------- keys as file names (point 3)
def test_a_sample_key_that_is_a_path_writes_nothing_outside_out(demo_shards, tiny_model, tmp_path):
    shards = copy_shard_set(demo_shards, tmp_path / "set")
    val_shard = shard_files(shards, "reasonseg:val")[1]
    members = read_members(val_shard)
    (jpg_name, jpg), (json_name, data) = members[:2]
    # A copy of a good sample under a member name that climbs out of OUT/predictions.
    write_members(val_shard, members + [("../../../escape/x.jpg", jpg), ("../../../escape/x.json", data)])
    out = tmp_path / "a" / "b" / "out"
    result = evaluate("--shards", shards, "--split", "reasonseg:val", "--model", tiny_model, "--out", out)
    assert not (tmp_path / "a" / "escape").exists()
    assert result.exit_code == 1, result.output
    metrics = json.loads((out / "metrics.json").read_text())["reasonseg:val"]
    (skip,) = metrics["skipped_samples"]
    assert skip["key"] == "../../../escape/x" and skip["reason"].startswith("bad key")
    assert metrics["samples_scored"] == 4
    assert sorted(path.name for path in (out / "predictions").iterdir()) == sorted(
        f"{key}_0.png" for path in shard_files(demo_shards, "reasonseg:val") for key in keys_of(path))


# ---------------------------------------------------------------- two processes (points 10, 11)
@pytest.mark.slow
def test_two_processes_score_each_sample_once_and_tear_down_cleanly(demo_shards, tmp_path):
    """Twelve real two-process runs (gloo, RANK/WORLD_SIZE/MASTER_* as torchrun sets them) of
    the predictions mode: a 1-in-4 abort at exit would pass all twelve 3% of the time."""
    predictions = tmp_path / "pred"
    perfect_predictions(demo_shards, "reasonseg:val", predictions)
    single = evaluate("--shards", demo_shards, "--split", "reasonseg:val", "--split", "refcoco:train",
                      "--predictions", predictions, "--missing-as-empty", "--out", tmp_path / "one")
    assert single.exit_code == 0, single.output
    expected = json.loads((tmp_path / "one" / "metrics.json").read_text())
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])  # this tree's pipelines
    done = subprocess.run([sys.executable, str(RANK_DRIVER), "--runs", "12", "--shards", str(demo_shards),
                           "--split", "reasonseg:val", "--split", "refcoco:train", "--predictions",
                           str(predictions), "--out", str(tmp_path / "two")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = json.loads(done.stdout.strip().splitlines()[-1])
    assert statuses == [[0, 0]] * 12, (statuses, done.stderr[-3000:])
    assert "terminate called" not in done.stderr
    for run in range(12):
        metrics = json.loads((tmp_path / "two" / str(run) / "metrics.json").read_text())
        for split in expected:
            for name in ("count", "intersection", "union", "giou", "ciou", "samples_scored", "skipped"):
                assert metrics[split][name] == expected[split][name], (run, split, name)
        lines = (tmp_path / "two" / str(run) / "per_sample.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        assert len({(row["split"], row["id"], row["target"], row["sentence"]) for row in rows}) == len(rows)
