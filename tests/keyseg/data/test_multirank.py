"""Two real rank processes (RANK/WORLD_SIZE as torchrun sets them) over unequal shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from loader_rank_worker import build_shard_set

from keyseg.data import SampleConfig, make_eval_pipeline, make_loader, resolve_shards

WORKER = Path(__file__).resolve().parents[2] / "helpers" / "loader_rank_worker.py"
SIZES = [2, 7, 4]  # unequal: rank 0 gets shards 0 and 2 (6 samples), rank 1 shard 1 (7)


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("multirank")
    samples = build_shard_set(root, {"refcoco:val": SIZES})
    return root, set(samples)


def run_ranks(root: Path, world_size: int, *args: str) -> list[dict]:
    """Start every rank at once (as torchrun would) and collect their JSON reports."""
    processes = []
    for rank in range(world_size):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size), "PYTHONUNBUFFERED": "1"}
        env.pop("WORKER", None)
        env.pop("NUM_WORKERS", None)
        command = [sys.executable, str(WORKER), "--index", str(root), "--split", "refcoco:val", *args]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


@pytest.fixture(scope="module")
def rank_reports(shard_root):
    """One process per rank runs a 2-epoch train loader (1 worker) and an eval loader."""
    root, _ = shard_root
    return run_ranks(root, 2, "--modes", "train,eval", "--workers", "1", "--batches", "5", "--epochs", "2")


@pytest.mark.slow
def test_train_ranks_run_the_same_number_of_batches(shard_root, rank_reports):
    _, keys = shard_root
    assert [report["train"]["batches"] for report in rank_reports] == [[5, 5], [5, 5]]
    for report in rank_reports:
        assert set(report["train"]["keys"]) <= keys and len(report["train"]["keys"]) == 2 * 5 * 2
    # Ranks resample independently (seeded by rank): their streams differ.
    assert rank_reports[0]["train"]["keys"] != rank_reports[1]["train"]["keys"]


@pytest.mark.slow
def test_eval_ranks_see_every_sample_exactly_once(shard_root, rank_reports):
    _, keys = shard_root
    per_rank = [report["eval"]["keys"] for report in rank_reports]
    union = per_rank[0] + per_rank[1]
    assert len(union) == len(set(union)) and set(union) == keys
    assert sorted(len(keys_of_rank) for keys_of_rank in per_rank) == [6, 7]


def test_eval_workers_split_exactly_once_on_one_rank(shard_root, monkeypatch):
    root, keys = shard_root
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = SampleConfig(sam_size=128, clip_size=32)
    loader = make_loader(make_eval_pipeline(resolve_shards(root, "refcoco:val"), config, 2, workers=2), 2)
    seen = [key for batch in loader for key in batch["keys"]]
    assert len(seen) == len(set(seen)) and set(seen) == keys
