"""The chain on the embedded demo data, through the installed `keyseg` command."""

import json
import pickle
import subprocess
import sys

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from reference_impl import reference_mask


def keyseg(*args):
    # `python -m cli` is what the `keyseg` console script runs.
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})


def decode_refer(segmentation, height, width):
    if not segmentation:
        return np.zeros((height, width), np.uint8)
    if isinstance(segmentation, list):
        return coco_mask.decode(coco_mask.frPyObjects(segmentation, height, width)).max(axis=2)
    return coco_mask.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})


def test_demo_data_then_prepare(tmp_path):
    data, out = tmp_path / "data", tmp_path / "prepared"
    made = keyseg("demo-data", str(data), "--images", "16")
    assert made.returncode == 0, made.stderr
    done = keyseg("prepare", "--data-dir", str(data), "--out", str(out), "--visualize", "2", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "reasonseg:train" in done.stderr and "refcoco:testB" in done.stderr and "total" in done.stderr

    stats = json.loads((out / "prepare_stats.json").read_text())
    assert set(stats) == {"reasonseg:train", "reasonseg:val", "reasonseg:test",
                          "refcoco:train", "refcoco:val", "refcoco:testA", "refcoco:testB"}
    checked = 0
    for split in ("train", "val", "test"):
        for line in (out / "reasonseg" / split / "manifest.jsonl").read_text().splitlines():
            record = json.loads(line)
            image = data / record["image"]
            expected = reference_mask(image.with_suffix(".json"), image)
            actual = cv2.imread(str(out / record["targets"][0]["mask"]), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(actual, expected, err_msg=record["id"])
            checked += 1
    assert checked == 16

    instances = json.loads((data / "refer_seg/refcoco/instances.json").read_text())
    annotations = {ann["id"]: ann for ann in instances["annotations"]}
    refs = pickle.loads((data / "refer_seg/refcoco/refs(unc).p").read_bytes())
    assert sum(stats[f"refcoco:{split}"]["targets"] for split in ("train", "val", "testA", "testB")) == len(refs)
    for line in (out / "refcoco" / "train" / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        for target in record["targets"]:
            expected = decode_refer(annotations[target["ann_id"]]["segmentation"], record["height"], record["width"])
            actual = cv2.imread(str(out / target["mask"]), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(actual, expected)
    assert len(list((out / "reasonseg" / "train" / "overlays").glob("*.png"))) == 2

    again = keyseg("prepare", "--data-dir", str(data), "--out", str(out), "--visualize", "2", "--workers", "2")
    assert again.returncode == 0
    totals = json.loads((out / "prepare_report.json").read_text())["summary"]
    assert totals["converted"] == 0 and totals["up_to_date"] == totals["images"]

    # Keywords, offline: from explanatory/train.json (default output path) and from the manifest.
    explanatory = data / "reason_seg/ReasonSeg/explanatory/train.json"
    mined = keyseg("mine-keywords", "generate", str(explanatory), "--backend", "heuristic", "--no-progress")
    assert mined.returncode == 0, mined.stderr
    keywords = json.loads((data / "reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json").read_text())
    assert len(keywords) == len(json.loads(explanatory.read_text())) == 8
    assert all(record["keyword"] for record in keywords)
    from_manifest = tmp_path / "from_manifest.json"
    mined = keyseg("mine-keywords", "generate", str(out / "reasonseg/train/manifest.jsonl"), "--out",
                   str(from_manifest), "--no-progress")
    assert mined.returncode == 0, mined.stderr
    by_image = {record["image"]: record["keyword"] for record in keywords}
    assert {record["image"]: record["keyword"] for record in json.loads(from_manifest.read_text())} == by_image

    shards = tmp_path / "shards" / "demo"
    sharded = keyseg("shard", "--prepared", str(out), "--out", str(shards), "--workers", "2")
    assert sharded.returncode == 0, sharded.stderr
    verified = keyseg("shards", "verify", str(shards), "--no-progress")
    assert verified.returncode == 0, verified.stderr
    stats = keyseg("shards", "stats", str(shards))
    assert stats.returncode == 0 and (shards / "stats.png").is_file()
    index = json.loads((shards / "index.json").read_text())
    assert index["splits"]["reasonseg:train"]["targets_with_keyword"] == 8
    assert index["totals"]["samples"] == 16 + 16
