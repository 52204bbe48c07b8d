import json
import os
import pickle

import cv2
import numpy as np
from typer.testing import CliRunner

from cli import app
from fixtures import (coco_image, ref, rle_of_box, square, write_explanatory, write_reasonseg, write_refer)
from keyseg.io import read_jsonl
from pipelines.prepare import PrepareConfig, run
from random_shapes import random_shapes
from reference_impl import reference_mask


def prepare(data_dir, out, **options):
    return run(PrepareConfig(data_dir=data_dir, out=out, show_progress=False, **options))


def manifest(out, source, split):
    return read_jsonl(out / source / split / "manifest.jsonl")


def test_masks_bit_exact_with_reference_on_files(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    rng = np.random.default_rng(99)
    for index in range(40):
        width, height = (int(v) for v in rng.integers(30, 140, 2))
        write_reasonseg(data, "val", f"img{index:03d}", random_shapes(rng, width, height), width, height,
                        orientation=int(rng.integers(1, 9)) if index % 3 else None,
                        texts=("caf\u00e9 sign",), encoding="cp1252" if index % 7 == 0 else "utf-8")
    result = prepare(data, out, workers=2)
    assert result.failed == 0
    records = manifest(out, "reasonseg", "val")
    assert len(records) == 40
    for record in records:
        expected = reference_mask(data / record["image"].replace(".jpg", ".json"), data / record["image"])
        mask = cv2.imread(str(out / record["targets"][0]["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.ndim == 2
        np.testing.assert_array_equal(mask, expected, err_msg=record["id"])
        assert (record["height"], record["width"]) == expected.shape


def test_record_fields_and_explanatory_join(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    write_reasonseg(data, "train", "a b.c", [square(5, 5, 20)], texts=("find it", "locate it"), is_sentence=True)
    write_explanatory(data, [{"image": "a b.c.jpg", "json": "a b.c.json", "query": "find it", "outputs": "It is the square."}])
    prepare(data, out, workers=1)
    (record,) = manifest(out, "reasonseg", "train")
    assert "." not in record["id"] and " " not in record["id"]
    assert record["image"] == "reason_seg/ReasonSeg/train/a b.c.jpg"
    assert (record["width"], record["height"], record["source"], record["split"]) == (64, 48, "reasonseg", "train")
    (target,) = record["targets"]
    assert target["texts"] == ["find it", "locate it"] and target["is_sentence"] is True
    assert target["explanatory"] == {"query": "find it", "outputs": "It is the square."}
    assert (out / target["mask"]).is_file()
    config = json.loads((out / "prepare_config.json").read_text())
    assert config["resolved_sources"] == ["reasonseg:train"]
    assert json.loads((out / "prepare_stats.json").read_text())["reasonseg:train"]["targets"] == 1


def test_refer_masks_and_records(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    images = [coco_image(1), coco_image(2), coco_image(3)]
    annotations = [
        {"id": 10, "image_id": 1, "segmentation": [[2, 2, 30, 2, 30, 20, 2, 20], [40, 5, 50, 5, 45, 15]], "iscrowd": 0},
        {"id": 11, "image_id": 1, "segmentation": rle_of_box(5, 5, 10, 10, 60, 40), "iscrowd": 1},
        {"id": 12, "image_id": 2, "segmentation": [], "iscrowd": 0},
        {"id": 13, "image_id": 3, "segmentation": [[1, 1, 9, 1, 9, 9]], "iscrowd": 0},
    ]
    refs = [ref(1, 10, 1, "train", ("red box", "left one")), ref(2, 11, 1, "train"), ref(3, 12, 2, "val"),
            ref(4, 13, 3, "testA")]
    write_refer(data, "refcoco", "unc", images, annotations, refs)
    result = prepare(data, out, workers=1, sources=["refcoco:unc:train,val,testA"])
    (record,) = manifest(out, "refcoco", "train")
    assert record["id"] == "refcoco-train-1" and record["image_id"] == 1
    assert [t["ref_id"] for t in record["targets"]] == [1, 2]
    assert record["targets"][0]["texts"] == ["red box", "left one"]
    from pycocotools import mask as coco_mask
    for target, ann in zip(record["targets"], annotations[:2]):
        segmentation = ann["segmentation"]
        if isinstance(segmentation, list):
            expected = coco_mask.decode(coco_mask.frPyObjects(segmentation, 40, 60)).max(axis=2)
        else:
            expected = coco_mask.decode({**segmentation, "counts": segmentation["counts"].encode()})
        np.testing.assert_array_equal(cv2.imread(str(out / target["mask"]), cv2.IMREAD_UNCHANGED), expected)
    (empty,) = manifest(out, "refcoco", "val")
    assert not cv2.imread(str(out / empty["targets"][0]["mask"]), cv2.IMREAD_UNCHANGED).any()
    assert any(issue["code"] == "empty_segmentation" for issue in result.issues)
    assert result.failed == 0


def build_mixed_good_and_bad(data):
    for name in ("good1", "good2"):
        write_reasonseg(data, "val", name, [square(4, 4, 20)])
    bad_json, _ = write_reasonseg(data, "val", "badjson", [square(4, 4, 20)])
    bad_json.write_bytes(b'{"text": ["x"], "shapes": [')
    write_reasonseg(data, "val", "nokeys", [square(4, 4, 20)], extra={})
    nokeys = data / "reason_seg/ReasonSeg/val/nokeys.json"
    nokeys.write_text(json.dumps({"shapes": []}))
    _, image = write_reasonseg(data, "val", "noimage", [square(4, 4, 20)])
    image.unlink()
    _, image = write_reasonseg(data, "val", "corrupt", [square(4, 4, 20)])
    image.write_bytes(b"\xff\xd8 this is not a jpeg")
    json_file, _ = write_reasonseg(data, "val", "nojson", [square(4, 4, 20)])
    json_file.unlink()
    images = [coco_image(1), coco_image(2), coco_image(3)]
    annotations = [{"id": 10, "image_id": 1, "segmentation": [[2, 2, 30, 2, 30, 20]]},
                   {"id": 11, "image_id": 7, "segmentation": [[2, 2, 30, 2, 30, 20]]},
                   {"id": 12, "image_id": 3, "segmentation": [[2, 2, 30, 2, 30, 20]]}]
    # ref 2: no such annotation; ref 3: no such image entry; ref 4: its image file is missing.
    refs = [ref(1, 10, 1, "train"), ref(2, 99, 1, "train"), ref(3, 11, 7, "train"), ref(4, 12, 3, "train")]
    write_refer(data, "refcoco", "unc", images, annotations, refs)
    os.unlink(data / "refer_seg/images/mscoco/images/train2014" / images[2]["file_name"])

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {data / 'pwned'}",))

    write_refer(data, "refcoco+", "unc", images, annotations, [], write_images=False)
    (data / "refer_seg/refcoco+/refs(unc).p").write_bytes(pickle.dumps([Evil()], protocol=2))


def test_bad_inputs_become_error_rows_and_good_records_survive(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    build_mixed_good_and_bad(data)
    result = CliRunner().invoke(app, ["prepare", "--data-dir", str(data), "--out", str(out), "--workers", "2",
                                      "--no-progress", "--source", "reasonseg:val", "--source", "refcoco:unc:train",
                                      "--source", "refcoco+:unc:train"])
    assert result.exit_code == 1, result.output
    assert not (data / "pwned").exists()
    report = json.loads((out / "prepare_report.json").read_text())
    errors = {(row["file"], row["code"]) for row in report["issues"] if row["severity"] == "error"}
    val = "reason_seg/ReasonSeg/val/"
    assert errors == {
        (val + "badjson.json", "bad_annotation"),
        (val + "nokeys.json", "bad_annotation"),
        (val + "noimage.jpg", "missing_file"),
        (val + "corrupt.jpg", "bad_image"),
        (val + "nojson.json", "missing_file"),
        ("refer_seg/refcoco/refs(unc).p", "missing_annotation"),
        ("refer_seg/refcoco/refs(unc).p", "missing_image_entry"),
        ("refer_seg/images/mscoco/images/train2014/COCO_train2014_000000000003.jpg", "missing_file"),
        ("refer_seg/refcoco+/refs(unc).p", "bad_refer_file"),
    }
    reasons = " ".join(row["reason"] for row in report["issues"])
    assert "refused to load" in reasons and "ref 2 points at annotation 99" in reasons
    assert report["summary"]["errors"] == 9
    assert [r["id"] for r in manifest(out, "reasonseg", "val")] == ["reasonseg-val-good1", "reasonseg-val-good2"]
    (refer_record,) = manifest(out, "refcoco", "train")
    assert [t["ref_id"] for t in refer_record["targets"]] == [1]
    assert "9 failed" in result.output and "noimage.jpg" in result.output


def mtimes(out):
    return {path: path.stat().st_mtime_ns for path in out.rglob("masks/*.png")}


def test_second_run_does_no_work_and_changes_are_redone(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    for index in range(6):
        write_reasonseg(data, "test", f"img{index}", [square(index, index, 10 + index)])
    first = prepare(data, out, workers=2)
    assert first.stats["reasonseg:test"].converted == 6
    before = mtimes(out)

    second = prepare(data, out, workers=2)
    assert (second.stats["reasonseg:test"].converted, second.stats["reasonseg:test"].up_to_date) == (0, 6)
    assert mtimes(out) == before

    write_reasonseg(data, "test", "img2", [square(1, 1, 30)])  # changed polygon
    (data / "reason_seg/ReasonSeg/test/img5.jpg").unlink()
    (data / "reason_seg/ReasonSeg/test/img5.json").unlink()
    third = prepare(data, out, workers=1)
    assert (third.stats["reasonseg:test"].converted, third.stats["reasonseg:test"].up_to_date) == (1, 4)
    after = mtimes(out)
    changed = {path.name for path in after if after[path] != before.get(path)}
    assert changed == {"reasonseg-test-img2_0.png"}
    assert not (out / "reasonseg/test/masks/reasonseg-test-img5_0.png").exists()
    mask = cv2.imread(str(out / "reasonseg/test/masks/reasonseg-test-img2_0.png"), cv2.IMREAD_UNCHANGED)
    assert mask[25, 25] == 1


def test_interrupted_run_resumes_from_its_journal(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    for index in range(4):
        write_reasonseg(data, "val", f"img{index}", [square(2, 2, 12)])
    prepare(data, out, workers=1)
    split_dir = out / "reasonseg" / "val"
    lines = (split_dir / "manifest.jsonl").read_text().splitlines(keepends=True)
    # As if interrupted: no manifest yet, three finished records and a half-written line.
    (split_dir / "manifest.jsonl").unlink()
    (split_dir / "manifest.partial.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    (split_dir / "masks" / "reasonseg-val-img3_0.png").unlink()
    result = prepare(data, out, workers=1)
    assert (result.stats["reasonseg:val"].converted, result.stats["reasonseg:val"].up_to_date) == (1, 3)
    assert len(manifest(out, "reasonseg", "val")) == 4 and not (split_dir / "manifest.partial.jsonl").exists()


def test_warnings_are_reported_and_strict_turns_them_into_errors(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    write_reasonseg(data, "val", "bowtie", [{"label": "target", "points": [[0, 0], [20, 20], [20, 0], [0, 20]]}])
    write_reasonseg(data, "val", "line", [{"label": "target", "points": [[0, 0], [20, 20]]}])
    write_reasonseg(data, "val", "flat", [{"label": "target", "points": [[0, 0], [10, 10], [20, 20]]}])
    write_reasonseg(data, "val", "outside", [square(50, 30, 40)])
    write_reasonseg(data, "val", "empty", [])
    write_reasonseg(data, "val", "odd", [square(5, 5, 5, label="dog")])
    write_reasonseg(data, "val", "fine", [square(5, 5, 5), square(1, 1, 3, label="flag")])
    result = prepare(data, out, workers=1)
    codes = {(row["file"].split("/")[-1], row["code"]) for row in result.issues}
    assert codes == {("bowtie.json", "self_intersection"), ("line.json", "too_few_points"),
                     ("flat.json", "zero_area"), ("outside.json", "outside_image"), ("empty.json", "no_shapes"),
                     ("odd.json", "unknown_label")}
    assert result.failed == 0 and len(manifest(out, "reasonseg", "val")) == 7

    strict = prepare(data, tmp_path / "strict", workers=1, strict=True)
    assert strict.failed == 6
    assert [r["id"] for r in manifest(tmp_path / "strict", "reasonseg", "val")] == ["reasonseg-val-fine"]


def test_visualize_writes_overlays(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    for index in range(3):
        write_reasonseg(data, "val", f"img{index}", [square(2, 2, 30), square(10, 10, 5, label="ignore")])
    prepare(data, out, workers=1, visualize=2)
    overlays = sorted((out / "reasonseg/val/overlays").glob("*.png"))
    assert [path.name for path in overlays] == ["reasonseg-val-img0.png", "reasonseg-val-img1.png"]
    picture = cv2.imread(str(overlays[0]))
    assert picture.ndim == 3 and picture.shape[0] > 48


def test_help_documents_every_option():
    output = CliRunner().invoke(app, ["prepare", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--data-dir", "--out", "--source", "--workers", "--strict", "--visualize", "--decode-images",
                   "--progress"):
        assert option in output


def test_unknown_source_is_a_clear_usage_error(tmp_path):
    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(app, ["prepare", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
                                      "--source", "refcoco:umd"])
    assert result.exit_code == 2 and "refcoco has splitBy unc, google" in result.output
