"""`keyseg train` on hostile shard sets: an index runs no command, bad samples and truncated
shards are skipped (the tokenizer builder included) and every skip is recorded."""

import json
import os
import subprocess
import sys

import pytest
from shard_edits import (copy_shard_set, edit_sample_json, keys_of, poison_index_path, shard_files,
                         truncate_inside_second_sample)
from typer.testing import CliRunner

from cli import app

TINY = ["optim.steps_per_epoch=2", "optim.epochs=1", "optim.micro_batch=2", "optim.warmup_steps=1",
        "data.workers=0", "checkpoint_every=2", "export=false"]


def test_a_pipe_command_in_index_json_is_never_run(demo_shards, tmp_path, monkeypatch):
    from keyseg.model.tokenizer import word_level_tokenizer

    shards = copy_shard_set(demo_shards, tmp_path / "set")
    marker = tmp_path / "marker"
    poison_index_path(shards, "refcoco:train", marker)
    out = tmp_path / "run"
    # A saved tokenizer (as after an interrupted run): the shards are first opened by the loader.
    word_level_tokenizer(["a"]).save_pretrained(out / "tokenizer")
    monkeypatch.chdir(shards)  # `--shards .`: the old reader built the bare `pipe:...` string
    result = CliRunner().invoke(app, ["train", "--config", "tiny", "--shards", ".", "--out", str(out),
                                      "--no-progress", *TINY], env={"COLUMNS": "300"})
    assert not marker.exists()
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and "index.json" in result.output


def bad_shard_set(demo_shards, folder):
    """In reasonseg:train one shard is truncated and every other shard starts with a bad
    sample; in reasonseg:val one sample has a keyword that is not a string."""
    shards = copy_shard_set(demo_shards, folder)
    train = shard_files(shards, "reasonseg:train")
    truncated = max(train, key=lambda path: len(keys_of(path)))
    truncate_inside_second_sample(truncated)
    bad = {}
    for path in train:
        if path != truncated:
            key = keys_of(path)[0]
            edit_sample_json(path, key, lambda document: document.update(targets=5))
            bad[key] = path
    val = shard_files(shards, "reasonseg:val")[0]
    val_key = keys_of(val)[0]
    edit_sample_json(val, val_key, lambda document: document["targets"][0].update(keyword=5))
    return shards, bad, truncated, val_key


def test_shard_texts_skips_bad_samples_and_truncated_shards(demo_shards, tmp_path):
    from keyseg.training.tokenizer import shard_texts

    shards, bad, truncated, _ = bad_shard_set(demo_shards, tmp_path / "set")
    skipped = []
    texts = shard_texts(shard_files(shards, "reasonseg:train"), skipped)
    assert texts
    by_key = {skip.key: skip for skip in skipped}
    assert set(bad) <= set(by_key) and all(by_key[key].url == str(bad[key].resolve()) for key in bad)
    assert all(by_key[key].reason.startswith("bad json fields") for key in bad)
    assert any(skip.key is None and skip.url == str(truncated.resolve()) and "shard read error" in skip.reason
               for skip in skipped), skipped


@pytest.mark.slow
def test_training_over_bad_shards_records_every_skip(demo_shards, tmp_path):
    shards, bad, truncated, val_key = bad_shard_set(demo_shards, tmp_path / "set")
    out = tmp_path / "run"
    # One source, so its shuffle buffer is certainly filled, from shards drawn with
    # replacement: the truncated shard is read (and skipped) in the first step.
    command = [sys.executable, "-m", "cli", "train", "--config", "tiny", "--shards", str(shards), "--out", str(out),
               "--no-progress", "--max-steps", "2", *TINY, "data.train=[{split: reasonseg:train, weight: 1.0}]"]
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2
    counts, listed = summary["skipped"], summary["skipped_samples"]
    tokenizer_keys = {skip["key"] for skip in listed if skip["during"] == "tokenizer"}
    assert set(bad) | {val_key, None} <= tokenizer_keys and counts["tokenizer"] >= len(bad) + 2
    assert counts["train"] > 0
    assert any(skip["shard"] == str(truncated.resolve()) for skip in listed if skip["during"] == "train")
    assert counts["val"] == 1 and [skip["key"] for skip in listed if skip["during"] == "val"] == [val_key]
    assert all(skip["shard"] and skip["reason"] for skip in listed)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    skips = [line["skips"] for line in lines if "skips" in line]
    assert {entry["during"] for entry in skips} == {"tokenizer", "train", "val"}
    assert sum(entry["count"] for entry in skips if entry["during"] == "train") == counts["train"]
