"""refCLEF: prepare (masks, image paths, splits, hostile paths, resume) and evaluate."""

import json
import pickle

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from cli import app
from fixtures import jpeg, ref
from keyseg.demo.refclef import saiapr_file_name, write_refclef
from keyseg.io import read_jsonl
from keyseg.sources.specs import detect_sources, parse_source_spec
from pipelines.prepare import PrepareConfig, run

SAIAPR = "refer_seg/images/saiapr_tc-12"


def prepare(data_dir, out, **options):
    return run(PrepareConfig(data_dir=data_dir, out=out, show_progress=False, **options))


def manifest(out, source, split):
    return read_jsonl(out / source / split / "manifest.jsonl")


def error_rows(result):
    return [(issue["file"], issue["code"], issue["reason"]) for issue in result.issues if issue["severity"] == "error"]


def lisa_refer_mask(segmentation, height, width):
    """The reference's steps, written out here (LISA `utils/refer_seg_dataset.py:228-251`):
    polygons through frPyObjects, else a list of RLEs whose str counts are encoded; decode,
    sum the planes to uint8. keyseg keeps the union of the parts (docs/fidelity.md D5)."""
    if len(segmentation) == 0:
        return np.zeros((height, width), np.uint8)
    if type(segmentation[0]) == list:  # noqa: E721 (the reference's test)
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = [dict(part) for part in segmentation]
        for part in rle:
            if not isinstance(part["counts"], bytes):
                part["counts"] = part["counts"].encode()
    summed = np.sum(coco_mask.decode(rle), axis=2).astype(np.uint8)
    return (summed > 0).astype(np.uint8)


