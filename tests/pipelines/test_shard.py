import io
import json
import tarfile

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from keyseg.shards.samples import decode_mask
from keyseg.shards.tario import UnsafeMemberError, iter_samples, unpack_shard
from pipelines import demo_data, prepare, shard


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    demo_data.run(demo_data.DemoDataConfig(out=root / "data", images=12))
    prepare.run(prepare.PrepareConfig(data_dir=root / "data", out=root / "prepared", workers=1, show_progress=False))
    keywords = root / "keywords.json"
    explanatory = json.loads((root / "data/reason_seg/ReasonSeg/explanatory/train.json").read_text())
    keywords.write_text(json.dumps([{**record, "keyword": f"kw{index}"} for index, record in enumerate(explanatory)]))
    return root


def write(prepared, out, **options):
    options.setdefault("keywords", prepared / "keywords.json")
    return shard.run(shard.ShardConfig(prepared=prepared / "prepared", out=out, workers=1, show_progress=False,
                                       **options))


def samples_of(out, split):
    index = json.loads((out / "index.json").read_text())
    for entry in index["splits"][split]["shards"]:
        with open(out / entry["path"], "rb") as handle:
            yield from iter_samples(handle)


def test_round_trip_masks_images_and_keywords_are_exact(prepared, tmp_path):
    out = tmp_path / "shards"
    result = write(prepared, out)
    assert not result.errors
    manifests = {}
    for path in (prepared / "prepared").glob("*/*/manifest.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            manifests[record["id"]] = record
    seen = set()
    for split in result.index["splits"]:
        for key, members in samples_of(out, split):
            assert "." not in key
            record = manifests[key]
            assert members["jpg"] == (prepared / "data" / record["image"]).read_bytes()
            sample = json.loads(members["json"])
            assert sorted(sample) == ["conversations", "height", "id", "image", "source", "split", "targets", "width"]
            assert sample["conversations"] == record.get("conversations")  # VQA turns, else null
            for target, prepared_target in zip(sample["targets"], record["targets"], strict=True):
                assert sorted(target) == ["ann_id", "explanatory", "explanatory_query", "is_sentence", "keyword",
                                          "mask", "ref_id", "texts"]
                png = cv2.imread(str(prepared / "prepared" / prepared_target["mask"]), cv2.IMREAD_UNCHANGED)
                np.testing.assert_array_equal(decode_mask(target["mask"]), png)
                if split == "reasonseg:train":
                    assert target["keyword"].startswith("kw") and target["explanatory"]
                elif split.startswith("refcoco"):
                    assert target["keyword"] == target["texts"][0]
                else:
                    assert target["keyword"] is None
            seen.add(key)
    assert seen == set(manifests)
    assert result.index["totals"]["samples"] == len(manifests)


def test_same_inputs_and_seed_give_identical_bytes(prepared, tmp_path):
    first, second, other = (write(prepared, tmp_path / name, seed=seed, maxcount=5)
                            for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    for split, entry in first.index["splits"].items():
        paths = [shard_entry["path"] for shard_entry in entry["shards"]]
        assert paths == [shard_entry["path"] for shard_entry in second.index["splits"][split]["shards"]]
        for path in paths:
            assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
    train = "reasonseg:train"
    assert [s["sha256"] for s in first.index["splits"][train]["shards"]] != \
        [s["sha256"] for s in other.index["splits"][train]["shards"]]
    assert len(first.index["splits"][train]["shards"]) == 2  # 6 train images, maxcount 5
    with tarfile.open(tmp_path / "a" / first.index["splits"][train]["shards"][0]["path"]) as tar:
        member = tar.getmembers()[0]
        assert (member.mtime, member.uid, member.gid, member.uname, member.mode) == (0, 0, 0, "", 0o444)


def test_second_run_keeps_every_split_and_a_new_keyword_file_redoes_only_train(prepared, tmp_path):
    out = tmp_path / "shards"
    write(prepared, out)
    times = {path: path.stat().st_mtime_ns for path in out.rglob("*.tar")}
    again = write(prepared, out)
    assert len(again.skipped_splits) == len(again.index["splits"])
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*.tar")} == times
    keywords = json.loads((prepared / "keywords.json").read_text())
    changed = prepared / "keywords2.json"
    changed.write_text(json.dumps([{**record, "keyword": "other"} for record in keywords]))
    third = write(prepared, out, keywords=changed)
    assert set(third.index["splits"]) - set(third.skipped_splits) == {"reasonseg:train"}
    assert third.index["inputs"]["keywords"]["path"] == str(changed)


def card_metadata(out):
    """The YAML front matter of the shard set's dataset card."""
    import yaml

    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_dataset_card_lists_every_split_of_the_index_and_a_rerun_rewrites_it(prepared, tmp_path):
    out = tmp_path / "shards"
    result = write(prepared, out)
    metadata = card_metadata(out)
    configs = {config["config_name"]: {files["split"]: files["path"] for files in config["data_files"]}
               for config in metadata["configs"]}
    expected = {}
    for name, split in result.index["splits"].items():
        paths = [entry["path"] for entry in split["shards"]]
        expected.setdefault(split["source"], {})[split["split"]] = paths
        expected.setdefault("all", {}).setdefault(split["split"], []).extend(paths)
    assert configs == expected
    assert all((out / path).is_file() for splits in configs.values() for paths in splits.values() for path in paths)
    assert [config["config_name"] for config in metadata["configs"] if config.get("default")] == ["all"]
    # datasets writes dataset_info sorted by config name
    assert [info["config_name"] for info in metadata["dataset_info"]] == sorted(configs)
    card = (out / "README.md").read_bytes()
    (out / "README.md").write_text("stale")
    again = write(prepared, out)  # nothing to do: every split is kept, the card is written again
    assert len(again.skipped_splits) == len(again.index["splits"])
    assert (out / "README.md").read_bytes() == card
    assert json.loads((out / "index.json").read_text()) == again.index


def test_missing_image_is_an_error_row_and_the_rest_is_written(prepared, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    record = json.loads((copy / "prepared/reasonseg/val/manifest.jsonl").read_text().splitlines()[0])
    config = json.loads((copy / "prepared/prepare_config.json").read_text())
    config["data_dir"] = str(copy / "data")
    (copy / "prepared/prepare_config.json").write_text(json.dumps(config))
    (copy / "data" / record["image"]).unlink()
    result = CliRunner().invoke(app, ["shard", "--prepared", str(copy / "prepared"), "--out", str(tmp_path / "s"),
                                      "--split", "reasonseg:val", "--no-progress", "--workers", "1"])
    assert result.exit_code == 1
    errors = json.loads((tmp_path / "s/shard_errors.json").read_text())
    assert [error["id"] for error in errors] == [record["id"]] and "No such file" in errors[0]["reason"]
    index = json.loads((tmp_path / "s/index.json").read_text())
    assert index["splits"]["reasonseg:val"]["samples"] == 2  # 3 val images, one missing


def test_unknown_split_is_a_clear_error(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="no prepared manifest for reasonseg:nope"):
        write(prepared, tmp_path / "s", splits=["reasonseg:nope"])


def test_verify_passes_then_catches_truncation_and_a_flipped_byte(prepared, tmp_path):
    out = tmp_path / "shards"
    result = write(prepared, out, maxcount=4)
    ok = CliRunner().invoke(app, ["shards", "verify", "--shards", str(out), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    shards = [entry["path"] for entry in result.index["splits"]["refcoco:train"]["shards"]]
    truncated, flipped = out / shards[0], out / shards[1]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    data = bytearray(flipped.read_bytes())
    data[700] ^= 0xFF  # inside the first member's data
    flipped.write_bytes(bytes(data))
    bad = CliRunner().invoke(app, ["shards", "verify", "--shards", str(out), "--no-progress"], env={"COLUMNS": "200"})
    assert bad.exit_code == 1
    report = json.loads((out / "verify_report.json").read_text())
    problems = {(problem["shard"], problem["problem"].split(" ")[0]) for problem in report["problems"]}
    assert (shards[0], "size") in problems and (shards[1], "sha256") in problems
    assert any(p["shard"] == shards[0] and "unreadable tar" in p["problem"] for p in report["problems"])


def hostile_shard(path, names):
    with tarfile.open(path, "w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))


@pytest.mark.parametrize("name", ["../escape.jpg", "/tmp/absolute.json", "sub/dir.jpg", "..json"])
def test_hostile_member_names_cannot_escape(tmp_path, name):
    shard_path = tmp_path / "hostile.tar"
    hostile_shard(shard_path, ["fine.jpg", name])
    out = tmp_path / "inspect" / "here"
    with pytest.raises(UnsafeMemberError):
        unpack_shard(shard_path, out)
    assert not (tmp_path / "inspect" / "escape.jpg").exists() and not (tmp_path / "escape.jpg").exists()
    # Every name is checked before anything is written: not even the fine member lands.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["hostile.tar"]
    cli = CliRunner().invoke(app, ["shards", "unpack", "--shard", str(shard_path), "--out", str(tmp_path / "cli")])
    assert cli.exit_code == 1 and "not a plain" in cli.output  # a bad data file: exit 1


def test_stats_reports_counts_and_writes_a_picture(prepared, tmp_path):
    out = tmp_path / "shards"
    write(prepared, out)
    result = CliRunner().invoke(app, ["shards", "stats", "--shards", str(out)])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["reasonseg:train"]["keyword_coverage"] == 1.0 and stats["reasonseg:val"]["keyword_coverage"] == 0
    assert stats["refcoco:train"]["targets"] > stats["refcoco:train"]["samples"]
    assert (out / "stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refs_without_sentences_are_dropped_and_an_image_without_any_is_reported(prepared, tmp_path):
    # A ref with no sentence gives no query; a sample every reader would refuse is never packed.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared / "prepared", copy / "prepared")
    shutil.copy(prepared / "keywords.json", copy / "keywords.json")
    manifest = copy / "prepared" / "refcoco" / "train" / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    several = next(r for r in records if len(r["targets"]) > 1)
    several["targets"][0]["texts"] = []
    lone = next(r for r in records if r is not several)
    for target in lone["targets"]:
        target["texts"] = []
    manifest.write_text("".join(json.dumps(record) + "\n" for record in records))
    out = tmp_path / "shards"
    result = write(copy, out, data_dir=prepared / "data")
    assert [(error["id"], "no target has a text" in error["reason"]) for error in result.errors] == [(lone["id"], True)]
    written = {key: json.loads(members["json"]) for key, members in samples_of(out, "refcoco:train")}
    assert lone["id"] not in written and len(written) == len(records) - 1
    assert len(written[several["id"]]["targets"]) == len(several["targets"]) - 1
    assert all(target["texts"] for sample in written.values() for target in sample["targets"])
