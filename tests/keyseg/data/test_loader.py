"""Shard URLs, train/eval pipelines, mixing, corrupt samples, http and s3 streaming."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import random
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from loader_rank_worker import build_shard_set, mismatched_rle_json

from keyseg.data import (
    ConversationConfig,
    SampleConfig,
    SampleDecoder,
    collate,
    make_eval_pipeline,
    make_loader,
    make_train_pipeline,
    resolve_shards,
)
from keyseg.data.transforms import ClipInput, decode_rgb, sam_input

CONFIG = SampleConfig(sam_size=128, clip_size=32, num_queries=3)
SPLITS = {"reasonseg:train": [4, 3], "reasonseg:val": [3, 2], "refcoco:train": [5, 4, 3], "refcoco:val": [4]}


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards") / "demo"
    return root, build_shard_set(root, SPLITS)


def keys_of(samples: dict, split: str) -> set[str]:
    source, name = split.split(":")
    return {key for key, sample in samples.items() if (sample["json"]["source"], sample["json"]["split"]) == (source, name)}


def raw_sample(sample: dict) -> dict:
    from keyseg.shards.samples import sample_json_bytes

    return {"__key__": sample["key"], "__url__": "memory", "jpg": sample["jpg"],
            "json": sample_json_bytes(sample["json"])}


# ---------------------------------------------------------------- URLs
def test_resolve_index_braces_lists_and_remote_urls(shard_set):
    root, _ = shard_set
    urls = resolve_shards(root, "refcoco:train")
    assert urls == [str(root / "refcoco" / "train" / f"refcoco-train-{i:06d}.tar") for i in range(3)]
    assert resolve_shards(root / "index.json", ["reasonseg:val", "refcoco:val"]) == (
        resolve_shards(root, "reasonseg:val") + resolve_shards(root, "refcoco:val"))
    assert resolve_shards(str(root / "refcoco/train/refcoco-train-{000000..000002}.tar")) == urls
    assert resolve_shards(f"{urls[0]}::{urls[2]}") == [urls[0], urls[2]]
    assert resolve_shards([urls[1], Path(urls[0])]) == [urls[1], urls[0]]
    remote = ["pipe:cat x.tar", "http://host/a-000000.tar", "https://host/b.tar", "s3://bucket/c.tar"]
    assert resolve_shards(remote) == remote
    with pytest.raises(ValueError, match="name a split"):
        resolve_shards(root)
    with pytest.raises(ValueError, match="no split 'nope'"):
        resolve_shards(root, "nope")
    with pytest.raises(ValueError, match="no opener"):
        resolve_shards("weird://x.tar")


def test_missing_shard_raises_an_error_naming_it(shard_set, tmp_path):
    root, _ = shard_set
    pattern = str(root / "refcoco/train/refcoco-train-{000000..000003}.tar")
    with pytest.raises(FileNotFoundError, match="refcoco-train-000003.tar"):
        resolve_shards(pattern)
    with pytest.raises(FileNotFoundError, match="gone.tar"):
        make_eval_pipeline([str(tmp_path / "gone.tar")], CONFIG, 2)
    with pytest.raises(FileNotFoundError, match="gone.tar"):
        make_train_pipeline([(str(tmp_path / "gone.tar"), 1)], CONFIG, 2, 3)


# ---------------------------------------------------------------- eval
@pytest.mark.parametrize("workers", [0, 2])
def test_eval_yields_every_sample_once_with_exact_masks(shard_set, workers):
    root, samples = shard_set
    splits = ["reasonseg:val", "refcoco:val"]
    loader = make_loader(make_eval_pipeline(resolve_shards(root, splits), CONFIG, 3, workers), workers)
    seen = []
    clip = ClipInput(32)
    for batch in loader:
        assert batch["offsets"].tolist()[-1] == len(batch["questions"]) == len(batch["conversations"])
        assert batch["image_sam"].shape == (len(batch["keys"]), 3, 128, 128)
        for i, key in enumerate(batch["keys"]):
            sample, targets = samples[key], samples[key]["json"]["targets"]
            refer = key.startswith("refcoco")
            start, end = batch["offsets"][i].item(), batch["offsets"][i + 1].item()
            # eval: ReasonSeg asks its first text; refCOCO (lisa protocol) every sentence of every ref
            expected = [(t, s) for t, target in enumerate(targets)
                        for s in (range(len(target["texts"])) if refer else [0])]
            assert list(zip(batch["target_indices"][start:end], batch["text_indices"][start:end])) == expected
            for conversation, question, (t, s) in zip(batch["conversations"][start:end],
                                                     batch["questions"][start:end], expected):
                text = targets[t]["texts"][s]
                if refer:
                    assert question == f"<image>\n What is {text.lower()} in this image? Please output segmentation mask."
                else:
                    assert question == f"<image>\n {text} Please output segmentation mask."
                assert conversation.endswith(" ASSISTANT: [SEG]. [KEY].</s>")
                assert "USER: <im_start><image><im_end>\n" in conversation
            expected_masks = torch.from_numpy(np.stack([sample["masks"][t] for t, _ in expected]))
            assert batch["masks"][i].dtype == torch.uint8 and torch.equal(batch["masks"][i], expected_masks)
            rgb = decode_rgb(sample["jpg"])
            assert torch.equal(batch["image_sam"][i], sam_input(rgb, 128)[0])
            assert torch.equal(batch["image_clip"][i], clip(rgb))
            assert batch["original_size"][i] == rgb.shape[:2]
            seen.append(key)
    assert sorted(seen) == sorted(keys_of(samples, "reasonseg:val") | keys_of(samples, "refcoco:val"))
    assert loader.stats.skipped == 0 and loader.stats.samples == len(seen)


def test_eval_decoding_is_deterministic(shard_set):
    _, samples = shard_set
    decoder = SampleDecoder(SampleConfig(sam_size=128, clip_size=32, mode="eval"))
    sample = next(iter(samples.values()))
    first, second = decoder(raw_sample(sample)), decoder(raw_sample(sample), random.Random(5))
    assert first["questions"] == second["questions"] and first["conversations"] == second["conversations"]


# ---------------------------------------------------------------- train
@pytest.mark.parametrize("workers, batches_per_epoch", [(0, 4), (2, 5)])
def test_train_runs_exactly_batches_per_epoch(shard_set, workers, batches_per_epoch):
    root, samples = shard_set
    sources = [(resolve_shards(root, "refcoco:train"), 9), (resolve_shards(root, "reasonseg:train"), 3)]
    pipeline = make_train_pipeline(sources, CONFIG, 3, batches_per_epoch, workers, seed=1)
    loader = make_loader(pipeline, workers)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == batches_per_epoch
        assert loader.stats.batches == batches_per_epoch and loader.stats.samples == 3 * batches_per_epoch
    for batch in batches:
        assert len(batch["keys"]) == 3
        for i, key in enumerate(batch["keys"]):
            targets = samples[key]["json"]["targets"]
            start, end = batch["offsets"][i].item(), batch["offsets"][i + 1].item()
            assert 1 <= end - start <= 3 and batch["masks"][i].shape[0] == end - start
            for question, conversation, text, keyword in zip(*(batch[name][start:end] for name in
                                                               ("questions", "conversations", "texts", "keywords"))):
                assert any(text in t["texts"] for t in targets)
                assert text.lower() in question.lower() and question.startswith("<image>\n")
                assert conversation.count("[SEG]") == 1 and conversation.endswith(f"[KEY] {keyword}</s>")


def test_train_queries_follow_the_reference_sampling():
    from loader_rank_worker import make_sample

    decoder = SampleDecoder(SampleConfig(sam_size=128, clip_size=32, num_queries=3))
    reason = make_sample("reasonseg", "train", 3)  # one target, up to 4 texts
    def sentences_of(sample):
        return [(t, s) for t, target in enumerate(sample["json"]["targets"]) for s in range(len(target["texts"]))]

    refer = next(sample for index in range(50) if len(sentences_of(sample := make_sample("refcoco", "train", index))) > 3)
    sentences = sentences_of(refer)
    seen_pairs = set()
    for seed in range(20):
        out = decoder(raw_sample(reason), random.Random(seed))
        texts = reason["json"]["targets"][0]["texts"]
        assert len(out["texts"]) == min(3, len(texts)) and len(set(out["texts"])) == len(out["texts"])
        assert all(torch.equal(mask, torch.from_numpy(reason["masks"][0])) for mask in out["masks"])
        assert out["keywords"] == ["thing3"] * len(out["texts"])
        assert all(c.endswith(" ASSISTANT: [SEG].[KEY] thing3</s>") for c in out["conversations"])
        out = decoder(raw_sample(refer), random.Random(seed))
        # refCOCO: distinct sentences drawn among all sentences of all refs; two may share a ref
        pairs = list(zip(out["target_indices"], out["text_indices"]))
        assert len(set(pairs)) == len(pairs) == min(3, len(sentences)) and set(pairs) <= set(sentences)
        seen_pairs.add(tuple(sorted(pairs)))
        for index, mask, text, keyword in zip(out["target_indices"], out["masks"], out["texts"], out["keywords"]):
            assert torch.equal(mask, torch.from_numpy(refer["masks"][index]))
            assert text in refer["json"]["targets"][index]["texts"] and keyword == text
    assert len(seen_pairs) > 1


def test_reasonseg_choices_and_keyword_option():
    from loader_rank_worker import make_sample

    sample = make_sample("reasonseg", "train", 2)  # has a keyword entry
    texts = sample["json"]["targets"][0]["texts"]
    config = SampleConfig(sam_size=128, clip_size=32, conversation=ConversationConfig(explanatory=1.0))
    out = SampleDecoder(config)(raw_sample(sample), random.Random(0))
    # explanatory 1.0 (the release's default): always the bare query text
    assert all(q == f"<image>\n{t}" for q, t in zip(out["questions"], out["texts"])) and set(out["texts"]) <= set(texts)
    config = SampleConfig(sam_size=128, clip_size=32, conversation=ConversationConfig(explanatory=0.0))
    questions = {q for seed in range(30) for q in SampleDecoder(config)(raw_sample(sample), random.Random(seed))["questions"]}
    assert any(q.endswith("Please output segmentation mask and explain why.") for q in questions)  # choice 1
    assert any(q.endswith(" Please respond with segmentation mask.") for q in questions)  # choice 0, a template
    config = SampleConfig(sam_size=128, clip_size=32, conversation=ConversationConfig(use_keyword=False))
    out = SampleDecoder(config)(raw_sample(sample), random.Random(0))
    assert not any("[KEY]" in conversation for conversation in out["conversations"])
    with pytest.raises(ValueError, match="explanatory"):
        ConversationConfig(explanatory=2.0)


def test_train_is_reproducible_per_seed_and_epoch(shard_set):
    root, _ = shard_set
    sources = [(resolve_shards(root, "refcoco:train"), 1), (resolve_shards(root, "reasonseg:train"), 1)]

    def epochs(seed):
        loader = make_loader(make_train_pipeline(sources, CONFIG, 2, 3, 0, seed=seed), 0)
        return [[(batch["keys"], batch["questions"]) for batch in loader] for _ in range(2)]

    first = epochs(3)
    assert first == epochs(3)
    assert first[0] != first[1]  # a new epoch draws new shards, samples and templates
    assert first != epochs(4)


def test_mixing_follows_weights(shard_set):
    root, _ = shard_set
    sources = [(resolve_shards(root, "refcoco:train"), 9), (resolve_shards(root, "reasonseg:train"), 3)]
    config = SampleConfig(sam_size=16, clip_size=16, num_queries=1)
    pipeline = make_train_pipeline(sources, config, 10, 60, 0, seed=0)
    counts = Counter(source for batch in pipeline for source in batch["sources"])
    assert sum(counts.values()) == 600
    assert abs(counts["refcoco"] / 600 - 0.75) < 0.08  # binomial sd is 0.018


def test_collate_offsets_and_lists(shard_set):
    _, samples = shard_set
    decoder = SampleDecoder(SampleConfig(sam_size=128, clip_size=32, mode="eval"))
    decoded = [decoder(raw_sample(sample)) for sample in list(samples.values())[:3]]
    batch = collate(decoded)
    counts = [len(sample["questions"]) for sample in decoded]
    assert batch["offsets"].tolist() == [0, counts[0], counts[0] + counts[1], sum(counts)]
    assert batch["image_sam"].shape == (3, 3, 128, 128) and batch["image_clip"].shape == (3, 3, 32, 32)
    assert [m.shape[0] for m in batch["masks"]] == counts and batch["keys"] == [s["key"] for s in decoded]


# ---------------------------------------------------------------- corrupt samples
@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_samples_are_logged_skipped_and_counted(tmp_path, caplog, workers):
    root = tmp_path / "bad"
    from loader_rank_worker import make_sample

    keys = [make_sample("reasonseg", "val", i)["key"] for i in range(8)]
    corrupt = {keys[1]: {"json": b"{not json"},
               keys[4]: {"jpg": make_sample("reasonseg", "val", 4)["jpg"][:64]},
               keys[7]: {"json": mismatched_rle_json(make_sample("reasonseg", "val", 7))}}
    build_shard_set(root, {"reasonseg:val": [4, 4]}, corrupt=corrupt)
    caplog.set_level(logging.WARNING, logger="keyseg.data")
    loader = make_loader(make_eval_pipeline(resolve_shards(root, "reasonseg:val"), CONFIG, 2, workers), workers)
    seen = [key for batch in loader for key in batch["keys"]]
    assert sorted(seen) == sorted(set(keys) - set(corrupt))
    stats = loader.stats
    assert stats.skipped == 3
    assert stats.reasons == Counter({"corrupt json": 1, "undecodable jpg": 1, "mask size mismatch": 1})
    assert {skip.key for skip in stats.examples} == set(corrupt)
    assert all(skip.url.endswith(".tar") for skip in stats.examples)
    if workers == 0:  # worker processes log through their own copy of the handlers
        logged = "\n".join(record.getMessage() for record in caplog.records)
        for key in corrupt:
            assert key in logged
        assert "reasonseg-val-000000.tar" in logged and "reasonseg-val-000001.tar" in logged


def test_truncated_shard_is_counted_not_fatal(shard_set, tmp_path):
    root, samples = shard_set
    good = Path(resolve_shards(root, "reasonseg:val")[0])
    broken = tmp_path / "broken.tar"
    # Cut inside the first member's data (a cut exactly between members looks like a
    # shorter shard to tarfile: only index.json's sample counts could tell).
    broken.write_bytes(good.read_bytes()[: 512 + 100])
    loader = make_loader(make_eval_pipeline([str(broken), resolve_shards(root, "refcoco:val")[0]], CONFIG, 4), 0)
    seen = [key for batch in loader for key in batch["keys"]]
    assert sorted(seen) == sorted(keys_of(samples, "refcoco:val"))
    # One skip, charged to the broken shard (webdataset names only the file object of an
    # error inside a member; the old handler logged such skips as "shard None").
    assert loader.stats.skipped == 1 and set(loader.stats.reasons) == {"shard read error"}
    assert [skip.url for skip in loader.stats.examples] == [str(broken)]


def test_skips_reach_the_loader_when_nothing_decodes(shard_set, tmp_path):
    root, _ = shard_set
    broken = tmp_path / "broken.tar"
    broken.write_bytes(Path(resolve_shards(root, "reasonseg:val")[0]).read_bytes()[: 512 + 100])
    loader = make_loader(make_eval_pipeline([str(broken)], CONFIG, 4), 0)
    assert list(loader) == []
    assert loader.stats.skipped == 1 and loader.stats.examples[0].url == str(broken)


def test_a_key_that_is_a_path_is_skipped(tmp_path):
    import io
    import tarfile

    from loader_rank_worker import make_sample

    from keyseg.shards.samples import sample_json_bytes

    good, hostile = make_sample("reasonseg", "val", 0), make_sample("reasonseg", "val", 1)
    shard = tmp_path / "hostile.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in [(f"{good['key']}.jpg", good["jpg"]),
                           (f"{good['key']}.json", sample_json_bytes(good["json"])),
                           ("../../x.jpg", hostile["jpg"]), ("../../x.json", sample_json_bytes(hostile["json"]))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    loader = make_loader(make_eval_pipeline([str(shard)], CONFIG, 4), 0)
    assert [key for batch in loader for key in batch["keys"]] == [good["key"]]
    (skip,) = loader.stats.examples
    assert skip.key == "../../x" and skip.reason.startswith("bad key")


# ---------------------------------------------------------------- remote shards
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def test_http_shard_is_streamed(shard_set):
    root, samples = shard_set
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/refcoco/val/refcoco-val-000000.tar"
        keys = [key for batch in make_eval_pipeline(url, CONFIG, 2) for key in batch["keys"]]
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(keys) == sorted(keys_of(samples, "refcoco:val"))


def test_s3_url_goes_through_aws_cli(shard_set, tmp_path, monkeypatch):
    root, samples = shard_set
    bucket = tmp_path / "s3" / "bucket"
    bucket.mkdir(parents=True)
    (bucket / "x.tar").write_bytes(Path(resolve_shards(root, "reasonseg:val")[1]).read_bytes())
    fake = tmp_path / "bin" / "aws"
    fake.parent.mkdir()
    # Stands in for `aws s3 cp s3://BUCKET/KEY -`: cat the file from the fake bucket folder.
    fake.write_text('#!/bin/sh\n[ "$1 $2 $4" = "s3 cp -" ] || exit 2\nexec cat "$FAKE_S3/${3#s3://}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_S3", str(tmp_path / "s3"))
    loader = make_loader(make_eval_pipeline("s3://bucket/x.tar", CONFIG, 2), 0)
    keys = [key for batch in loader for key in batch["keys"]]
    expected = sorted(keys_of(samples, "reasonseg:val"))[3:]  # the second shard holds the last two
    assert sorted(keys) == expected and loader.stats.skipped == 0
