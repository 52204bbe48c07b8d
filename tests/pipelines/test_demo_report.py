"""`keyseg demo-report`: the time records, summary and picture picks of `make demo`."""

import json
import sys

from typer.testing import CliRunner

from cli import app
from keyseg.demo.report import demo_summary, gallery_picks, stage_times


def test_gallery_picks_the_best_rows_then_the_worst(tmp_path):
    listing = {"worst": [{"image": f"images/w{n}.png"} for n in range(3)],
               "best": [{"image": f"images/b{n}.png"} for n in range(3)]}
    (tmp_path / "gallery.json").write_text(json.dumps(listing))
    picks = [path.relative_to(tmp_path).as_posix() for path in gallery_picks(tmp_path, 3)]
    assert picks == ["images/b0.png", "images/b1.png", "images/w0.png"]
    assert [path.name for path in gallery_picks(tmp_path, 1)] == ["w0.png"]


def test_gallery_picks_nothing_without_a_gallery_listing(tmp_path):
    assert gallery_picks(tmp_path, 3) == []


def test_time_records_a_stage_that_succeeds_and_not_one_that_fails(tmp_path):
    times = tmp_path / "times"
    ok = CliRunner().invoke(app, ["demo-report", "time", "--stage", "prepare", "--times-dir", str(times), "--",
                                  sys.executable, "-c", "import sys; sys.exit(0)", "--not-an-option-of-keyseg"])
    assert ok.exit_code == 0, ok.output
    failed = CliRunner().invoke(app, ["demo-report", "time", "--stage", "train", "--times-dir", str(times), "--",
                                      sys.executable, "-c", "import sys; sys.exit(3)"])
    assert failed.exit_code == 1
    assert sorted(path.name for path in times.iterdir()) == ["prepare.json"]  # make reruns the failed one
    record = json.loads((times / "prepare.json").read_text())
    assert record["stage"] == "prepare" and record["seconds"] >= 0


def test_stage_times_follow_the_demo_order_with_unknown_stages_last(tmp_path):
    for stage in ("train", "extra", "demo-data"):
        (tmp_path / f"{stage}.json").write_text(json.dumps({"stage": stage, "seconds": 1.5}))
    assert list(stage_times(tmp_path)) == ["demo-data", "train", "extra"]


def test_summary_prints_before_and_after_and_writes_summary_json(tmp_path):
    demo = tmp_path / "demo"
    for name, giou in (("eval_before", 0.05), ("eval_after", 0.4)):
        (demo / name).mkdir(parents=True)
        metrics = {"reasonseg:val": {"giou": giou, "ciou": giou / 2, "keywords": None},
                   "refcoco:val": {"giou": giou, "ciou": giou, "keywords": {"match_rate": 0.25}}}
        (demo / name / "metrics.json").write_text(json.dumps(metrics))
    (demo / "times").mkdir()
    (demo / "times" / "train.json").write_text(json.dumps({"stage": "train", "seconds": 12.0}))
    result = CliRunner().invoke(app, ["demo-report", "summary", "--demo-dir", str(demo)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    summary = json.loads((demo / "summary.json").read_text())
    assert summary == demo_summary(demo)
    assert summary["before"] == {"reasonseg:val": {"giou": 0.05, "ciou": 0.025}}  # reasonseg:test: not evaluated
    assert summary["after"]["reasonseg:val"]["giou"] == 0.4 and summary["stages"] == {"train": 12.0}
    assert summary["keyword_match"] == {"refcoco:val": 0.25}
    assert "before and after training" in result.output and "40.0" in result.output


def test_pictures_of_a_run_that_is_not_there_name_what_is_missing(tmp_path):
    out = tmp_path / "pictures"
    result = CliRunner().invoke(app, ["demo-report", "pictures", "--demo-dir", str(tmp_path), "--shards",
                                      str(tmp_path), "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "run `make demo` first" in result.output and "evaluation gallery" in result.output
    assert not out.exists()
