"""Our shards are plain WebDataset: Hugging Face `datasets` and `webdataset` read them as is."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds
from loader_rank_worker import build_shard_set
from PIL import Image

from keyseg.data import resolve_shards
from keyseg.shards.samples import decode_mask, hf_features


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
