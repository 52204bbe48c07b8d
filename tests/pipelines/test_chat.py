"""`keyseg chat` driven as a script would drive it: queries piped into standard input."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tiny_export import write_tiny_export

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from keyseg.data.conversation import template_texts

    return write_tiny_export(tmp_path_factory.mktemp("model") / "export", [*template_texts(), "the red square"], [])


def image(path, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def chat(model, out, lines, *options):
    return subprocess.run([sys.executable, "-m", "cli", "chat", "--model", str(model), "--out", str(out),
                           "--device", "cpu", *options], input="".join(f"{line}\n" for line in lines),
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_piped_chat_answers_every_query_and_goes_on_after_a_bad_image(tiny_model, tmp_path):
    first, second = image(tmp_path / "first.jpg"), image(tmp_path / "second [x].jpg", 1)
    out = tmp_path / "chat"
    done = chat(tiny_model, out, ["/help", "the red square", str(first), "", "/image " + str(tmp_path / "nope.jpg"),
                                  "what is [KEY] [/] here?", f"/image {second}", "the red square", "/quit",
                                  "never read"])
    assert done.returncode == 1, done.stderr  # one turn failed: the missing image
    assert done.stdout.count("answer:") == 3 and done.stdout.count("keyword:") == 3
    assert "nope.jpg: cannot read the image" in done.stderr and "1 turn(s) failed" in done.stderr
    turns = [json.loads(line) for line in (out / "chat_history.jsonl").read_text().splitlines()]
    assert [turn["turn"] for turn in turns] == [1, 2, 3]
    assert [turn["image"] for turn in turns] == [str(first), str(first), str(second)]  # the last image is kept
    assert turns[1]["query"] == "what is [KEY] [/] here?"
    for turn in turns:
        assert cv2.imread(turn["mask"], cv2.IMREAD_GRAYSCALE).shape == (48, 64)
        assert cv2.imread(turn["overlay"]).shape[0] > 48
        assert turn["answer"] == turn["answer"].strip() and not any(f" {mark}" in turn["answer"] for mark in ",.!?")
    assert json.loads((out / "chat_config.json").read_text())["device"] == "cpu"

    again = chat(tiny_model, out, ["the red square"], "--image", str(second), "--dtype", "bf16")
    assert again.returncode == 0, again.stderr
    turns = [json.loads(line) for line in (out / "chat_history.jsonl").read_text().splitlines()]
    assert [turn["turn"] for turn in turns] == [1, 2, 3, 4]  # a later chat numbers on


def test_an_unreadable_first_image_is_a_usage_error(tiny_model, tmp_path):
    done = chat(tiny_model, tmp_path / "chat", [], "--image", str(tmp_path / "missing.jpg"))
    assert done.returncode == 2 and "cannot read the image" in done.stderr


def test_quantised_loading_without_cuda_is_a_usage_error_before_loading(tiny_model, tmp_path):
    done = chat(tiny_model, tmp_path / "chat", [], "--load-in", "8bit")
    assert done.returncode == 2 and "needs a CUDA device" in done.stderr
