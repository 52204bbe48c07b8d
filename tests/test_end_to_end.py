"""The chain on the embedded demo data, through the installed `keyseg` command.

The chain itself runs once per session (the `demo_chain` fixture); this file checks what it
wrote against independent decoders, and that re-running and the other entry points agree.
"""

import json
import pickle
import shutil
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


def test_demo_data_then_prepare(demo_chain, tmp_path):
    data, out = demo_chain.data, demo_chain.prepared
    done = demo_chain.runs["prepare"]
    assert "reasonseg:train" in done.stderr and "refcoco:testB" in done.stderr and "total" in done.stderr

    stats = json.loads((out / "prepare_stats.json").read_text())
    assert set(stats) == {"reasonseg:train", "reasonseg:val", "reasonseg:test", "refcoco:train", "refcoco:val",
                          "refcoco:testA", "refcoco:testB", "ade20k:train", "llava_instruct_150k:train"}
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

    # A second prepare (on a copy: the chain's folders are shared) finds every image up to date.
    copy = tmp_path / "prepared"
    shutil.copytree(out, copy)
    again = keyseg("prepare", "--data-dir", str(data), "--out", str(copy), "--visualize", "2", "--workers", "2")
    assert again.returncode == 0, again.stderr
    totals = json.loads((copy / "prepare_report.json").read_text())["summary"]
    assert totals["converted"] == 0 and totals["up_to_date"] == totals["images"]


def test_keywords_from_explanatory_json_and_from_the_manifest_agree(demo_chain, tmp_path):
    # The chain mined explanatory/train.json into the default output path, offline.
    explanatory = demo_chain.data / "reason_seg/ReasonSeg/explanatory/train.json"
    keywords_file = demo_chain.data / "reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json"
    keywords = json.loads(keywords_file.read_text())
    assert len(keywords) == len(json.loads(explanatory.read_text())) == 8  # of the 16 demo images, 8 train
    assert all(record["keyword"] for record in keywords)
    from_manifest = tmp_path / "from_manifest.json"
    manifest = demo_chain.prepared / "reasonseg/train/manifest.jsonl"
    mined = keyseg("mine-keywords", "generate", "--input", str(manifest), "--out", str(from_manifest), "--no-progress")
    assert mined.returncode == 0, mined.stderr
    by_image = {record["image"]: record["keyword"] for record in keywords}
    assert {record["image"]: record["keyword"] for record in json.loads(from_manifest.read_text())} == by_image


def test_shards_hold_every_prepared_sample_with_its_keyword(demo_chain):
    shards = demo_chain.shards
    assert (shards / "stats.png").is_file()
    index = json.loads((shards / "index.json").read_text())
    prepared = json.loads((demo_chain.prepared / "prepare_stats.json").read_text())
    assert set(index["splits"]) == set(prepared)
    for name, split in index["splits"].items():
        # Every prepared image is one sample, cut into shards of at most --maxcount 3.
        assert (split["samples"], split["targets"]) == (prepared[name]["images"], prepared[name]["targets"]), name
        assert [shard["samples"] for shard in split["shards"]][:-1] == [3] * (len(split["shards"]) - 1), name
        assert sum(shard["samples"] for shard in split["shards"]) == split["samples"] and split["errors"] == 0
    assert index["splits"]["reasonseg:train"]["targets_with_keyword"] == 8  # of the 16 demo images, 8 train
    assert index["totals"]["samples"] == sum(split["images"] for split in prepared.values())
