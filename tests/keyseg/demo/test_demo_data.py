"""Tests for the synthetic demo data generator (pipelines/demo_data.py + keyseg.demo)."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils

from keyseg.demo import PALETTE, make_reasonseg_sample
from keyseg.demo.geometry import polygon_centroid
from pipelines.demo_data import DemoDataConfig, run

# pycocotools + numpy 2 emit a DeprecationWarning on decode; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

N_IMAGES = 16
W, H = 320, 240
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def outs(tmp_path_factory):
    a = tmp_path_factory.mktemp("seed0_a")
    b = tmp_path_factory.mktemp("seed0_b")
    c = tmp_path_factory.mktemp("seed1")
    sources = ("reasonseg", "refcoco")
    summary = run(DemoDataConfig(out=a, seed=0, images=N_IMAGES, width=W, height=H, sources=sources)).summary
    run(DemoDataConfig(out=b, seed=0, images=N_IMAGES, width=W, height=H, sources=sources))
    run(DemoDataConfig(out=c, seed=1, images=N_IMAGES, width=W, height=H, sources=sources))
    return {"a": a, "b": b, "c": c, "summary": summary}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "demo_data_config.json"
    }


def _load_labelme(path: Path) -> tuple[dict, bool]:
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8")), False
    except UnicodeDecodeError:
        return json.loads(raw.decode("cp1252")), True


def _labelme(root: Path) -> dict[str, list[tuple[Path, dict, bool]]]:
    base = root / "reason_seg" / "ReasonSeg"
    return {s: [(p, *_load_labelme(p)) for p in sorted((base / s).glob("*.json"))] for s in SPLITS}


def test_layout(outs):
    root = outs["a"]
    base = root / "reason_seg" / "ReasonSeg"
    assert {s: len(list((base / s).glob("*.jpg"))) for s in SPLITS} == {"train": 8, "val": 4, "test": 4}
    for s in SPLITS:
        jpgs = sorted(p.stem for p in (base / s).glob("*.jpg"))
        assert jpgs == sorted(p.stem for p in (base / s).glob("*.json"))
        assert all(n.startswith("demo_") and "." not in n and n.isascii() for n in jpgs)
    assert (base / "explanatory" / "train.json").is_file()
    assert (root / "refer_seg" / "refcoco" / "instances.json").is_file()
    assert (root / "refer_seg" / "refcoco" / "refs(unc).p").is_file()
    imgs = list((root / "refer_seg" / "images" / "mscoco" / "images" / "train2014").glob("COCO_train2014_*.jpg"))
    assert len(imgs) == N_IMAGES
    cfg = json.loads((root / "demo_data_config.json").read_text())
    assert cfg == {"out": str(root), "seed": 0, "images": N_IMAGES, "width": W, "height": H,
                   "sources": ["reasonseg", "refcoco"], "faults": False}
    assert outs["summary"]["reason_seg"]["splits"] == {"train": 8, "val": 4, "test": 4}
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_deterministic(outs):
    ha, hb, hc = _hashes(outs["a"]), _hashes(outs["b"]), _hashes(outs["c"])
    assert len(ha) == 2 * N_IMAGES + 1 + N_IMAGES + 2
    assert ha == hb
    assert ha.keys() == hc.keys()
    differing = [k for k in ha if ha[k] != hc[k]]
    assert len(differing) > len(ha) // 2


def test_labelme_json(outs):
    data = _labelme(outs["a"])
    n_fallback, labels, n_ignore, n_flag, n_multi = 0, set(), 0, 0, 0
    fractional = negative = False
    for split, items in data.items():
        assert {d["is_sentence"] for _, d, _ in items} == {True, False}
        for path, d, fallback in items:
            n_fallback += fallback
            assert list(d) == [
                "version", "flags", "shapes", "imagePath", "imageData",
                "imageHeight", "imageWidth", "text", "is_sentence",
            ]
            assert d["imagePath"] == path.stem + ".jpg" and d["imageData"] is None
            assert (d["imageWidth"], d["imageHeight"]) == (W, H)
            n_text = len(d["text"])
            assert (1 <= n_text <= 5) if split == "train" else n_text == 1
            assert len(set(d["text"])) == n_text and all(isinstance(t, str) and t for t in d["text"])
            for s in d["shapes"]:
                assert s["shape_type"] == "polygon" and s["group_id"] is None and len(s["points"]) >= 3
                labels.add(s["label"])
                for x, y in s["points"]:
                    fractional |= x != int(x) or y != int(y)
                    negative |= x < 0 or y < 0 or x > W or y > H
            lower = [s["label"].lower() for s in d["shapes"]]
            n_ignore += "ignore" in lower
            n_flag += "flag" in lower
            n_multi += lower.count("target") == 2
            assert lower.count("target") >= 1
    assert n_fallback >= 1 and n_ignore >= 2 and n_flag >= 2 and n_multi >= 1
    assert fractional and negative
    assert {"target", "Target", "ignore", "flag"} <= labels
    lens = {len(d["text"]) for _, d, _ in data["train"]}
    assert len(lens) >= 2


def test_cp1252_json_is_not_utf8(outs):
    for path in sorted((outs["a"] / "reason_seg" / "ReasonSeg").glob("*/*.json")):
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            d = json.loads(raw.decode("cp1252"))
            assert any(not t.isascii() for t in d["text"])
            return
    pytest.fail("no cp1252-encoded LabelMe JSON")


def test_images_match_polygons_and_exif(outs):
    orientations = {}
    for split, items in _labelme(outs["a"]).items():
        for path, d, _ in items:
            jpg = path.with_suffix(".jpg")
            with Image.open(jpg) as im:
                orient = im.getexif().get(0x0112)
                upright = ImageOps.exif_transpose(im)
                assert upright.size == (d["imageWidth"], d["imageHeight"])
            img = cv2.imread(str(jpg))
            assert img.shape[:2] == (d["imageHeight"], d["imageWidth"])
            if orient:
                orientations[path.stem] = orient
                raw = cv2.imread(str(jpg), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
                if orient in (6, 8):
                    assert raw.shape[:2] == (d["imageWidth"], d["imageHeight"])
            if any(s["label"].lower() == "ignore" for s in d["shapes"]):
                continue  # haze/glare effects change the colour
            sample = make_reasonseg_sample(0, int(path.stem.split("_")[1]), N_IMAGES, W, H)
            targets = [s for s in d["shapes"] if s["label"].lower() == "target"]
            assert len(targets) == len(sample.targets)
            for poly, shape in zip(targets, sample.targets):
                cx, cy = polygon_centroid([tuple(p) for p in poly["points"]])
                patch = img[int(round(cy)) - 1 : int(round(cy)) + 2, int(round(cx)) - 1 : int(round(cx)) + 2]
                bgr = np.median(patch.reshape(-1, 3), axis=0)
                expected = np.array(PALETTE[shape.color][::-1], dtype=float)
                assert np.abs(bgr - expected).max() < 40, (path.name, bgr, expected)
    assert {6, 8} <= set(orientations.values()), orientations


def test_explanatory(outs):
    base = outs["a"] / "reason_seg" / "ReasonSeg"
    recs = json.loads((base / "explanatory" / "train.json").read_text(encoding="utf-8"))
    train = {p.stem: d for p, d, _ in _labelme(outs["a"])["train"]}
    assert [r["image"][:-4] for r in recs] == sorted(train)
    for r in recs:
        assert list(r) == ["image", "json", "query", "outputs"]
        assert r["json"] == r["image"][:-4] + ".json"
        assert r["query"] in train[r["image"][:-4]]["text"]
        assert r["outputs"].endswith(".") and len(r["outputs"]) > 20


def test_refcoco(outs):
    root = outs["a"] / "refer_seg"
    inst = json.loads((root / "refcoco" / "instances.json").read_text())
    with open(root / "refcoco" / "refs(unc).p", "rb") as fh:
        refs = pickle.load(fh)
    images = {im["id"]: im for im in inst["images"]}
    anns = {a["id"]: a for a in inst["annotations"]}
    cats = {c["id"] for c in inst["categories"]}
    assert len(images) == N_IMAGES and len(anns) == len(inst["annotations"])
    for im in images.values():
        assert im["file_name"] == f"COCO_train2014_{im['id']:012d}.jpg"
        assert (root / "images" / "mscoco" / "images" / "train2014" / im["file_name"]).is_file()
    n_rle = n_two = n_empty = 0
    for a in anns.values():
        im = images[a["image_id"]]
        assert a["category_id"] in cats and len(a["bbox"]) == 4
        seg = a["segmentation"]
        if isinstance(seg, dict):
            n_rle += 1
            assert a["iscrowd"] == 1 and isinstance(seg["counts"], str) and seg["size"] == [im["height"], im["width"]]
            m = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
        elif len(seg) == 0:
            n_empty += 1
            continue
        else:
            n_two += len(seg) == 2
            m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, im["height"], im["width"])))
        assert m.shape == (im["height"], im["width"]) and m.sum() > 0
        assert abs(float(m.sum()) - a["area"]) <= 1.0
    assert n_rle >= 3 and n_two >= 1 and n_empty >= 1

    split_of_image: dict[int, str] = {}
    sent_ids, ref_ids = [], []
    per_image: dict[int, int] = {}
    for r in refs:
        a = anns[r["ann_id"]]
        assert r["image_id"] == a["image_id"] and r["category_id"] == a["category_id"]
        assert r["file_name"] == f"COCO_train2014_{r['image_id']:012d}_{r['ann_id']}.jpg"
        assert split_of_image.setdefault(r["image_id"], r["split"]) == r["split"]
        assert 1 <= len(r["sentences"]) <= 3 and r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
        for s in r["sentences"]:
            assert s["sent"] == s["sent"].lower() and s["tokens"] == s["sent"].split()
            assert s["raw"].lower().rstrip(".") == s["sent"]
        sent_ids += r["sent_ids"]
        ref_ids.append(r["ref_id"])
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
    assert len(set(sent_ids)) == len(sent_ids) and len(set(ref_ids)) == len(ref_ids)
    assert set(split_of_image.values()) == {"train", "val", "testA", "testB"}
    assert set(per_image) == set(images) and all(2 <= n <= 3 for n in per_image.values())


def test_rerun_prunes_stale_files(tmp_path):
    run(DemoDataConfig(out=tmp_path, seed=3, images=8, width=96, height=64))
    run(DemoDataConfig(out=tmp_path, seed=3, images=4, width=96, height=64))
    names = sorted(p.name for p in (tmp_path / "reason_seg" / "ReasonSeg").glob("*/demo_*.json"))
    assert names == [f"demo_{i:06d}.json" for i in range(4)]


@pytest.mark.parametrize("kwargs", [{"images": 2}, {"seed": -1}, {"width": 8}])
def test_invalid_config(tmp_path, kwargs):
    with pytest.raises(ValueError):
        run(DemoDataConfig(out=tmp_path, **kwargs))


def test_every_source_of_the_mixture_can_be_written_deterministically(tmp_path):
    from pipelines.demo_data import WRITERS

    sources = tuple(WRITERS)
    first = run(DemoDataConfig(out=tmp_path / "a", images=6, width=64, height=48, sources=sources)).summary
    run(DemoDataConfig(out=tmp_path / "b", images=6, width=64, height=48, sources=tuple(reversed(sources))))
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")  # the order asked for does not matter
    assert set(first) == {"out", "config", "reason_seg", *sources[1:]}
    for folder in ("reason_seg", "refer_seg/refclef", "ade20k", "cocostuff", "mapillary", "vlpart/paco",
                   "vlpart/pascal_part", "llava_dataset"):
        assert (tmp_path / "a" / folder).is_dir(), folder


def test_by_default_one_source_of_each_kind_prepares_without_errors_and_faults_add_them(tmp_path):
    from pipelines.demo_data import FAULT_WRITERS, WRITERS
    from pipelines.prepare import PrepareConfig
    from pipelines.prepare import run as prepare

    clean = run(DemoDataConfig(out=tmp_path / "clean", images=8, width=64, height=48)).summary
    assert set(clean) == {"out", "config", "reason_seg", "refcoco", "ade20k", "llava_instruct_150k"}
    every = tuple(WRITERS)
    run(DemoDataConfig(out=tmp_path / "all", images=8, width=64, height=48, sources=every))
    result = prepare(PrepareConfig(data_dir=tmp_path / "all", out=tmp_path / "all-prepared", show_progress=False,
                                   workers=1))
    assert not result.failed and not [issue for issue in result.issues if issue["severity"] == "error"]

    run(DemoDataConfig(out=tmp_path / "faults", images=8, width=64, height=48, sources=every, faults=True))
    result = prepare(PrepareConfig(data_dir=tmp_path / "faults", out=tmp_path / "faults-prepared",
                                   show_progress=False, workers=1))
    failing = {issue["source"] for issue in result.issues if issue["severity"] == "error"}
    assert result.failed and failing == set(FAULT_WRITERS)


def test_an_unknown_source_is_a_usage_error(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["demo-data", "--out", str(tmp_path), "--source", "kitti"])
    assert result.exit_code == 2 and "kitti" in result.output and not any(tmp_path.iterdir())
