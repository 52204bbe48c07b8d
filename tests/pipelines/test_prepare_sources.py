"""`keyseg prepare` on the rest of LISA's mixture: label maps, parts and VQA.

The real stage runs on the demo layouts (keyseg/demo/*.py) and every mask it writes is
compared, bit for bit, with the independent implementations of the reference's rules in
tests/helpers/reference_semseg.py and reference_parts.py; VQA records with the reader.
"""

import io
import json
import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keyseg.demo.llava import IMAGE_DIR as LLAVA_IMAGE_DIR
from keyseg.demo.llava import LLAVA_JSON, image_name, write_llava_instruct
from keyseg.demo.parts import PACO_LAYOUT, PASCAL_LAYOUT, write_paco_lvis, write_pascal_part
from keyseg.demo.semseg import write_ade20k, write_cocostuff, write_mapillary
from keyseg.formats.manifest import check_record
from keyseg.io import read_jsonl
from keyseg.sources.llava import read_llava_instruct
from keyseg.sources.specs import detect_sources, parse_source_spec
from pipelines.prepare import PrepareConfig, run
from reference_parts import reference_images, reference_phrase
from reference_semseg import init_ade20k, init_cocostuff, init_mapillary, reference_classes, reference_label, \
    reference_masks

SEED, IMAGES, WIDTH, HEIGHT = 0, 8, 64, 48
WRITERS = {
    "ade20k": write_ade20k,
    "cocostuff": write_cocostuff,
    "mapillary": write_mapillary,
    "paco_lvis": write_paco_lvis,
    "pascal_part": write_pascal_part,
    "llava_instruct_150k": write_llava_instruct,
}
LABEL_MAP_SOURCES = ("ade20k", "cocostuff", "mapillary")
PART_LAYOUTS = {"paco_lvis": PACO_LAYOUT, "pascal_part": PASCAL_LAYOUT}
# The folder each label-map source's label files are in, and its images.
LABEL_DIRS = {"ade20k": "ade20k/annotations/training", "cocostuff": "cocostuff/train2017",
              "mapillary": "mapillary/training/v2.0/labels"}
IMAGE_DIRS = {"ade20k": "ade20k/images/training", "cocostuff": "coco/train2017",
              "mapillary": "mapillary/training/images"}


def prepare(data_dir, out, **options):
    return run(PrepareConfig(data_dir=data_dir, out=out, show_progress=False, **options))


def records_of(out, source):
    return read_jsonl(out / source / "train" / "manifest.jsonl")


def rows(result, severity):
    return sorted((issue["file"], issue["code"]) for issue in result.issues if issue["severity"] == severity)


