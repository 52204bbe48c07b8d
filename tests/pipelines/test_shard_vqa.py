"""`keyseg shard` with a VQA (LLaVA-Instruct) and a semantic (ADE20K) manifest, built by
hand as `keyseg prepare` writes them: the shards carry the conversations, `shards verify`
and `shards stats` accept them, the loader decodes them and `datasets` loads the folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from loader_rank_worker import make_jpeg
from typer.testing import CliRunner

from cli import app
from keyseg.data import SampleConfig, make_eval_pipeline, make_loader, make_train_pipeline, resolve_shards
from keyseg.data.conversation import vqa_conversation
from keyseg.masks.png import encode_png
from keyseg.shards.samples import SAMPLE_FORMAT_VERSION, decode_mask
from keyseg.shards.tario import iter_samples
from pipelines import shard

VQA = "llava_instruct_150k:train"
SEMANTIC = "ade20k:train"
TURNS = [
    {"from": "human", "value": "<image>\nWhat is on the table?"},
    {"from": "gpt", "value": "A cup and a plate."},
    {"from": "human", "value": "What colour is the cup?"},
    {"from": "gpt", "value": "It is red."},
]
LATE_IMAGE = [
    {"from": "human", "value": "Describe the room."},
    {"from": "gpt", "value": "A kitchen."},
    {"from": "human", "value": "<image>\nWhat is by the window?"},
    {"from": "gpt", "value": "A plant."},
]
# Records the shard stage refuses, with what their error must say.
BAD_VQA = {
    "llava-seg": ([{"from": "human", "value": "<image>\nSegment the cup."}, {"from": "gpt", "value": "[SEG]."}],
                  "holds '[SEG]'"),
    "llava-twoimages": ([{"from": "human", "value": "<image>\nOne."}, {"from": "gpt", "value": "<image> two."}],
                        "2 turns of the prompt hold <image>, expected exactly one"),
}


def write_image(data, relative, width, height, seed):
    path = data / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make_jpeg(width, height, seed))
    return relative


def vqa_record(data, key, turns, seed, width=72, height=56):
    image = write_image(data, f"coco/train2017/{seed:012d}.jpg", width, height, seed)
    return {"id": key, "image": image, "width": width, "height": height, "source": "llava_instruct_150k",
            "split": "train", "targets": [], "conversations": turns}


def semantic_record(data, prepared, key, seed, width=64, height=48):
    image = write_image(data, f"ade20k/images/training/{key}.jpg", width, height, seed)
    targets, masks = [], []
    for index, texts in enumerate([["wall"], ["the leg of the chair", "chair leg"]]):
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[index * 10:index * 10 + 20, 5 + index * 20:30 + index * 20] = 1
        relative = f"ade20k/train/masks/{key}_{index}.png"
        (prepared / relative).parent.mkdir(parents=True, exist_ok=True)
        (prepared / relative).write_bytes(encode_png(mask))
        targets.append({"texts": texts, "is_sentence": False, "mask": relative, "explanatory": None,
                        "ann_id": 7 if index else None, "ref_id": None})
        masks.append(mask)
    return {"id": key, "image": image, "width": width, "height": height, "source": "ade20k", "split": "train",
            "targets": targets}, masks


def write_manifest(prepared, name, records):
    source, split = name.split(":")
    path = prepared / source / split / "manifest.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa-shards")
    data, prepared = root / "data", root / "prepared"
    vqa = [vqa_record(data, "llava-000001", TURNS, 1), vqa_record(data, "llava-000002", LATE_IMAGE, 2, 50, 66)]
    bad = [vqa_record(data, key, turns, 10 + n) for n, (key, (turns, _)) in enumerate(BAD_VQA.items())]
    write_manifest(prepared, VQA, vqa + bad)
    semantic, masks = zip(*(semantic_record(data, prepared, f"ade-{n}", 20 + n) for n in range(2)))
    write_manifest(prepared, SEMANTIC, list(semantic))
    result = shard.run(shard.ShardConfig(prepared=prepared, out=root / "shards", data_dir=data, workers=1,
                                         show_progress=False))
    return {"root": root, "out": root / "shards", "result": result, "vqa": {r["id"]: r for r in vqa},
            "semantic": {r["id"]: (r, m) for r, m in zip(semantic, masks)}}


def samples_of(out, split):
    index = json.loads((out / "index.json").read_text())
    found = {}
    for entry in index["splits"][split]["shards"]:
        with open(out / entry["path"], "rb") as handle:
            found.update((key, members) for key, members in iter_samples(handle))
    return found


def test_shards_carry_the_conversations_and_the_semantic_masks(written):
    out, result = written["out"], written["result"]
    assert result.index["format_version"] == SAMPLE_FORMAT_VERSION == 2
    assert {error["id"]: error["reason"] for error in result.errors} == {
        key: f"bad conversation: turn 1 {reason}" if "SEG" in reason else f"bad conversation: {reason}"
        for key, (_, reason) in BAD_VQA.items()}
    vqa = samples_of(out, VQA)
    assert sorted(vqa) == sorted(written["vqa"])
    for key, members in vqa.items():
        record = written["vqa"][key]
        sample = json.loads(members["json"])
        assert sample["targets"] == [] and sample["conversations"] == record["conversations"]
        assert members["jpg"] == (written["root"] / "data" / record["image"]).read_bytes()
    semantic = samples_of(out, SEMANTIC)
    assert sorted(semantic) == sorted(written["semantic"])
    for key, members in semantic.items():
        record, masks = written["semantic"][key]
        sample = json.loads(members["json"])
        assert sample["conversations"] is None
        assert [t["texts"] for t in sample["targets"]] == [t["texts"] for t in record["targets"]]
        assert [t["ann_id"] for t in sample["targets"]] == [None, 7]
        for target, mask in zip(sample["targets"], masks, strict=True):
            assert np.array_equal(decode_mask(target["mask"]), mask)
    split = result.index["splits"][VQA]
    assert (split["samples"], split["targets"], split["errors"]) == (2, 0, 2)


def test_a_rerun_keeps_both_splits(written, tmp_path):
    again = shard.run(shard.ShardConfig(prepared=written["root"] / "prepared", out=written["out"],
                                        data_dir=written["root"] / "data", workers=1, show_progress=False))
    assert sorted(again.skipped_splits) == sorted([VQA, SEMANTIC])


def test_the_loader_decodes_vqa_and_semantic_samples(written):
    config = SampleConfig(sam_size=128, clip_size=56, num_queries=2)
    seen = {}
    for batch in make_loader(make_eval_pipeline(resolve_shards(written["out"], [VQA, SEMANTIC]), config, 2)):
        for index, key in enumerate(batch["keys"]):
            rows = range(int(batch["offsets"][index]), int(batch["offsets"][index + 1]))
            seen[key] = ([batch["conversations"][row] for row in rows], batch["masks"][index])
    assert sorted(seen) == sorted([*written["vqa"], *written["semantic"]])
    for key, record in written["vqa"].items():
        conversations, masks = seen[key]
        assert conversations == [vqa_conversation(record["conversations"])]
        assert masks.shape == (0, record["height"], record["width"])
    for key, (record, _) in written["semantic"].items():
        conversations, masks = seen[key]
        assert len(conversations) == 2 and masks.shape == (2, record["height"], record["width"])

    # Training mixes the two streams; every batch decodes, nothing is skipped.
    train = make_train_pipeline([(resolve_shards(written["out"], VQA), 1.0),
                                 (resolve_shards(written["out"], SEMANTIC), 1.0)],
                                config, batch_size=2, batches_per_epoch=4, seed=3)
    loader = make_loader(train)
    sources = [source for batch in loader for source in batch["sources"]]
    assert len(sources) == 8 and set(sources) <= {"llava_instruct_150k", "ade20k"}
    assert loader.stats.skipped == 0


def cli(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    assert result.exit_code == code, result.output
    return result


def test_shards_verify_and_stats_accept_vqa_samples(written):
    out = written["out"]
    cli("shards", "verify", "--shards", str(out), "--no-progress")
    report = json.loads((out / "verify_report.json").read_text())
    assert report["samples"] == 4 and report["problems"] == []
    cli("shards", "stats", "--shards", str(out), "--no-picture")
    stats = json.loads((out / "stats.json").read_text())
    assert (stats[VQA]["samples"], stats[VQA]["targets"], stats[VQA]["bad_samples"]) == (2, 0, 0)
    assert stats[VQA]["targets_per_image"] == {"0": 2}
    assert (stats[SEMANTIC]["samples"], stats[SEMANTIC]["targets"]) == (2, 4)


def test_datasets_loads_the_folder_with_conversations_and_nulls(written, tmp_path, monkeypatch):
    import datasets

    from keyseg.shards.samples import hf_features

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = datasets.load_dataset(str(written["out"]), cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(loaded) == ["train"]
    rows = {row["__key__"]: row for row in loaded["train"]}
    assert loaded["train"].features == hf_features()
    assert sorted(rows) == sorted([*written["vqa"], *written["semantic"]])
    expected = {**samples_of(written["out"], VQA), **samples_of(written["out"], SEMANTIC)}
    for key, row in rows.items():
        assert row["json"] == json.loads(expected[key]["json"])  # every field, nulls and lists as written
    assert rows["llava-000002"]["json"]["conversations"] == LATE_IMAGE
    assert rows["ade-0"]["json"]["conversations"] is None
    one = datasets.load_dataset(str(written["out"]), "llava_instruct_150k", cache_dir=str(tmp_path / "one"))
    assert len(one["train"]) == 2
