"""Our shards are plain WebDataset and a shard set is a Hugging Face dataset as it stands:
`datasets` (with the dataset card `keyseg shard` writes, or given the tar files) and
`webdataset` read them as is."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds
from loader_rank_worker import build_shard_set
from PIL import Image

from keyseg.data import resolve_shards
from keyseg.shards.index import ShardSet
from keyseg.shards.samples import decode_mask, hf_features
from keyseg.shards.tario import iter_samples
from pipelines import demo_data, prepare, shard


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    return root, build_shard_set(root, {"reasonseg:val": [3, 2], "refcoco:val": [3]})


def load(paths, cache, features=None):
    import datasets

    return datasets.load_dataset("webdataset", data_files={"train": paths}, split="train", cache_dir=str(cache),
                                 features=features)


def check_rows(dataset, samples):
    for row in dataset:
        expected = samples[row["__key__"]]
        document = row["json"]
        assert isinstance(document, dict) and document["id"] == expected["json"]["id"]
        assert [t["texts"] for t in document["targets"]] == [t["texts"] for t in expected["json"]["targets"]]
        assert isinstance(row["jpg"], Image.Image)
        assert row["jpg"].size == (expected["json"]["width"], expected["json"]["height"])
        for target, mask in zip(document["targets"], expected["masks"]):
            assert np.array_equal(decode_mask(target["mask"]), mask)


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("split", ["reasonseg:val", "refcoco:val"])
def test_hf_datasets_webdataset_builder_reads_our_shards(shard_set, tmp_path, offline, split):
    root, samples = shard_set
    paths = resolve_shards(root, split)
    dataset = load(paths, tmp_path / "hf-cache")
    assert {"__key__", "jpg", "json"} <= set(dataset.column_names)
    assert len(dataset) == sum(1 for key in samples if key.startswith(split.split(":")[0]))
    check_rows(dataset, samples)


def test_hf_datasets_mixing_sources_needs_explicit_features(shard_set, tmp_path, offline):
    """The builder infers the schema from the first 5 samples of the first shard: a field
    that is null there (ReasonSeg's ann_id) cannot take refCOCO's ints later. Giving the
    schema explicitly reads every source in one dataset."""
    import datasets

    root, samples = shard_set
    paths = resolve_shards(root, ["reasonseg:val", "refcoco:val"])
    with pytest.raises(datasets.exceptions.DatasetGenerationError):
        load(paths, tmp_path / "inferred")
    dataset = load(paths, tmp_path / "explicit", features=hf_features())
    assert len(dataset) == len(samples)
    check_rows(dataset, samples)


def test_plain_webdataset_iterates_our_shards(shard_set):
    root, samples = shard_set
    urls = resolve_shards(root, ["reasonseg:val", "refcoco:val"])
    seen = []
    for sample in wds.WebDataset(urls, shardshuffle=False):
        document = json.loads(sample["json"])
        assert document["id"] == sample["__key__"]
        assert sample["jpg"] == samples[sample["__key__"]]["jpg"]  # original bytes, untouched
        seen.append(sample["__key__"])
    assert sorted(seen) == sorted(samples)


def test_schema_check_and_hf_features_name_the_same_fields():
    """`check_sample_json` requires exactly the fields the `datasets` schema declares (and
    the writer writes), so the two descriptions of the format cannot drift apart."""
    from loader_rank_worker import make_sample

    from keyseg.shards.samples import check_sample_json

    document = hf_features()["json"]
    target = document["targets"].feature
    sample = make_sample("refcoco", "val", 0)["json"]
    assert set(sample) == set(document) and set(sample["targets"][0]) == set(target)
    assert check_sample_json(sample) is None
    for name in document:
        broken = json.loads(json.dumps(sample))
        del broken[name]
        assert check_sample_json(broken) == f"bad json fields: {name} is missing"
    for name in target:
        broken = json.loads(json.dumps(sample))
        del broken["targets"][0][name]
        assert check_sample_json(broken) == f"bad json fields: targets[0].{name} is missing"


# ------------------------------------------------------------- a shard set from keyseg shard
@pytest.fixture(scope="module")
def written_set(tmp_path_factory):
    """`keyseg shard` output over the demo data: ReasonSeg (null ann_id) and refCOCO (ints)."""
    root = tmp_path_factory.mktemp("written")
    demo_data.run(demo_data.DemoDataConfig(out=root / "data", images=12, sources=("reasonseg", "refcoco")))
    prepare.run(prepare.PrepareConfig(data_dir=root / "data", out=root / "prepared", workers=1, show_progress=False))
    shard.run(shard.ShardConfig(prepared=root / "prepared", out=root / "shards", workers=1, show_progress=False,
                                maxcount=2))
    shard_set = ShardSet.open(root / "shards")
    assert shard_set.sources == ["reasonseg", "refcoco"] and len(shard_set.entries("reasonseg:val")) > 1
    return shard_set


def samples_of(shard_set, names):
    """{key: sample json} read straight from the tars of the named splits."""
    found = {}
    for paths in shard_set.shard_paths(names).values():
        for path in paths:
            with open(path, "rb") as handle:
                found.update((key, json.loads(members["json"])) for key, members in iter_samples(handle))
    return found


def check_split(dataset, expected: dict):
    assert dataset.features == hf_features()
    assert sorted(row["__key__"] for row in dataset) == sorted(expected)
    for row in dataset:
        assert row["json"] == expected[row["__key__"]]  # every field, nulls and ints as written
        assert row["jpg"].size == (row["json"]["width"], row["json"]["height"])


@pytest.mark.parametrize("source", ["reasonseg", "refcoco"])
def test_load_dataset_reads_one_source_of_a_shard_set_by_its_folder(written_set, tmp_path, offline, source):
    import datasets

    loaded = datasets.load_dataset(str(written_set.folder), source, cache_dir=str(tmp_path / "hf-cache"))
    names = [name for name in written_set.splits if written_set.source_and_split(name)[0] == source]
    assert sorted(loaded) == sorted(written_set.source_and_split(name)[1] for name in names)
    for name in names:
        check_split(loaded[written_set.source_and_split(name)[1]], samples_of(written_set, name))


def test_load_dataset_mixes_every_source_without_extra_arguments(written_set, tmp_path, offline):
    """The default config merges splits by name: ReasonSeg's null ann_id comes first, then
    refCOCO's integers, which fails when the schema is inferred; the card declares it."""
    import datasets

    loaded = datasets.load_dataset(str(written_set.folder), cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(loaded) == ["test", "testA", "testB", "train", "val"]
    for part in loaded:
        names = [name for name in written_set.splits if written_set.source_and_split(name)[1] == part]
        check_split(loaded[part], samples_of(written_set, names))
    assert {row["json"]["source"] for row in loaded["val"]} == {"reasonseg", "refcoco"}
    ann_ids = {row["json"]["source"]: row["json"]["targets"][0]["ann_id"] for row in loaded["val"]}
    assert ann_ids["reasonseg"] is None and isinstance(ann_ids["refcoco"], int)
