import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from keyseg.shards.samples import decode_mask
from keyseg.shards.tario import iter_samples
from tiny_export import write_tiny_export


def ground_truth(shards, split):
    index = json.loads((shards / "index.json").read_text())
    for entry in index["splits"][split]["shards"]:
        with open(shards / entry["path"], "rb") as handle:
            for key, members in iter_samples(handle):
                sample = json.loads(members["json"])
                for number, target in enumerate(sample["targets"]):
                    yield key, number, decode_mask(target["mask"]), target["is_sentence"]


def expected_scores(pairs):
    """Independent of keyseg.metrics: the protocol written out with numpy."""
    ious, total_i, total_u = [], 0, 0
    for prediction, truth in pairs:
        valid = truth != 255
        i = int(np.sum(prediction & (truth == 1) & valid))
        u = int(np.sum((prediction | (truth == 1)) & valid))
        ious.append(1.0 if u == 0 else i / (u + 1e-5))
        total_i, total_u = total_i + i, total_u + u
    return sum(ious) / len(ious), total_i / total_u


def test_predictions_mode_gives_exactly_the_expected_scores(demo_shards, tmp_path):
    predictions, pairs = tmp_path / "pred", []
    predictions.mkdir()
    rng = np.random.default_rng(0)
    for number, (key, index, truth, _) in enumerate(ground_truth(demo_shards, "reasonseg:val")):
        if number % 3 == 0:
            prediction = truth == 1  # perfect
        elif number % 3 == 1:
            prediction = np.zeros(truth.shape, dtype=bool)  # empty
        else:
            prediction = rng.random(truth.shape) < 0.3  # noise
        cv2.imwrite(str(predictions / f"{key}_{index}.png"), prediction.astype(np.uint8) * 255)
        pairs.append((prediction, truth))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--shards", str(demo_shards), "--split", "reasonseg:val",
                                      "--predictions", str(predictions), "--out", str(out), "--no-progress",
                                      "--visualize", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())["reasonseg:val"]
    giou, ciou = expected_scores(pairs)
    assert metrics["giou"] == pytest.approx(giou, abs=1e-12) and metrics["ciou"] == pytest.approx(ciou, abs=1e-12)
    assert metrics["count"] == len(pairs)
    rows = [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]
    assert len(rows) == len(pairs) and {"id", "query", "intersection", "union", "iou"} <= set(rows[0])
    assert "| val |" in (out / "metrics.md").read_text()
    page = (out / "gallery" / "index.html").read_text()
    listing = json.loads((out / "gallery" / "gallery.json").read_text())
    assert len(listing["worst"]) == len(listing["best"]) == 2 and "http://" not in page
    rows_js = (out / "gallery" / "rows.js").read_text()
    assert rows_js.count('"split": "reasonseg:val"') == len(pairs)  # every scored query is listed


def test_missing_predictions_are_listed_or_counted_as_empty(demo_shards, tmp_path):
    predictions = tmp_path / "pred"
    predictions.mkdir()
    truths = list(ground_truth(demo_shards, "reasonseg:val"))
    key, index, truth, _ = truths[0]
    cv2.imwrite(str(predictions / f"{key}_{index}.png"), (truth == 1).astype(np.uint8))
    args = ["evaluate", "--shards", str(demo_shards), "--split", "reasonseg:val", "--predictions", str(predictions),
            "--out", str(tmp_path / "eval"), "--no-progress"]
    failed = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert failed.exit_code == 1 and f"{len(truths) - 1} prediction(s) missing" in failed.output
    listed = (tmp_path / "eval" / "missing_predictions.txt").read_text().split()
    assert len(listed) == len(truths) - 1 and f"{truths[1][0]}_{truths[1][1]}" in listed
    counted = CliRunner().invoke(app, [*args, "--missing-as-empty"])
    assert counted.exit_code == 0, counted.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["reasonseg:val"]
    assert metrics["count"] == len(truths)


@pytest.fixture(scope="module")
def tiny_model(demo_shards, tmp_path_factory):
    from keyseg.data.conversation import template_texts
    from keyseg.training.tokenizer import shard_texts

    texts = template_texts()
    texts += shard_texts(sorted(demo_shards.rglob("*.tar")))
    # Claims to be trained on reasonseg:val, so the leakage guard must fire on it.
    return write_tiny_export(tmp_path_factory.mktemp("model") / "export", texts, ["reasonseg:val", "refcoco:train"])


