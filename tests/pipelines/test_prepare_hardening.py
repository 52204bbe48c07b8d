"""Hostile inputs to `keyseg prepare` and `keyseg shard`: each test builds its own.

Paths that leave the data folder, decompression bombs, wrong types, markup in file names,
manifest lines that are not records, an output folder that cannot be written. In every
case the bad record is one error row, the good records are written and nothing crashes.
"""

import io
import json
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from fixtures import COCO_IMAGES, coco_image, jpeg, ref, square, write_reasonseg, write_refer
from keyseg.images import DEFAULT_MAX_IMAGE_PIXELS, max_image_pixels
from keyseg.io import read_jsonl
from pipelines.prepare import PrepareConfig, run
from pipelines.shard import ShardConfig
from pipelines.shard import run as run_shard

BOMB_SIDE = 30000


def bomb_jpeg() -> bytes:
    """A real 8 x 8 JPEG of about 630 bytes whose SOF0 header says 30000 x 30000."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "JPEG", quality=50)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = BOMB_SIDE.to_bytes(2, "big") * 2  # height, then width
    assert len(data) < 1000
    return bytes(data)


def bomb_png() -> bytes:
    """A valid little PNG header announcing a 30000 x 30000 single-channel mask."""
    ihdr = BOMB_SIDE.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk
            + zlib.crc32(chunk).to_bytes(4, "big"))


def prepare(data, out, **options):
    options.setdefault("workers", 1)
    return run(PrepareConfig(data_dir=data, out=out, show_progress=False, **options))


def ids(out, source, split):
    path = out / source / split / "manifest.jsonl"
    return [record["id"] for record in read_jsonl(path)] if path.is_file() else None


def error_rows(out):
    report = json.loads((out / "prepare_report.json").read_text())
    return {(row["file"], row["code"]): row["reason"] for row in report["issues"] if row["severity"] == "error"}


def keyseg_cli(*args):
    """The real command in a child process; returns (exit code, stderr, peak RSS of the child in MB).

    The peak is measured around the child only (a wrapper process that runs nothing else)."""
    wrapper = ("import resource, subprocess, sys; "
               "done = subprocess.run([sys.executable, '-m', 'cli', *sys.argv[1:]], capture_output=True, text=True); "
               "sys.stderr.write(done.stderr); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); "
               "sys.exit(done.returncode)")
    done = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], env={**os.environ, "COLUMNS": "200"})
    return done.returncode, done.stderr, int(done.stdout.strip().splitlines()[-1])


# -- 4: paths from data files stay inside the data folder ------------------------------------------


def test_image_paths_that_leave_the_data_folder_are_refused(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    secret = tmp_path / "secret.jpg"  # a perfectly good JPEG, outside the data folder
    secret.write_bytes(jpeg(60, 40, seed=5))
    images = [coco_image(1), {**coco_image(2), "file_name": str(secret)},
              {**coco_image(3), "file_name": "../../../../../../secret.jpg"}, coco_image(4)]
    annotations = [{"id": 10 + i, "image_id": i, "segmentation": [[2, 2, 30, 2, 30, 20]]} for i in range(1, 5)]
    write_refer(data, "refcoco", "unc", [images[0], images[3]], annotations,
                [ref(i, 10 + i, i, "train") for i in range(1, 5)])
    # write_refer wrote instances.json with the two good entries; put the hostile ones in too.
    instances = json.loads((data / "refer_seg/refcoco/instances.json").read_text())
    instances["images"] = images
    (data / "refer_seg/refcoco/instances.json").write_text(json.dumps(instances))
    write_reasonseg(data, "val", "good", [square(4, 4, 20)])
    write_reasonseg(data, "val", "linked", [square(4, 4, 20)])
    linked = data / "reason_seg/ReasonSeg/val/linked.jpg"
    linked.unlink()
    linked.symlink_to(secret)

    result = prepare(data, out, sources=["refcoco:unc:train", "reasonseg:val"])
    assert ids(out, "refcoco", "train") == ["refcoco-train-1", "refcoco-train-4"]
    assert ids(out, "reasonseg", "val") == ["reasonseg-val-good"]
    rows = error_rows(out)
    unsafe = {file: reason for (file, code), reason in rows.items() if code == "unsafe_path"}
    assert set(unsafe) == {"refer_seg/refcoco/instances.json", "reason_seg/ReasonSeg/val/linked.jpg"}
    reasons = [row["reason"] for row in json.loads((out / "prepare_report.json").read_text())["issues"]
               if row["code"] == "unsafe_path"]
    assert len(reasons) == 3 and any("is absolute" in r for r in reasons) and any("leaves" in r for r in reasons)
    assert result.failed == 3
    # The one image folder may itself be a link (a shared COCO copy): that still works.
    shared = tmp_path / "shared_coco"
    (data / COCO_IMAGES).rename(shared)
    (data / COCO_IMAGES).symlink_to(shared, target_is_directory=True)
    again = prepare(data, tmp_path / "out2", sources=["refcoco:unc:train"])
    assert ids(tmp_path / "out2", "refcoco", "train") == ["refcoco-train-1", "refcoco-train-4"] and again.failed == 2


def shard_members(out):
    members = {}
    for tar_path in out.rglob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                members[member.name] = tar.extractfile(member).read()
    return members


def good_prepared(tmp_path, names=("a", "b", "c")):
    data, prepared = tmp_path / "data", tmp_path / "prepared"
    for name in names:
        write_reasonseg(data, "val", name, [square(4, 4, 20)])
    assert prepare(data, prepared).failed == 0
    manifest = prepared / "reasonseg/val/manifest.jsonl"
    return data, prepared, manifest, read_jsonl(manifest)


def test_shard_reads_manifest_paths_only_inside_their_folders(tmp_path):
    data, prepared, manifest, (a, b, c) = good_prepared(tmp_path)
    secret_image, secret_mask = tmp_path / "secret.jpg", tmp_path / "secret.png"
    secret_image.write_bytes(b"\xff\xd8SECRET-IMAGE-BYTES" + jpeg(64, 48, seed=9))
    secret_mask.write_bytes((prepared / a["targets"][0]["mask"]).read_bytes())
    hostile = [
        {**a, "image": str(secret_image)},
        {**b, "image": "reason_seg/ReasonSeg/val/../../../../secret.jpg"},
        {**c, "targets": [{**c["targets"][0], "mask": "../secret.png"}]},
    ]
    passwd = {**a, "id": "passwd", "image": "/etc/passwd"}
    manifest.write_text("".join(json.dumps(record) + "\n" for record in [*hostile, passwd]))
    result = run_shard(ShardConfig(prepared=prepared, out=tmp_path / "shards", workers=1, show_progress=False))
    assert sorted(error["id"] for error in result.errors) == sorted(["passwd", a["id"], b["id"], c["id"]])
    reasons = " ".join(error["reason"] for error in result.errors)
    assert "is absolute" in reasons and "leaves" in reasons
    members = shard_members(tmp_path / "shards")
    assert members == {}  # nothing was packed: every record pointed outside
    assert result.index["splits"]["reasonseg:val"]["samples"] == 0


# -- 6: decompression bombs and oversized declared sizes -------------------------------------------


def bomb_data(data):
    write_reasonseg(data, "val", "good1", [square(4, 4, 20)])
    write_reasonseg(data, "val", "good2", [square(4, 4, 20)])
    _, bomb = write_reasonseg(data, "val", "bomb", [square(4, 4, 20)])
    bomb.write_bytes(bomb_jpeg())
    images = [coco_image(1), coco_image(2), coco_image(3), {**coco_image(4), "height": BOMB_SIDE, "width": BOMB_SIDE}]
    annotations = [{"id": 11, "image_id": 1, "segmentation": [[2, 2, 30, 2, 30, 20]]},
                   {"id": 12, "image_id": 2, "segmentation": [[2, 2, 30, 2, 30, 20]]},
                   {"id": 13, "image_id": 3, "segmentation": {"size": [BOMB_SIDE, BOMB_SIDE], "counts": "0"}},
                   {"id": 14, "image_id": 4, "segmentation": [[2, 2, 30, 2, 30, 20]]}]
    write_refer(data, "refcoco", "unc", images[:3], annotations, [ref(i, 10 + i, i, "train") for i in range(1, 5)])
    instances = json.loads((data / "refer_seg/refcoco/instances.json").read_text())
    instances["images"] = images
    (data / "refer_seg/refcoco/instances.json").write_text(json.dumps(instances))
    (data / COCO_IMAGES / images[1]["file_name"]).write_bytes(bomb_jpeg())


@pytest.mark.parametrize("options", [[], ["--decode-images"], ["--visualize", "5"]])
def test_a_decompression_bomb_is_one_error_and_is_never_decoded(tmp_path, options):
    data, out = tmp_path / "data", tmp_path / "out"
    bomb_data(data)
    code, stderr, peak_mb = keyseg_cli("prepare", "--data-dir", str(data), "--out", str(out), "--workers", "2",
                                       "--no-progress", "--source", "reasonseg:val", "--source", "refcoco:unc:train",
                                       *options)
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert ids(out, "reasonseg", "val") == ["reasonseg-val-good1", "reasonseg-val-good2"]
    assert ids(out, "refcoco", "train") == ["refcoco-train-1"]
    rows = error_rows(out)
    assert "900,000,000 pixels" in rows[("refer_seg/refcoco/instances.json", "bad_image_entry")]
    assert "bomb" in rows[("reason_seg/ReasonSeg/val/bomb.jpg", "bad_image")]
    assert "bomb" in rows[(f"{COCO_IMAGES}/{coco_image(2)['file_name']}", "bad_image")]
    assert "RLE `size`" in rows[("refer_seg/refcoco/instances.json", "bad_segmentation")]
    assert len(rows) == 4
    # Decoding one 30000 x 30000 image takes 2.7 GB; nothing here came near it.
    assert peak_mb < 1000


def test_max_image_pixels_option_bounds_prepare_and_shard(tmp_path):
    data, prepared, manifest, records = good_prepared(tmp_path)
    # The good images are 64 x 48 = 3072 pixels: a bound of 3071 refuses each of them.
    result = prepare(data, tmp_path / "small", max_image_pixels=3071)
    assert ids(tmp_path / "small", "reasonseg", "val") == [] and result.failed == 3
    assert "over the bound of 3,071" in " ".join(error_rows(tmp_path / "small").values())
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS  # the call left the process bound as it was
    shards = run_shard(ShardConfig(prepared=prepared, out=tmp_path / "s", workers=2, show_progress=False,
                                   max_image_pixels=3071))
    assert len(shards.errors) == 3 and "over the bound" in shards.errors[0]["reason"]
    # Spawned workers start with the default bound: the task must carry the run's bound to them.
    cli = CliRunner().invoke(app, ["prepare", "--data-dir", str(data), "--out", str(tmp_path / "c"),
                                   "--max-image-pixels", "3071", "--no-progress", "--workers", "2"])
    assert cli.exit_code == 1 and "3 failed" in cli.output
    assert CliRunner().invoke(app, ["shard", "--prepared", str(prepared), "--out", str(tmp_path / "s2"),
                                    "--max-image-pixels", "0"]).exit_code == 2


def test_shard_refuses_bomb_images_and_bomb_masks_unread(tmp_path):
    data, prepared, manifest, (a, b, c) = good_prepared(tmp_path)
    (data / a["image"]).write_bytes(bomb_jpeg())
    (prepared / b["targets"][0]["mask"]).write_bytes(bomb_png())
    code, stderr, peak_mb = keyseg_cli("shard", "--prepared", str(prepared), "--out", str(tmp_path / "s"),
                                       "--workers", "2", "--no-progress")
    assert code == 1 and "Traceback" not in stderr
    errors = {error["id"]: error["reason"] for error in json.loads((tmp_path / "s/shard_errors.json").read_text())}
    assert set(errors) == {a["id"], b["id"]}
    assert "bomb" in errors[a["id"]] and "900,000,000 pixels" in errors[b["id"]]
    assert sorted(shard_members(tmp_path / "s")) == [f"{c['id']}.jpg", f"{c['id']}.json"]
    assert peak_mb < 1000


def test_an_image_only_the_overlay_decode_finds_broken_is_one_error(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    for name in ("a", "b"):
        write_reasonseg(data, "val", name, [square(4, 4, 20)])
    _, image = write_reasonseg(data, "val", "headeronly", [square(4, 4, 20)])
    whole = image.read_bytes()
    image.write_bytes(whole[: whole.index(b"\xff\xda")])  # the header is fine, the pixels are gone
    result = prepare(data, out, visualize=3)
    assert ids(out, "reasonseg", "val") == ["reasonseg-val-a", "reasonseg-val-b"]
    # Pillow 13 reads this header and OpenCV then fails; Pillow 12 (what gradio allows) already
    # fails on the header. Either way it is one bad_image row.
    (row, reason), = error_rows(out).items()
    assert row == ("reason_seg/ReasonSeg/val/headeronly.jpg", "bad_image")
    assert reason == "OpenCV cannot decode it" or reason.startswith("not a readable image (cannot identify")
    assert result.failed == 1
    assert sorted(path.name for path in (out / "reasonseg/val/masks").iterdir()) == \
        ["reasonseg-val-a_0.png", "reasonseg-val-b_0.png"]  # the broken record's mask went with it
    assert len(list((out / "reasonseg/val/overlays").iterdir())) == 2


# -- 7: wrong types are per-record errors naming the file and the field -----------------------------


def test_wrong_types_in_refer_and_reasonseg_files_cost_only_their_records(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    images = [coco_image(i) for i in range(1, 6)]
    del images[4]["height"]
    annotations = [{"id": 10 + i, "image_id": i, "segmentation": [[2, 2, 30, 2, 30, 20]]} for i in range(1, 6)]
    refs = [ref(1, 11, 1, "train"),
            {**ref(2, 12, 2, "train"), "ann_id": [12, 13]},
            {**ref(3, 13, 3, "train"), "split": ["train"]},
            {**ref(4, 14, 4, "train"), "sentences": ["a red box", "the box"]},
            ref(5, 15, 5, "train"),
            ref(6, 11, 1, "val")]
    write_refer(data, "refcoco", "unc", images[:4], annotations, refs)
    instances = json.loads((data / "refer_seg/refcoco/instances.json").read_text())
    instances["images"] = images
    (data / "refer_seg/refcoco/instances.json").write_text(json.dumps(instances))
    write_reasonseg(data, "train", "good", [square(4, 4, 20)])
    write_reasonseg(data, "train", "listtext", [square(4, 4, 20)], extra={"text": [["nested"]]})
    write_reasonseg(data, "train", "strshapes", [square(4, 4, 20)], extra={"shapes": "not a list"})
    write_reasonseg(data, "train", "hugepoint", [{"label": "target", "points": [[0, 0], [10**400, 1], [1, 1]]}])
    write_reasonseg(data, "train", "farpoint", [{"label": "target", "points": [[0, 0], [1e6, 0], [0, 1e6]]}])
    (data / "reason_seg/ReasonSeg/explanatory").mkdir(parents=True)
    (data / "reason_seg/ReasonSeg/explanatory/train.json").write_text(json.dumps([
        {"image": ["good.jpg"], "query": "q", "outputs": "o"},
        {"image": "good.jpg", "query": "what is red?", "outputs": "the box"},
    ]))

    result = CliRunner().invoke(app, ["prepare", "--data-dir", str(data), "--out", str(out), "--workers", "1",
                                      "--no-progress"], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert ids(out, "refcoco", "train") == ["refcoco-train-1"]
    assert ids(out, "refcoco", "val") == ["refcoco-val-1"]
    (good,) = read_jsonl(out / "reasonseg/train/manifest.jsonl")
    assert good["id"] == "reasonseg-train-good"
    assert good["targets"][0]["explanatory"] == {"query": "what is red?", "outputs": "the box"}
    report = json.loads((out / "prepare_report.json").read_text())["issues"]
    errors = sorted((row["file"].split("/")[-1], row["reason"]) for row in report if row["severity"] == "error")
    assert errors == [
        ("farpoint.json", "shape 0: its outline is 3,414,214 pixels long, over 64 times the 64x48 "
                          "image's perimeter"),
        ("hugepoint.json", "shape 0: `points` must be a list of [x, y] finite numbers within +-2147483647"),
        ("instances.json", "ref 5: image 5 lacks `height`"),
        ("listtext.json", "`text` must be a non-empty list of strings (item 0 is list)"),
        ("refs(unc).p", "ref 2 `ann_id` is list, expected an integer"),
        ("refs(unc).p", "ref 3 `split` is list, expected a string"),
        ("refs(unc).p", "ref 4 `sentences[0]` is str, expected a dict with `sent`"),
        ("strshapes.json", "`shapes` must be a list, found str"),
        ("train.json", "record 0: `image` is list, expected a string"),
    ]


# -- 9: data text printed through rich is escaped ----------------------------------------------------


def test_markup_in_file_names_prints_as_itself(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    json_file, _ = write_reasonseg(data, "val", "[x, y]", [square(4, 4, 20)])
    json_file.write_text("{broken")
    write_reasonseg(data, "val", "[blink]fine", [square(4, 4, 20)])
    write_refer(data, "refcoco", "unc", [coco_image(1)], [{"id": 11, "image_id": 1, "segmentation": []}],
                [ref(1, 11, 1, "train")], write_images=False)
    instances = json.loads((data / "refer_seg/refcoco/instances.json").read_text())
    instances["images"][0]["file_name"] = "[/]x.jpg"
    (data / "refer_seg/refcoco/instances.json").write_text(json.dumps(instances))
    result = CliRunner().invoke(app, ["prepare", "--data-dir", str(data), "--out", str(out), "--workers", "1",
                                      "--no-progress", "--source", "reasonseg:val", "--source", "refcoco:unc:train"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "[x, y].json" in result.output and "[/]x.jpg" in result.output
    assert len(ids(out, "reasonseg", "val")) == 1

    # shard: a manifest line whose id is markup is reported with the id as written.
    prepared_manifest = out / "reasonseg/val/manifest.jsonl"
    record = read_jsonl(prepared_manifest)[0]
    with open(prepared_manifest, "a") as handle:
        handle.write(json.dumps({**record, "id": "[/]"}) + "\n")
    shard = CliRunner().invoke(app, ["shard", "--prepared", str(out), "--out", str(tmp_path / "s"), "--workers", "1",
                                     "--no-progress", "--split", "reasonseg:val"], env={"COLUMNS": "250"})
    assert shard.exit_code == 1 and isinstance(shard.exception, SystemExit), shard.output
    assert "`id` '[/]' is not a plain name" in shard.output


# -- 14: manifest lines that are not records; outputs that cannot be written ------------------------


def test_manifest_lines_that_are_not_records_are_reported_by_line(tmp_path):
    data, prepared, manifest, (a, b, c) = good_prepared(tmp_path)
    lines = [json.dumps(a), "[1, 2]", "not json at all", json.dumps({**b, "width": "64"}), json.dumps(b),
             json.dumps(b), "[" * 100000, json.dumps(c), '{"id": "x", "targets": "none"}']
    manifest.write_text("\n".join(lines) + "\n")
    result = run_shard(ShardConfig(prepared=prepared, out=tmp_path / "s", workers=1, show_progress=False))
    by_line = {error["line"]: error["reason"] for error in result.errors}
    assert sorted(by_line) == [2, 3, 4, 6, 7, 9]
    assert all(reason.startswith(f"{manifest} line {line}: ") for line, reason in by_line.items())
    assert "not an object" in by_line[2] and "not JSON" in by_line[3] and "`width` is str" in by_line[4]
    assert "earlier line" in by_line[6] and "nested too deeply" in by_line[7] and "lacks `image`" in by_line[9]
    expected = [f"{record['id']}.{ext}" for record in (a, b, c) for ext in ("jpg", "json")]
    assert sorted(shard_members(tmp_path / "s")) == sorted(expected)
    assert result.index["splits"]["reasonseg:val"]["errors"] == 6


def test_unwritable_outputs_are_one_line_and_exit_1(tmp_path):
    data, prepared, manifest, records = good_prepared(tmp_path)
    # A worker process writes the masks: make their folder a regular file (fails for root too).
    out = tmp_path / "out"
    (out / "reasonseg/val").mkdir(parents=True)
    (out / "reasonseg/val/masks").write_text("in the way")
    result = CliRunner().invoke(app, ["prepare", "--data-dir", str(data), "--out", str(out), "--workers", "2",
                                      "--no-progress"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "reasonseg/val/masks" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    shard = CliRunner().invoke(app, ["shard", "--prepared", str(prepared), "--out", str(blocker / "shards"),
                                     "--workers", "2", "--no-progress"])
    assert shard.exit_code == 1 and isinstance(shard.exception, SystemExit), shard.output
    assert "Not a directory" in shard.output and len(shard.output.strip().splitlines()) == 1


def test_a_bad_prepare_config_or_keyword_file_is_one_line(tmp_path):
    data, prepared, manifest, records = good_prepared(tmp_path)
    config = prepared / "prepare_config.json"
    good_config = config.read_text()
    config.write_text("{not json")
    result = CliRunner().invoke(app, ["shard", "--prepared", str(prepared), "--out", str(tmp_path / "s"),
                                      "--workers", "1", "--no-progress"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "prepare_config.json: not JSON" in result.output and len(result.output.strip().splitlines()) == 1

    config.write_text(good_config)
    keywords = tmp_path / "keywords.json"
    keywords.write_text('{"image": "a.jpg"}')
    result = CliRunner().invoke(app, ["shard", "--prepared", str(prepared), "--out", str(tmp_path / "s"),
                                      "--workers", "1", "--no-progress", "--keywords", str(keywords)])
    assert result.exit_code == 1 and "expected a list" in result.output
    # Entries of a keyword file are checked one by one: a bad one is an error row, the good ones are used.
    train = tmp_path / "train"
    data_train, prepared_train = train / "data", train / "prepared"
    write_reasonseg(data_train, "train", "a", [square(4, 4, 20)])
    write_reasonseg(data_train, "train", "b", [square(4, 4, 20)])
    prepare(data_train, prepared_train)
    keywords.write_text(json.dumps([{"image": "a.jpg", "keyword": "the square"}, {"image": "b.jpg", "keyword": 5},
                                    ["not", "an", "entry"]]))
    shards = run_shard(ShardConfig(prepared=prepared_train, out=train / "s", keywords=keywords, workers=1,
                                   show_progress=False))
    assert [error["reason"].split(": ", 1)[1][:7] for error in shards.errors] == ["entry 1", "entry 2"]
    assert shards.index["splits"]["reasonseg:train"]["samples"] == 2
    assert shards.index["splits"]["reasonseg:train"]["targets_with_keyword"] == 1
