"""`make demo` is also a test: a shortened run into a temporary folder.

The data stages' outputs come from the session's demo chain (the `demo_chain` fixture runs
the same `keyseg` commands); copied in with their stage order's timestamps, make must find
them up to date and run only what follows: train (untrained and trained), evaluate, summary.
Whether a few training steps make the model better is not asked: that is a fact about the
recipe, not the code. The test asks that training ran, its losses are finite and the trainable
weights moved while the frozen ones did not.
"""

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent
TRAIN_STEPS = 3  # the first step has learning rate 0 (warmup): two steps move the weights


def seed_from_chain(chain, demo: Path, shards: Path) -> None:
    """The chain's data, prepared and shards where the Makefile expects them, older than
    anything make will write and in stage order, so make sees them as built by itself."""
    shutil.copytree(chain.data, demo / "data")
    shutil.copytree(chain.prepared, demo / "prepared")
    shutil.copytree(chain.shards, shards)
    start = time.time() - 600
    in_order = [demo / "data/demo_data_config.json", demo / "prepared/prepare_stats.json",
                demo / "data/reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json", shards / "index.json"]
    for offset, path in enumerate(in_order):
        os.utime(path, (start + 10 * offset, start + 10 * offset))


@pytest.mark.slow
def test_make_demo_runs_the_remaining_stages_and_trains(demo_chain, tmp_path):
    demo, shards = tmp_path / "demo", tmp_path / "shards"
    seed_from_chain(demo_chain, demo, shards)
    # The running venv is installed already (`make test` depends on setup): a fresh stamp
    # keeps this test from reinstalling it when pyproject.toml is newer than the venv's.
    stamp = tmp_path / "installed"
    stamp.touch()
    variables = [f"DEMO_DIR={demo}", f"DEMO_SHARDS={shards}", f"STAMP={stamp}",
                 f"DEMO_TRAIN_ARGS=optim.epochs=1 optim.steps_per_epoch={TRAIN_STEPS}"]
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}

    def make(*args):
        return subprocess.run(["make", "-C", str(ROOT), *args, *variables], capture_output=True, text=True,
                              timeout=1500, env=env)

    # The data stages are wired: make finds them up to date, and a newer keyword file
    # re-runs sharding and everything after it, but not demo-data or prepare.
    assert make("-q", f"{shards}/index.json").returncode == 0
    plan = make("-n", "-W", str(demo / "data/reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json"),
                f"{demo}/summary.json").stdout
    assert "bin/keyseg shard " in plan and "bin/keyseg train " in plan
    assert "bin/keyseg prepare " not in plan and "bin/keyseg demo-data " not in plan

    done = make("demo")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((demo / "summary.json").read_text())
    assert list(summary["stages"]) == ["evaluate-before", "train", "evaluate-after"]  # the rest was up to date
    assert "before and after training" in done.stderr  # keyseg prints its tables on stderr

    # Training ran its steps with finite losses.
    records = [json.loads(line) for line in (demo / "train/metrics.jsonl").read_text().splitlines()]
    steps = [record for record in records if "loss" in record]
    assert [record["step"] for record in steps] == list(range(1, TRAIN_STEPS + 1))
    for record in steps:
        assert all(math.isfinite(record[name]) for name in ("loss", "ce", "bce", "dice", "key")), record
    assert summary["training"]["steps"] == TRAIN_STEPS

    # Same initialisation (same seed) before and after: the trainable weights moved, the
    # frozen keyword projection did not, and nothing became NaN.
    before = load_file(demo / "untrained/export/model.safetensors")
    after = load_file(demo / "train/export/model.safetensors")
    assert before.keys() == after.keys()
    assert all(np.isfinite(tensor).all() for tensor in after.values())
    moved = {name for name in after if not np.array_equal(before[name], after[name])}
    for group in ("llm.", "mm_projector.", "vision_tower.", "sam.mask_decoder.", "text_hidden_fcs.",
                  "keyword_fusion."):
        assert any(name.startswith(group) for name in moved), group
    assert not any(name.startswith("keyword_text_proj.") for name in moved)

    # Both evaluations scored every sample of both splits.
    index = json.loads((shards / "index.json").read_text())
    for name in ("eval_before", "eval_after"):
        metrics = json.loads((demo / name / "metrics.json").read_text())
        for split in ("reasonseg:val", "reasonseg:test"):
            assert metrics[split]["count"] == index["splits"][split]["samples"], (name, split)
            assert summary[name.replace("eval_", "")][split]["giou"] == metrics[split]["giou"]
    after_metrics = json.loads((demo / "eval_after/metrics.json").read_text())
    # The keyword-match rate, judged on refCOCO val (gold keyword: the expression).
    assert summary["keyword_match"]["refcoco:val"] == after_metrics["refcoco:val"]["keywords"]["match_rate"]
    gallery = json.loads((demo / "eval_after/gallery/gallery.json").read_text())
    assert (demo / "eval_after/gallery/index.html").is_file() and gallery["worst"] and gallery["best"]

    # A second run finds everything up to date: make has nothing to do.
    assert make("-q", f"{demo}/summary.json").returncode == 0

    # The README's pictures come out of this run: PNGs of the documented widths.
    from PIL import Image

    from pipelines import demo_report

    written = demo_report.run(demo_report.PicturesConfig(demo_dir=demo, shards_dir=shards,
                                                         out_dir=tmp_path / "pictures")).written
    assert sorted(path.name for path in written) == ["gallery.png", "prepare_overlays.png", "shard_stats.png"]
    for name, width in (("gallery.png", 900), ("prepare_overlays.png", 480)):
        with Image.open(tmp_path / "pictures" / name) as picture:
            assert picture.format == "PNG" and picture.width == width
    assert (tmp_path / "pictures/shard_stats.png").read_bytes() == (shards / "stats.png").read_bytes()
