"""`keyseg predict`: outputs stay inside --out under distinct names, bad batch lines are
reported one by one while the good ones finish, data text with markup prints as itself."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from keyseg.masks.overlay import ANSWER_BANNER_HEIGHT, OVERLAY_HEIGHT
from tiny_export import write_tiny_export


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from keyseg.data.conversation import template_texts

    texts = [*template_texts(), "the red square"]
    return write_tiny_export(tmp_path_factory.mktemp("model") / "export", texts, [])


def image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def predict(*args):
    return CliRunner().invoke(app, ["predict", *map(str, args), "--no-generate"], env={"COLUMNS": "400"})


def test_markup_in_a_query_and_a_path_prints_as_itself(tiny_model, tmp_path):
    picture = image(tmp_path / "photo [" / "] 1.jpg")  # the path reads "photo [/] 1.jpg"
    out = tmp_path / "out [" / "] here"
    query = "the [/] red square [blink]"
    result = predict("--model", tiny_model, "--image", picture, "--query", query, "--out", out)
    assert result.exit_code == 0, result.output
    assert query in result.output and "out [/] here" in result.output
    (record,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert record["query"] == query and record["id"] == "__1"
    assert cv2.imread(record["mask"], cv2.IMREAD_GRAYSCALE).shape == (48, 64)


def test_batch_ids_stay_inside_out_and_bad_lines_do_not_stop_the_good_ones(tiny_model, tmp_path):
    first, second, other = image(tmp_path / "a" / "img.jpg"), image(tmp_path / "b" / "img.jpg", 1), \
        image(tmp_path / "c" / "other.jpg", 2)
    out = tmp_path / "x" / "y" / "out"
    lines = [
        {"image": str(first), "query": "the red square"},
        {"image": str(second), "query": "the red square"},  # same stem: a distinct name
        {"image": str(other), "query": "the red square", "id": "../../escaped"},
        {"image": str(other), "query": "the red square", "id": "mine"},
        {"image": str(other), "query": "the red square", "id": "mine"},  # repeated id
        "not json",
        {"image": str(tmp_path / "missing.jpg"), "query": "the red square"},
        {"image": str(other), "query": 5},
    ]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    result = predict("--model", tiny_model, "--queries", batch, "--out", out)
    assert result.exit_code == 1, result.output
    assert not list((tmp_path / "x").glob("escaped*")) and not list(tmp_path.glob("escaped*"))
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert [line.split(f"{batch}:", 1)[1].split(":", 1)[0] for line in errors] == ["3", "5", "6", "7", "8"], errors
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    # One row per input line, in order, with its status; the reason for each bad one.
    assert [(row["line"], row["status"]) for row in rows] == [
        (1, "ok"), (2, "ok"), (3, "error"), (4, "ok"), (5, "error"), (6, "error"), (7, "error"), (8, "error")]
    assert "plain file name" in rows[2]["error"] and "earlier line" in rows[4]["error"]
    assert "cannot read the image" in rows[6]["error"] and rows[6]["image"] == str(tmp_path / "missing.jpg")
    records = [row for row in rows if row["status"] == "ok"]
    assert [record["id"] for record in records] == ["img", "img-2", "mine"]
    assert [record["image"] for record in records] == [str(first), str(second), str(other)]
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [f"{name}_{kind}.png" for name in ("img", "img-2", "mine") for kind in ("mask", "overlay")]
        + ["predictions.jsonl"])


def test_usage_errors_exit_2(tiny_model, tmp_path):
    neither = predict("--model", tiny_model, "--out", tmp_path / "out")
    assert neither.exit_code == 2 and "--image and --query" in neither.output
    picture = image(tmp_path / "p.jpg")
    for option, value, message in (("--device", "tpu", "--device must be"), ("--dtype", "fp8", "--dtype must be"),
                                   ("--load-in", "2bit", "--load-in must be")):
        bad = predict("--model", tiny_model, "--image", picture, "--query", "x", "--out", tmp_path / "o", option, value)
        assert bad.exit_code == 2 and message in bad.output, bad.output
    quantized = predict("--model", tiny_model, "--image", picture, "--query", "x", "--out", tmp_path / "o",
                        "--device", "cpu", "--load-in", "8bit")
    assert quantized.exit_code == 2 and "needs a CUDA device" in quantized.output


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_every_precision_runs_on_the_cpu_and_the_answer_reads_cleanly(tiny_model, tmp_path, dtype):
    picture = image(tmp_path / "p.jpg")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "--model", str(tiny_model), "--image", str(picture), "--query",
                                      "the red square", "--out", str(out), "--device", "cpu", "--dtype", dtype])
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    answer = record["answer"]
    assert answer == answer.strip() and "  " not in answer and answer[:1] == answer[:1].upper()
    assert not any(f" {mark}" in answer for mark in ",.!?;:")
    overlay = cv2.imread(record["overlay"])
    assert overlay.shape[0] == ANSWER_BANNER_HEIGHT + OVERLAY_HEIGHT


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("load_in", ["full", "8bit", "4bit"])
def test_cuda_paths(tiny_model, tmp_path, load_in):
    if load_in != "full":
        pytest.importorskip("bitsandbytes")
    picture = image(tmp_path / "p.jpg")
    result = CliRunner().invoke(app, ["predict", "--model", str(tiny_model), "--image", str(picture), "--query",
                                      "the red square", "--out", str(tmp_path / "out"), "--device", "cuda",
                                      "--dtype", "fp16", "--load-in", load_in])
    assert result.exit_code == 0, result.output
