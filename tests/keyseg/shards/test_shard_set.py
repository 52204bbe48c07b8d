"""ShardSet: the one view of a shard set folder, and the writer that keeps its index.json
and its dataset card together."""

from __future__ import annotations

import json

import pytest
import yaml

from keyseg.errors import DataError, UsageError
from keyseg.shards.card import card_configs
from keyseg.shards.index import ShardSet, write_shard_set


def split(source, part, paths, samples=1):
    return {"source": source, "split": part, "samples": samples * len(paths), "targets": len(paths), "bytes": 10,
            "shards": [{"path": path, "samples": samples, "bytes": 10, "sha256": "0" * 64} for path in paths]}


def front_matter(folder):
    return yaml.safe_load((folder / "README.md").read_text(encoding="utf-8").split("---\n")[1])


def test_open_lists_splits_sources_paths_and_counts(tmp_path):
    folder = tmp_path / "set"
    splits = {"reasonseg:val": split("reasonseg", "val", ["reasonseg/val/a.tar", "reasonseg/val/b.tar"], 2),
              "refcoco:testA": split("refcoco", "testA", ["refcoco/testA/a.tar"]),
              "reasonseg:train": split("reasonseg", "train", ["reasonseg/train/a.tar"])}
    index = write_shard_set(folder, splits, config={"seed": 0}, inputs={"prepared": "p"})
    assert index["totals"] == {"samples": 6, "targets": 4, "bytes": 30, "shards": 4}
    for spec in (folder, folder / "index.json"):
        shard_set = ShardSet.open(spec)
        assert shard_set.folder == folder and shard_set.index == index == json.loads((folder / "index.json").read_text())
        assert shard_set.splits == ["reasonseg:val", "refcoco:testA", "reasonseg:train"]
        assert shard_set.sources == ["reasonseg", "refcoco"]
        assert shard_set.source_and_split("refcoco:testA") == ("refcoco", "testA")
        assert shard_set.sample_count("reasonseg:val") == 4
        assert shard_set.shard_paths("reasonseg:val") == {"reasonseg:val": [folder / "reasonseg/val/a.tar",
                                                                             folder / "reasonseg/val/b.tar"]}
    with pytest.raises(UsageError, match="has no split 'refcoco:val'"):
        shard_set.shard_paths(["reasonseg:val", "refcoco:val"])
    with pytest.raises(DataError, match="split reasonseg:val: shard .* not found"):
        shard_set.shard_paths("reasonseg:val", must_exist=True)


def test_the_card_has_one_config_per_source_and_an_all_config_merging_splits_by_name(tmp_path):
    folder = tmp_path / "set"
    write_shard_set(folder, {"reasonseg:val": split("reasonseg", "val", ["reasonseg/val/a.tar"]),
                             "refcoco+:val": split("refcoco+", "val", ["refcoco+/val/a.tar"]),
                             "refcoco+:testA": split("refcoco+", "testA", ["refcoco+/testA/a.tar"])})
    metadata = front_matter(folder)
    configs = {config["config_name"]: config for config in metadata["configs"]}
    assert list(configs) == ["all", "reasonseg", "refcoco+"] and configs["all"]["default"] is True
    assert configs["all"]["data_files"] == [{"split": "val", "path": ["reasonseg/val/a.tar", "refcoco+/val/a.tar"]},
                                           {"split": "testA", "path": ["refcoco+/testA/a.tar"]}]
    assert configs["refcoco+"]["data_files"] == [{"split": "val", "path": ["refcoco+/val/a.tar"]},
                                                {"split": "testA", "path": ["refcoco+/testA/a.tar"]}]
    features = {info["config_name"]: info["features"] for info in metadata["dataset_info"]}
    assert list(features) == list(configs) and all(value == features["all"] for value in features.values())
    ann_id = [field for field in features["all"][1]["struct"] if field["name"] == "targets"][0]["list"]
    assert {"name": "ann_id", "dtype": "int64"} in ann_id


def test_names_datasets_cannot_take_are_left_out_of_the_card_not_the_index(tmp_path):
    index = {"splits": {"odd:x-y": split("odd", "x-y", ["odd/x-y/a.tar"]),
                        "all:val": split("all", "val", ["all/val/a.tar"]),
                        "glob:val": split("glob", "val", ["glob/val/a[1].tar"]),
                        "empty:val": split("empty", "val", []),
                        "up:val": split("up", "val", ["../up/val/a.tar"]),
                        "pipe:val": split("pipe", "val", ["pipe:cat a.tar"]),
                        "good:val": split("good", "val", ["good/val/a.tar"])}}
    configs, left_out = card_configs(index)
    assert configs == {"all": {"val": ["good/val/a.tar"]}, "good": {"val": ["good/val/a.tar"]}}
    assert left_out == ["odd:x-y", "all:val", "glob:val", "empty:val", "up:val", "pipe:val"]
    write_shard_set(tmp_path, index["splits"])
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "Not in a config" in card and "`odd:x-y`" in card
    assert set(ShardSet.open(tmp_path).splits) == set(index["splits"])