def write_refclef_files(data, images, annotations, refs_by_split_by, write_images=True):
    folder = data / "refer_seg" / "refclef"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                       "categories": [{"id": 1, "name": "thing"}]}))
    for split_by, refs in refs_by_split_by.items():
        (folder / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
    if write_images:
        for image in images:
            path = data / SAIAPR / image["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg(image["width"], image["height"], seed=image["id"]))


def clef_image(image_id, width=60, height=40):
    return {"id": image_id, "file_name": saiapr_file_name(image_id), "width": width, "height": height}


def rle_list(*boxes, width=60, height=40):
    parts = []
    for x, y, w, h in boxes:
        mask = np.zeros((height, width), np.uint8)
        mask[y:y + h, x:x + w] = 1
        parts.append({"size": [height, width], "counts": coco_mask.encode(np.asfortranarray(mask))["counts"].decode()})
    return parts


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("refclef")
    data, out = root / "data", root / "out"
    summary = write_refclef(data / "refer_seg", seed=3, n_images=14, width=96, height=72)
    result = prepare(data, out, workers=2, sources=["refclef:unc", "refclef:berkeley"])
    return data, out, summary, result


def test_demo_masks_are_bit_exact_with_the_reference_steps(demo):
    data, out, summary, result = demo
    instances = json.loads((data / "refer_seg/refclef/instances.json").read_text())
    annotations = {ann["id"]: ann for ann in instances["annotations"]}
    images = {image["id"]: image for image in instances["images"]}
    checked, forms = 0, set()
    for source, splits in (("refclef", ("train", "val", "testA", "testB", "testC")),
                           ("refclef_berkeley", ("train", "val", "test"))):
        for split in splits:
            for record in manifest(out, source, split):
                image = images[record["image_id"]]
                assert record["image"] == f"{SAIAPR}/{image['file_name']}" and (data / record["image"]).is_file()
                for target in record["targets"]:
                    segmentation = annotations[target["ann_id"]]["segmentation"]
                    forms.add("polygons" if isinstance(segmentation[0], list) else f"rle x{len(segmentation)}")
                    expected = lisa_refer_mask(segmentation, image["height"], image["width"])
                    mask = cv2.imread(str(out / target["mask"]), cv2.IMREAD_UNCHANGED)
                    np.testing.assert_array_equal(mask, expected, err_msg=f"{record['id']} ref {target['ref_id']}")
                    checked += 1
    assert forms == {"polygons", "rle x1", "rle x2"}
    refs = summary["refs_per_split"]
    assert checked == sum(refs["unc"].values()) + sum(refs["berkeley"].values()) - 1  # the ref without an image


def test_demo_berkeley_ref_without_an_image_entry_is_its_only_error(demo):
    data, out, summary, result = demo
    (missing,) = summary["missing_image_refs"]["berkeley"]
    assert [(file, code) for file, code, _ in error_rows(result)] == [
        ("refer_seg/refclef/refs(berkeley).p", "missing_image_entry")]
    assert f"ref {missing} points at image" in error_rows(result)[0][2]
    assert [issue for issue in result.issues if issue["severity"] == "warning"] == []
    report = json.loads((out / "prepare_report.json").read_text())
    assert {row["source"] for row in report["issues"]} == {"refclef_berkeley"}


def test_second_run_reuses_every_record(demo, tmp_path):
    data, out, _, first = demo
    again = prepare(data, out, workers=1, sources=["refclef:unc", "refclef:berkeley"])
    stats = json.loads((out / "prepare_stats.json").read_text())
    assert len(stats) == 8 and all(row["converted"] == 0 and row["up_to_date"] == row["images"]
                                   for row in stats.values())
    assert again.failed == first.failed == 1


def test_source_specs_and_detection(tmp_path):
    assert [s.name for s in parse_source_spec("refclef")] == [
        "refclef:train", "refclef:val", "refclef:testA", "refclef:testB", "refclef:testC"]
    assert [s.name for s in parse_source_spec("refclef:berkeley")] == [
        "refclef_berkeley:train", "refclef_berkeley:val", "refclef_berkeley:test"]
    assert [s.name for s in parse_source_spec("refclef:unc:testC,val")] == ["refclef:testC", "refclef:val"]
    with pytest.raises(ValueError, match="refclef has splitBy unc, berkeley, not 'google'"):
        parse_source_spec("refclef:google")
    with pytest.raises(ValueError, match=r"unknown split\(s\) testA for refclef\(berkeley\)"):
        parse_source_spec("refclef:berkeley:testA")
    write_refclef_files(tmp_path, [], [], {"unc": [], "berkeley": []})
    assert [s.name for s in detect_sources(tmp_path)] == [s.name for s in parse_source_spec("refclef:unc")]
    result = CliRunner().invoke(app, ["prepare", "--help"], env={"COLUMNS": "200"})
    assert "refclef[:unc|berkeley[:SPLITS]]" in result.output


def test_splits_follow_refer_including_combined_test_values(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    images = [clef_image(25302), clef_image(3107), clef_image(40001)]
    annotations = [{"id": 1, "image_id": 25302, "segmentation": rle_list((2, 2, 20, 10))},
                   {"id": 2, "image_id": 3107, "segmentation": rle_list((5, 5, 10, 10), (30, 5, 10, 10))},
                   {"id": 3, "image_id": 40001, "segmentation": rle_list((1, 1, 5, 5))}]
    refs = [ref(1, 1, 25302, "testC"), ref(2, 2, 3107, "testAB"), ref(3, 3, 40001, "testD")]
    write_refclef_files(data, images, annotations, {"unc": refs})
    result = prepare(data, out, workers=1, sources=["refclef:unc:testA,testB,testC"])
    (clef_c,) = manifest(out, "refclef", "testC")
    assert clef_c["image"] == f"{SAIAPR}/25/images/25302.jpg"
    # REFER's getRefIds puts a `testAB` ref into testA and into testB (LISA utils/refer.py:161-164).
    assert [r["image_id"] for r in manifest(out, "refclef", "testA")] == [3107]
    assert [r["image_id"] for r in manifest(out, "refclef", "testB")] == [3107]
    ((file, code, reason),) = error_rows(result)
    assert code == "bad_ref" and "ref 3 `split` 'testD' is not one of train, val, testA, testB, testC" in reason


def test_hostile_file_names_are_refused_unread(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg(60, 40, seed=9))
    good = clef_image(1001)
    images = [good, {**clef_image(1002), "file_name": str(secret)},
              {**clef_image(1003), "file_name": "../../mscoco/images/train2014/x.jpg"},
              {**clef_image(1004), "file_name": "01/images/link.jpg"}]
    annotations = [{"id": i, "image_id": image["id"], "segmentation": rle_list((2, 2, 9, 9))}
                   for i, image in enumerate(images, 1)]
    write_refclef_files(data, [good], annotations, {"unc": [ref(i, i, image["id"], "train")
                                                           for i, image in enumerate(images, 1)]})
    (data / "refer_seg/refclef/instances.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    (data / SAIAPR / "01/images/link.jpg").symlink_to(secret)  # a link inside the folder that leads out
    result = prepare(data, out, workers=1, sources=["refclef:unc:train"])
    assert [r["image_id"] for r in manifest(out, "refclef", "train")] == [1001]
    rows = error_rows(result)
    assert len(rows) == 3 and not any("secret" in file and code != "missing_file" for file, code, _ in rows)
    unsafe = [reason for _, code, reason in rows if code == "unsafe_path"]
    assert any("leaves" in r for r in unsafe) and any("resolves outside" in r for r in unsafe)
    # The absolute name is joined below saiapr_tc-12 as text: refused as absolute where the
    # folder is its own root, else a file below data/ that does not exist. Never the secret.
    absolute = [row for row in rows if str(secret) in row[0] or str(secret) in row[2]]
    assert len(absolute) == 1 and (absolute[0][1] == "missing_file" or "is absolute" in absolute[0][2])


def test_the_saiapr_folder_may_be_a_link_to_a_shared_copy(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    image = clef_image(1001)
    write_refclef_files(data, [image], [{"id": 1, "image_id": 1001, "segmentation": rle_list((2, 2, 9, 9))}],
                        {"unc": [ref(1, 1, 1001, "train")]})
    shared = tmp_path / "shared_saiapr"
    (data / SAIAPR).rename(shared)
    (data / SAIAPR).symlink_to(shared, target_is_directory=True)
    result = prepare(data, out, workers=1, sources=["refclef:unc:train"])
    assert result.failed == 0 and len(manifest(out, "refclef", "train")) == 1
    # With the folder as its own root, an absolute `file_name` is refused as such.
    instances = json.loads((data / "refer_seg/refclef/instances.json").read_text())
    instances["images"][0]["file_name"] = str(tmp_path / "secret.jpg")
    (data / "refer_seg/refclef/instances.json").write_text(json.dumps(instances))
    hostile = prepare(data, tmp_path / "out2", workers=1, sources=["refclef:unc:train"])
    assert [(issue["code"], "is absolute" in issue["reason"]) for issue in hostile.issues] == [("unsafe_path", True)]


def test_evaluate_scores_refclef_splits_per_sentence_as_the_refcoco_family(demo, tmp_path):
    data, out, _, _ = demo
    shards = tmp_path / "shards"
    done = CliRunner().invoke(app, ["shard", "--prepared", str(out), "--out", str(shards), "--workers", "1"])
    assert done.exit_code == 0, done.output
    predictions = tmp_path / "pred"
    predictions.mkdir()
    sentences = 0
    for record in manifest(out, "refclef", "testC"):
        for index, target in enumerate(record["targets"]):
            truth = cv2.imread(str(out / target["mask"]), cv2.IMREAD_UNCHANGED)
            for sentence in range(len(target["texts"])):
                # Perfect on the first sentence of each ref, empty on the others.
                cv2.imwrite(str(predictions / f"{record['id']}_{index}_{sentence}.png"), truth * (sentence == 0))
                sentences += 1
    result = CliRunner().invoke(app, ["evaluate", "--shards", str(shards), "--split", "refclef:testC",
                                      "--predictions", str(predictions), "--out", str(tmp_path / "eval"),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["refclef:testC"]
    refs = sum(len(record["targets"]) for record in manifest(out, "refclef", "testC"))
    assert metrics["count"] == sentences > refs
    assert metrics["giou"] == pytest.approx(refs / sentences, abs=1e-6)
    table = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| dataset | testC |" in table and "| refclef |" in table and "refCOCO family" in table


def test_demo_is_deterministic_and_in_the_native_layout(tmp_path):
    first = write_refclef(tmp_path / "a", seed=5, n_images=6, width=64, height=48)
    write_refclef(tmp_path / "b", seed=5, n_images=6, width=64, height=48)
    other = tmp_path / "c"
    write_refclef(other, seed=6, n_images=6, width=64, height=48)
    files = sorted(path.relative_to(tmp_path / "a") for path in (tmp_path / "a").rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(tmp_path / "b") for path in (tmp_path / "b").rglob("*") if path.is_file())
    for path in files:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes(), path
    assert (tmp_path / "a/refclef/instances.json").read_bytes() != (other / "refclef/instances.json").read_bytes()
    instances = json.loads((tmp_path / "a/refclef/instances.json").read_text())
    for image in instances["images"]:
        assert image["file_name"] == f"{image['id'] // 1000:02d}/images/{image['id']}.jpg"
        assert (tmp_path / "a/images/saiapr_tc-12" / image["file_name"]).is_file()
    unc = pickle.loads((tmp_path / "a/refclef/refs(unc).p").read_bytes())
    berkeley = pickle.loads((tmp_path / "a/refclef/refs(berkeley).p").read_bytes())
    assert {r["split"] for r in unc} == {"train", "val", "testA", "testB", "testC"}
    assert {r["split"] for r in berkeley} == {"train", "val", "test"}
    assert len(berkeley) == len(unc) + 1 and first["missing_image_refs"]["berkeley"] == [berkeley[-1]["ref_id"]]
    assert berkeley[-1]["image_id"] not in {image["id"] for image in instances["images"]}
    assert berkeley[-1]["ann_id"] in {ann["id"] for ann in instances["annotations"]}