def test_model_mode_matches_its_own_predictions_and_flags_leakage(demo_shards, tiny_model, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--shards", str(demo_shards), "--split", "reasonseg:val",
                                      "--split", "refcoco:val", "--model", str(tiny_model), "--out", str(out),
                                      "--no-progress"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "WARNING: the model was trained on reasonseg:val" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["reasonseg:val"]["leakage"]["trained_on_this_split"] is True
    assert metrics["refcoco:val"]["leakage"]["trained_on_this_split"] is False
    assert metrics["refcoco:val"]["keywords"]["judged"] == metrics["refcoco:val"]["count"]
    rows = [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]
    assert all(row["answer"] == "[SEG]. [KEY]." for row in rows)
    assert_auditable(rows, tiny_model)
    # refCOCO, LISA protocol: every sentence of every ref is one query
    sentences = sum(len(target["texts"]) for _, target in refer_targets(demo_shards, "refcoco:val"))
    refer_rows = [row for row in rows if row["split"] == "refcoco:val"]
    assert len(refer_rows) == sentences == metrics["refcoco:val"]["count"]
    assert all(" What is " in row["prompt"] and row["query"].lower() in row["prompt"] for row in refer_rows)
    # The written prediction PNGs, scored in --predictions mode, give the same numbers.
    again = CliRunner().invoke(app, ["evaluate", "--shards", str(demo_shards), "--split", "reasonseg:val",
                                     "--split", "refcoco:val", "--predictions", str(out / "predictions"),
                                     "--out", str(tmp_path / "again"), "--no-progress"])
    assert again.exit_code == 0, again.output
    rescored = json.loads((tmp_path / "again" / "metrics.json").read_text())
    for split in ("reasonseg:val", "refcoco:val"):
        for name in ("count", "intersection", "union", "giou", "ciou"):
            assert rescored[split][name] == metrics[split][name]


def refer_targets(shards, split):
    index = json.loads((shards / "index.json").read_text())
    for entry in index["splits"][split]["shards"]:
        with open(shards / entry["path"], "rb") as handle:
            for key, members in iter_samples(handle):
                for target in json.loads(members["json"])["targets"]:
                    yield key, target


def assert_auditable(rows, model_dir):
    """Each row's prompt, tokenised again, has [SEG]/[KEY] exactly at the recorded positions."""
    from keyseg.training.export import load_for_evaluation
    from keyseg.model.tokens import ReferenceTokenizer

    model, tokenizer, _ = load_for_evaluation(model_dir)
    tokens = ReferenceTokenizer(tokenizer)
    for row in rows:
        ids = tokens.encode_with_image(row["prompt"])
        assert [i for i, token in enumerate(ids) if token == model.config.seg_token_id] == row["seg_positions"]
        assert [i for i, token in enumerate(ids) if token == model.config.key_token_id] == row["key_positions"]
        assert len(row["seg_positions"]) == len(row["key_positions"]) == 1
        assert row["state_offset"] == (model.config.clip_image_size // model.config.vision["patch_size"]) ** 2 - 2


def test_release_protocol_asks_the_first_sentence_of_each_ref_bare(demo_shards, tiny_model, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--shards", str(demo_shards), "--split", "refcoco:val",
                                      "--model", str(tiny_model), "--out", str(out), "--no-progress",
                                      "--refer-protocol", "release"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]
    targets = list(refer_targets(demo_shards, "refcoco:val"))
    assert len(rows) == len(targets) and all(row["sentence"] == 0 for row in rows)
    for row in rows:
        assert f"USER: <im_start><image><im_end>\n{row['query'].strip().lower()} ASSISTANT: [SEG]. [KEY].</s>" in row["prompt"]
    bad = CliRunner().invoke(app, ["evaluate", "--shards", str(demo_shards), "--split", "refcoco:val",
                                   "--model", str(tiny_model), "--out", str(tmp_path / "bad"), "--no-progress",
                                   "--refer-protocol", "nope"])
    assert bad.exit_code == 2 and "--refer-protocol" in bad.output


@pytest.mark.slow
def test_two_processes_give_the_same_numbers_as_one(demo_shards, tiny_model, tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    # One thread per process in both runs (torchrun's default for its workers): CPU kernels
    # may sum in another order with another thread count, which can flip a pixel that sits
    # on the threshold. What is tested is that splitting the samples changes nothing.
    env["OMP_NUM_THREADS"] = "1"
    results = {}
    for gpus in (0, 2):
        out = tmp_path / f"eval{gpus}"
        command = [sys.executable, "-m", "cli", "evaluate", "--shards", str(demo_shards), "--split", "refcoco:train",
                   "--model", str(tiny_model), "--out", str(out), "--no-progress", "--gpus", str(gpus)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        results[gpus] = json.loads((out / "metrics.json").read_text())["refcoco:train"]
    for name in ("count", "intersection", "union", "giou", "ciou"):
        assert results[0][name] == results[2][name]


def test_precision_and_device_options(demo_shards, tiny_model, tmp_path):
    args = ["evaluate", "--shards", str(demo_shards), "--split", "reasonseg:val", "--model", str(tiny_model),
            "--no-progress"]
    bf16 = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bf16"), "--device", "cpu", "--dtype", "bf16"])
    assert bf16.exit_code == 0, bf16.output
    config = json.loads((tmp_path / "bf16" / "evaluate_config.json").read_text())
    assert (config["device"], config["dtype"]) == ("cpu", "bf16")
    for option, value, message in (("--dtype", "fp64", "--dtype must be"), ("--load-in", "4bit", "needs a CUDA")):
        bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), "--device", "cpu", option, value])
        assert bad.exit_code == 2 and message in bad.output, bad.output


def test_generate_mode_and_predict_command(demo_shards, tiny_model, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--shards", str(demo_shards), "--split", "reasonseg:val",
                                      "--model", str(tiny_model), "--out", str(out), "--no-progress", "--generate"])
    assert result.exit_code == 0, result.output
    index = json.loads((demo_shards / "index.json").read_text())
    # ReasonSeg: one query per image, every sample scored
    assert json.loads((out / "metrics.json").read_text())["reasonseg:val"]["count"] == \
        index["splits"]["reasonseg:val"]["samples"]

    data = demo_shards.parent / "data"
    image = sorted((data / "reason_seg/ReasonSeg/val").glob("*.jpg"))[0]
    predicted = CliRunner().invoke(app, ["predict", "--model", str(tiny_model), "--image", str(image),
                                         "--query", "the large blue diamond", "--out", str(tmp_path / "p")])
    assert predicted.exit_code == 0, predicted.output
    (record,) = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    mask = cv2.imread(record["mask"], cv2.IMREAD_GRAYSCALE)
    assert mask.shape == cv2.imread(str(image)).shape[:2]
    assert cv2.imread(record["overlay"]) is not None and "answer:" in predicted.output
