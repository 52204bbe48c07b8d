"""`make demo` is also a test: a shortened run of every stage into a temporary folder."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_demo_runs_every_stage_and_improves(tmp_path):
    demo, shards = tmp_path / "demo", tmp_path / "shards"
    variables = [f"DEMO_DIR={demo}", f"DEMO_SHARDS={shards}", "DEMO_IMAGES=48",
                 "DEMO_TRAIN_ARGS=optim.epochs=1 optim.steps_per_epoch=120"]
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(["make", "-C", str(ROOT), "demo", *variables], capture_output=True, text=True,
                          timeout=1500, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((demo / "summary.json").read_text())
    assert set(summary["stages"]) == {"demo-data", "prepare", "mine-keywords", "shard", "verify",
                                      "evaluate-before", "train", "evaluate-after"}
    for split in ("reasonseg:val", "reasonseg:test"):
        assert summary["after"][split]["giou"] > summary["before"][split]["giou"], summary
    assert (demo / "eval_after" / "gallery" / "index.html").is_file()
    # the trained model's keyword-match rate, judged on refCOCO val (gold keyword: the expression)
    assert 0.0 <= summary["keyword_match"]["refcoco:val"] <= 1.0
    assert "before and after training" in done.stdout

    # A second run finds everything up to date: make has nothing to do.
    again = subprocess.run(["make", "-C", str(ROOT), "-q", f"{demo}/summary.json", *variables], env=env)
    assert again.returncode == 0

    # The README's pictures come out of this run: valid PNGs, the gallery 900 px wide.
    from PIL import Image

    from pipelines.demo import pictures

    written = pictures(demo, shards, tmp_path / "pictures")
    assert sorted(path.name for path in written) == ["gallery.png", "prepare_overlays.png", "shard_stats.png"]
    with Image.open(tmp_path / "pictures" / "gallery.png") as gallery:
        assert gallery.format == "PNG" and gallery.width == 900 and gallery.height > 300