def png(path):
    return np.array(Image.open(path))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One data dir per source (COCO-Stuff and PACO-LVIS demo images share names in
    coco/train2017), prepared once with one worker and overlays of the first 2 records."""
    root = tmp_path_factory.mktemp("mixture")
    data, out, results, summaries = {}, {}, {}, {}
    for index, (source, write) in enumerate(WRITERS.items()):
        # Not named after the source: the reference replaces "cocostuff" and "images"
        # anywhere in a path, so a data dir holding those words breaks its path lists.
        data[source] = root / "data" / f"d{index}"
        summaries[source] = write(data[source], SEED, IMAGES, WIDTH, HEIGHT)
        out[source] = root / "out" / source
        results[source] = prepare(data[source], out[source], workers=1, visualize=2)
    return {"root": root, "data": data, "out": out, "results": results, "summaries": summaries}


# --- sources and specs ---------------------------------------------------------------------


def test_specs_name_the_splits_the_lisa_preset_uses():
    for source in WRITERS:
        assert [split.name for split in parse_source_spec(source)] == [f"{source}:train"]
        assert parse_source_spec(f"{source}:train") == parse_source_spec(source)
        with pytest.raises(ValueError, match="unknown split"):
            parse_source_spec(f"{source}:val")
        with pytest.raises(ValueError):
            parse_source_spec(f"{source}:train:extra")
    assert parse_source_spec("llava_instruct") == parse_source_spec("llava_instruct_150k")
    preset = (Path(__file__).parents[2] / "keyseg" / "training" / "configs" / "lisa-7b.yaml").read_text()
    for source in WRITERS:
        assert f'"{source}:train"' in preset


def test_each_source_is_detected_when_its_files_are_present(demo, tmp_path):
    for source in WRITERS:
        assert [split.name for split in detect_sources(demo["data"][source])] == [f"{source}:train"]
    assert detect_sources(tmp_path) == []


def test_a_source_asked_for_and_absent_is_one_error_row(tmp_path):
    result = prepare(tmp_path, tmp_path / "out", workers=1, sources=list(WRITERS))
    assert rows(result, "error") == sorted([
        ("ade20k/images/training", "missing_folder"),
        ("cocostuff/train2017", "missing_folder"),
        ("mapillary/training/v2.0/labels", "missing_folder"),
        ("vlpart/paco/annotations/paco_lvis_v1_train.json", "bad_part_file"),
        ("vlpart/pascal_part/train.json", "bad_part_file"),
        ("llava_dataset/llava_instruct_150k.json", "unreadable"),
    ])
    assert all(stats.images == 0 for stats in result.stats.values())


# --- label maps ----------------------------------------------------------------------------


def _reference_layout(source, data_dir):
    classes_dir = resources.files("keyseg.sources").joinpath("data")
    if source == "ade20k":
        classes, images, labels = init_ade20k(str(data_dir), str(classes_dir / "ade20k_classes.json"))
    elif source == "cocostuff":
        classes, images, labels = init_cocostuff(str(data_dir), str(classes_dir / "cocostuff_classes.txt"))
    else:
        classes, images, labels = init_mapillary(str(data_dir))
    return classes, {os.path.relpath(image, data_dir): os.path.relpath(label, data_dir)
                     for image, label in zip(images, labels)}


# Which demo case costs its image, and the row it gives (file kind, code).
LABEL_MAP_CASES = {
    "missing_label": ("label", "error", "missing_file"),
    "missing_image": ("image", "error", "missing_file"),
    "wrong_size": ("label", "error", "label_size_mismatch"),
    "unknown_label": ("label", "error", "unknown_label"),
    "no_classes": ("label", "warning", "no_classes"),
}


@pytest.mark.parametrize("source", LABEL_MAP_SOURCES)
def test_label_map_masks_and_names_match_the_reference(demo, source):
    data_dir, out, result = demo["data"][source], demo["out"][source], demo["results"][source]
    classes, layout = _reference_layout(source, data_dir)
    specials = demo["summaries"][source]["specials"]
    expected_rows = {"error": [], "warning": []}
    dropped = set()
    for name, tags in specials.items():
        for tag in tags:
            if tag in LABEL_MAP_CASES:
                kind, severity, code = LABEL_MAP_CASES[tag]
                folder = LABEL_DIRS[source] if kind == "label" else IMAGE_DIRS[source]
                expected_rows[severity].append((f"{folder}/{name}.{'png' if kind == 'label' else 'jpg'}", code))
                dropped.add(name)
    assert rows(result, "error") == sorted(expected_rows["error"])
    assert rows(result, "warning") == sorted(expected_rows["warning"])

    records = records_of(out, source)
    assert {Path(record["image"]).stem for record in records} == {Path(image).stem for image in layout} - dropped
    checked = 0
    for record in records:
        assert check_record(record) is None
        label = reference_label(source, data_dir / layout[record["image"]], classes)
        _, names = reference_classes(label, classes)
        assert [target["texts"] for target in record["targets"]] == [[name] for name in names]
        assert (record["width"], record["height"]) == (label.shape[1], label.shape[0])
        for target, expected in zip(record["targets"], reference_masks(label, classes, names), strict=True):
            assert not target["is_sentence"] and target["ann_id"] is None
            written = png(out / target["mask"])
            assert written.dtype == np.uint8 and np.array_equal(written, expected.astype(np.uint8))
            checked += 1
    assert checked == result.stats[f"{source}:train"].targets > 0


def test_label_map_awkward_classes_come_out_as_the_reference_names_them(demo):
    texts = {source: {text for record in records_of(demo["out"][source], source)
                      for target in record["targets"] for text in target["texts"]} for source in LABEL_MAP_SOURCES}
    assert {"street sign", "hat"} <= texts["cocostuff"]  # ids COCO never used stay classes
    assert not any("-" in text for text in texts["cocostuff"])  # "-" stuff classes are ignore
    assert "unlabeled" in texts["mapillary"]  # kept, lower-cased
    assert "flag" in texts["ade20k"]  # the last class, raw 150


# --- parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", PART_LAYOUTS)
def test_part_masks_and_phrases_match_the_reference(demo, source):
    data_dir, out, result = demo["data"][source], demo["out"][source], demo["results"][source]
    annotation_file = PART_LAYOUTS[source].annotation_file
    assert rows(result, "error") == []
    assert rows(result, "warning") == [(annotation_file, "missing_image_entry"), (annotation_file, "no_annotations")]

    document = json.loads((data_dir / annotation_file).read_text())
    ann_ids = {}
    for annotation in document["annotations"]:
        ann_ids.setdefault(annotation["image_id"], []).append(annotation["id"])
    expected = {entry["id"]: entry for entry in reference_images(str(data_dir), source)}
    records = records_of(out, source)
    assert sorted(record["image_id"] for record in records) == sorted(expected)
    checked = 0
    for record in records:
        assert check_record(record) is None
        reference = expected[record["image_id"]]
        assert record["image"] == os.path.relpath(reference["image_path"], data_dir)
        phrases = [list(dict.fromkeys([reference_phrase(name, 0.0), reference_phrase(name, 0.9)]))
                   for name in reference["names"]]
        assert [target["texts"] for target in record["targets"]] == phrases
        assert [target["ann_id"] for target in record["targets"]] == ann_ids[record["image_id"]]
        for target, mask in zip(record["targets"], reference["masks"], strict=True):
            written = png(out / target["mask"])
            assert written.dtype == np.uint8 and np.array_equal(written, mask)
            checked += 1
    assert checked == result.stats[f"{source}:train"].targets > 0


def test_part_names_are_phrased_as_the_reference_phrases_them(demo):
    texts = [target["texts"] for record in records_of(demo["out"]["paco_lvis"], "paco_lvis")
             for target in record["targets"]]
    assert ["bottle cap", "the cap of the bottle"] in texts  # " bottle_(drink):cap_(bottle) "
    assert ["trash_can"] in texts  # underscores stay


# --- VQA -----------------------------------------------------------------------------------


def test_vqa_records_hold_the_readers_conversations_and_no_masks(demo):
    data_dir, out, result = demo["data"]["llava_instruct_150k"], demo["out"]["llava_instruct_150k"], \
        demo["results"]["llava_instruct_150k"]
    usable, _ = read_llava_instruct(data_dir)  # images checked: the missing one is left out
    records = records_of(out, "llava_instruct_150k")
    assert [(record["image"], record["conversations"]) for record in records] == \
        [(vqa.image, vqa.conversations) for vqa in usable]
    assert len(records) == IMAGES + IMAGES // 5  # every fifth image has a second conversation
    for record in records:
        assert check_record(record) is None
        assert record["targets"] == [] and "overlay" not in record
        assert (record["width"], record["height"]) == (WIDTH, HEIGHT)
    assert rows(result, "error") == sorted([(f"{LLAVA_IMAGE_DIR.as_posix()}/{image_name(IMAGES)}", "missing_file"),
                                            (LLAVA_JSON.as_posix(), "not_alternating")])
    split_dir = out / "llava_instruct_150k" / "train"
    assert not any(split_dir.glob("*/*.png"))  # no masks, no overlays


# --- overlays, workers, resumption ---------------------------------------------------------


def test_overlays_are_drawn_for_masks_only(demo):
    for source in WRITERS:
        records = records_of(demo["out"][source], source)
        overlays = [record["overlay"] for record in records if "overlay" in record]
        if source == "llava_instruct_150k":
            assert overlays == []
            continue
        assert 1 <= len(overlays) <= 2
        for overlay in overlays:
            with Image.open(demo["out"][source] / overlay) as image:
                assert image.format == "PNG" and image.width > WIDTH


def test_two_workers_write_the_same_outputs(demo, tmp_path):
    """One data dir holding three kinds, prepared in parallel: records and masks equal the
    one-worker runs."""
    data = tmp_path / "data"
    sources = ("ade20k", "pascal_part", "llava_instruct_150k")
    for source in sources:
        WRITERS[source](data, SEED, IMAGES, WIDTH, HEIGHT)
    result = prepare(data, tmp_path / "out", workers=2, visualize=2)
    assert sorted(result.stats) == sorted(f"{source}:train" for source in sources)
    for source in sources:
        ours, theirs = records_of(tmp_path / "out", source), records_of(demo["out"][source], source)
        assert ours == theirs
        for record in ours:
            for target in record["targets"]:
                written = (tmp_path / "out" / target["mask"]).read_bytes()
                assert written == (demo["out"][source] / target["mask"]).read_bytes()
    expected = sorted(issue for source in sources for issue in
                      [tuple(sorted(row.items())) for row in demo["results"][source].issues])
    assert sorted(tuple(sorted(row.items())) for row in result.issues) == expected


def test_a_second_run_redoes_nothing_and_a_change_redoes_only_its_record(demo, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(demo["data"]["ade20k"], data)
    shutil.copytree(demo["data"]["llava_instruct_150k"], data, dirs_exist_ok=True)
    first = prepare(data, out, workers=1, visualize=2)
    again = prepare(data, out, workers=1, visualize=2)
    for name, stats in again.stats.items():
        assert stats.converted == 0 and stats.up_to_date == stats.images == first.stats[name].images > 0
    assert again.issues == first.issues  # warnings are reported again

    # One label map and one conversation change: only their records are redone.
    label = data / LABEL_DIRS["ade20k"] / "ADE_train_00000007.png"
    values = png(label)
    values[:4, :4] = 5
    Image.fromarray(values).save(label)
    document = json.loads((data / LLAVA_JSON).read_text())
    document[1]["conversations"][-1]["value"] += " Really."
    (data / LLAVA_JSON).write_text(json.dumps(document))
    changed = prepare(data, out, workers=1, visualize=2)
    assert {name: stats.converted for name, stats in changed.stats.items()} == \
        {"ade20k:train": 1, "llava_instruct_150k:train": 1}
    record = next(r for r in records_of(out, "llava_instruct_150k") if r["id"].endswith("-000001"))
    assert record["conversations"][-1]["value"].endswith(" Really.")


def test_a_vqa_record_edited_out_of_schema_is_redone(demo, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(demo["out"]["llava_instruct_150k"], out)
    manifest = out / "llava_instruct_150k" / "train" / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    del lines[0]["conversations"]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = prepare(demo["data"]["llava_instruct_150k"], out, workers=1)
    assert result.stats["llava_instruct_150k:train"].converted == 1
    assert records_of(out, "llava_instruct_150k")[0]["conversations"]


def test_manifest_schema_of_conversation_records():
    base = {"id": "a", "image": "coco/train2017/a.jpg", "width": 4, "height": 4, "source": "s", "split": "train"}
    turns = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Shapes."}]
    target = {"texts": ["dog"], "is_sentence": False, "mask": "s/train/masks/a_0.png"}
    assert check_record({**base, "targets": [], "conversations": turns}) is None
    assert check_record({**base, "targets": [target]}) is None
    assert check_record({**base, "targets": [target], "conversations": None}) is None
    assert "no targets" in check_record({**base, "targets": []})
    assert "no targets" in check_record({**base, "targets": [], "conversations": None})
    assert "both" in check_record({**base, "targets": [target], "conversations": turns})
    for bad in ([], turns[:1], turns[::-1], [turns[0], {"from": "gpt", "value": 3}],
                [turns[0], {"from": "gpt", "value": "x", "extra": 1}], "turns"):
        assert check_record({**base, "targets": [], "conversations": bad}) is not None, bad


# --- hostile paths -------------------------------------------------------------------------


def _outside_jpeg(tmp_path):
    outside = tmp_path / "outside" / "secret.jpg"
    outside.parent.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT)).save(buffer, format="JPEG")
    outside.write_bytes(buffer.getvalue())
    return outside


def test_links_out_of_an_image_folder_are_errors_never_reads(demo, tmp_path):
    outside = _outside_jpeg(tmp_path)
    data = tmp_path / "data"
    for source in ("ade20k", "pascal_part", "llava_instruct_150k"):
        shutil.copytree(demo["data"][source], data, dirs_exist_ok=True)
    links = {
        "ade20k": data / IMAGE_DIRS["ade20k"] / "ADE_train_00000007.jpg",
        "pascal_part": data / PASCAL_LAYOUT.image_dir / "2008_000007.jpg",
        "llava_instruct_150k": data / LLAVA_IMAGE_DIR / image_name(3),
    }
    for link in links.values():
        link.unlink()
        link.symlink_to(outside)
    label = data / LABEL_DIRS["ade20k"] / "ADE_train_00000006.png"
    label.unlink()
    label.symlink_to(outside)
    result = prepare(data, tmp_path / "out", workers=1)
    # The row names the linked file, or the annotation file that named it; the LLaVA
    # reader already resolves links when it checks a record's image name.
    outside_rows = [issue for issue in result.issues if "resolves outside" in issue["reason"]]
    assert sorted(issue["code"] for issue in outside_rows) == ["bad_path"] + ["unsafe_path"] * 3
    for name in ("ADE_train_00000006.png", "ADE_train_00000007.jpg", "2008_000007.jpg", image_name(3)):
        assert any(name in issue["file"] + issue["reason"] for issue in outside_rows), name
    for source in links:
        for record in records_of(tmp_path / "out", source):
            assert Path(record["image"]).name != links[source].name


def test_hostile_names_in_annotation_files_are_refused(demo, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo["data"]["pascal_part"], data, dirs_exist_ok=True)
    shutil.copytree(demo["data"]["llava_instruct_150k"], data, dirs_exist_ok=True)
    outside = _outside_jpeg(tmp_path)
    escape = os.path.relpath(outside, data / PASCAL_LAYOUT.image_dir)
    parts_file = data / PASCAL_LAYOUT.annotation_file
    document = json.loads(parts_file.read_text())
    document["images"][0]["file_name"] = escape
    document["images"][2]["file_name"] = str(outside)
    parts_file.write_text(json.dumps(document))
    vqa = json.loads((data / LLAVA_JSON).read_text())
    vqa[0]["image"] = os.path.relpath(outside, data / LLAVA_IMAGE_DIR)
    vqa[1]["image"] = str(outside)
    (data / LLAVA_JSON).write_text(json.dumps(vqa))

    result = prepare(data, tmp_path / "out", workers=1)
    errors = [(issue["source"], issue["code"]) for issue in result.issues if issue["severity"] == "error"]
    assert errors.count(("pascal_part", "bad_image_entry")) == 2
    assert errors.count(("llava_instruct_150k", "bad_path")) == 2
    for source in ("pascal_part", "llava_instruct_150k"):
        for record in records_of(tmp_path / "out", source):
            assert "outside" not in record["image"] and "secret" not in record["image"]


def test_an_image_folder_that_is_itself_a_link_is_read(demo, tmp_path):
    """COCO images are often linked in from a shared copy: the folder is its own root."""
    shared = tmp_path / "shared" / "train2017"
    shutil.copytree(demo["data"]["paco_lvis"] / "coco" / "train2017", shared)
    data = tmp_path / "data"
    shutil.copytree(demo["data"]["paco_lvis"] / "vlpart", data / "vlpart")
    (data / "coco").mkdir()
    (data / "coco" / "train2017").symlink_to(shared)
    result = prepare(data, tmp_path / "out", workers=1)
    assert rows(result, "error") == []
    without_overlay = [{key: value for key, value in record.items() if key != "overlay"}
                       for record in records_of(demo["out"]["paco_lvis"], "paco_lvis")]
    assert records_of(tmp_path / "out", "paco_lvis") == without_overlay
