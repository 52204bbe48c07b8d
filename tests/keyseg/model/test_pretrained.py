"""The exported model folder: written and read by keyseg.model.pretrained only."""

from __future__ import annotations

import json
import shutil
import os
import stat
import subprocess
import sys

import pytest
import torch
from tiny_keyseg import build_tiny_model, make_batch

from keyseg.errors import DataError
from keyseg.model import KeySegConfig, KeySegModel
from keyseg.model.pretrained import load_pretrained

TRAIN_CONFIG = {"data": {"train": [{"split": "refcoco:train", "weight": 6.0},
                                   {"split": "reasonseg:train", "weight": 2.0}], "val": "reasonseg:val"},
                "init": {"lisa": None}}
PROVENANCE = {"shards": "/data/shards/demo", "inputs": {"keywords": {"path": "keywords.json", "sha256": "ab" * 32}},
              "splits": {"refcoco:train": {"samples": 120, "shards": []},
                         "reasonseg:train": {"samples": 40, "shards": []},
                         "reasonseg:val": {"samples": 20, "shards": []}}}
METRICS = {"reasonseg:val": {"giou": 0.4567, "ciou": 0.5, "count": 20,
                             "leakage": {"trained_on_this_split": False, "trained_on": ["refcoco:train"]}}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, tokenizer = build_tiny_model(seed=3)
    model.eval()
    folder = model.save_pretrained(tmp_path_factory.mktemp("export") / "model", tokenizer=tokenizer,
                                   train_config=TRAIN_CONFIG, data_provenance=PROVENANCE, eval_metrics=METRICS)
    return model, tokenizer, folder


def predictions(model, tokenizer) -> dict:
    batch = make_batch(model, tokenizer, seed=5)
    batch.pop("masks"), batch.pop("labels"), batch.pop("keyword_ids")
    with torch.no_grad():
        return model(**batch, inference=True)


def test_save_then_load_gives_identical_predictions(saved):
    model, tokenizer, folder = saved
    reloaded, reloaded_tokenizer = load_pretrained(folder)
    assert not reloaded.training and reloaded.config == model.config
    assert reloaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    before, after = predictions(model, tokenizer), predictions(reloaded, reloaded_tokenizer)
    assert len(before["pred_masks"]) == len(after["pred_masks"]) == 2
    for a, b in zip(before["pred_masks"], after["pred_masks"]):
        assert torch.equal(a, b)
    assert torch.equal(before["seg_embeddings"], after["seg_embeddings"])
    state = KeySegModel.from_pretrained(folder).state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[name], tensor) for name, tensor in model.state_dict().items())


def test_config_json_says_keyseg_and_auto_config_reads_it(saved):
    model, _, folder = saved
    written = json.loads((folder / "config.json").read_text())
    assert written["model_type"] == "keyseg" and written["architectures"] == ["KeySegModel"]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "keyseg" and type(config).__name__ == "KeySegHFConfig"
    assert config.fusion == model.config.fusion and config.llm == model.config.llm
    assert config.seg_token_id == model.config.seg_token_id


def test_import_keyseg_alone_teaches_auto_config_without_loading_transformers(saved):
    """In a fresh interpreter: `import keyseg` does not import transformers, and AutoConfig
    imported afterwards reads the folder offline."""
    _, _, folder = saved
    script = ("import sys, keyseg\n"
              "assert 'transformers' not in sys.modules and 'torch' not in sys.modules\n"
              "from transformers import AutoConfig\n"
              f"config = AutoConfig.from_pretrained({str(folder)!r})\n"
              "print(type(config).__name__, config.fusion, config.sam_image_size)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["KeySegHFConfig", "keyseg", "128"]


def test_the_model_card_has_front_matter_training_splits_and_metrics(saved):
    _, _, folder = saved
    card = (folder / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert card.startswith("---\n")
    assert "library_name: keyseg" in front and '- "reasonseg"' in front and '- "refcoco"' in front
    assert "license" not in front and "base_model" not in front  # unknown: left out
    assert "| refcoco:train | 6.0 | 120 |" in body and "| reasonseg:train | 2.0 | 40 |" in body
    assert "KeySegModel.from_pretrained" in body and "keyseg predict --model" in body and "keyseg evaluate" in body
    assert "| reasonseg:val | 45.7 | 50.0 | 20 | no |" in body
    assert json.loads((folder / "eval_metrics.json").read_text()) == METRICS


def test_a_card_without_a_training_config_says_so_and_names_a_given_base_model(tmp_path):
    model, tokenizer = build_tiny_model()
    model.save_pretrained(tmp_path, tokenizer, base_model="xinlai/LISA-7B-v1")
    card = (tmp_path / "README.md").read_text()
    front = card.split("---\n")[1]
    assert 'base_model: "xinlai/LISA-7B-v1"' in front and "datasets" not in front
    assert "Unknown: the folder holds no training config." in card and "## Metrics" not in card


def test_files_are_world_readable_and_no_temporary_file_is_left(tmp_path):
    model, tokenizer = build_tiny_model()
    old = os.umask(0o022)
    try:
        model.save_pretrained(tmp_path / "model", tokenizer, train_config=TRAIN_CONFIG)
        model.save_pretrained(tmp_path / "model", tokenizer, train_config=TRAIN_CONFIG)  # over an old export
    finally:
        os.umask(old)
    files = [path for path in (tmp_path / "model").rglob("*") if path.is_file()]
    assert {"model.safetensors", "config.json", "README.md", "train_config.json", "tokenizer.json"} <= \
        {path.name for path in files}
    assert {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in files} == \
        {path.name: "0o644" for path in files}
    assert not [path for path in (tmp_path / "model").rglob(".*")]


def test_an_old_config_without_model_type_still_loads(saved, tmp_path):
    model, tokenizer, folder = saved
    old = shutil.copytree(folder, tmp_path / "old")
    (old / "config.json").write_text(json.dumps(model.config.to_dict()))  # as exported before
    reloaded, _ = load_pretrained(old)
    assert reloaded.config == model.config
    # and one saved again by transformers (extra keys of its own) too
    from transformers import AutoConfig

    AutoConfig.from_pretrained(folder).save_pretrained(tmp_path / "resaved")
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert KeySegConfig.from_dict(resaved) == model.config


def test_a_config_of_another_model_type_is_refused():
    with pytest.raises(ValueError, match="'llama' is not a KeySeg config"):
        KeySegConfig.from_dict({"model_type": "llama", "hidden_size": 8})


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_weights_that_do_not_match_the_config_are_refused(saved, tmp_path, change):
    from safetensors.torch import load_file, save_file

    _, _, folder = saved
    broken = shutil.copytree(folder, tmp_path / "broken")
    state = load_file(str(folder / "model.safetensors"))
    if change == "missing":
        del state["mm_projector.weight"]
    else:
        state["extra_head.weight"] = torch.zeros(2, 2)
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(DataError) as error:
        load_pretrained(broken)
    message = str(error.value)
    assert message.startswith(f"{broken}: model.safetensors does not match its config.json")
    assert ("1 missing weights (e.g. ['mm_projector.weight'])" if change == "missing"
            else "1 unexpected (e.g. ['extra_head.weight'])") in message


def test_a_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DataError, match="not an exported model folder"):
        load_pretrained(tmp_path)


def test_unmerged_lora_is_not_saved(tmp_path):
    from keyseg.model.params import apply_lora

    model, tokenizer = build_tiny_model(lora_r=2)
    model = apply_lora(model) or model
    with pytest.raises(ValueError, match="merge LoRA before saving"):
        model.save_pretrained(tmp_path / "model", tokenizer)
    assert not (tmp_path / "model").exists()


def test_the_card_follows_the_folder_and_a_new_save_drops_the_old_models_files(tmp_path):
    from keyseg.model.pretrained import write_model_card

    model, tokenizer = build_tiny_model()
    model.save_pretrained(tmp_path, tokenizer, train_config=TRAIN_CONFIG)
    assert "## Metrics" not in (tmp_path / "README.md").read_text()
    (tmp_path / "eval_metrics.json").write_text(json.dumps(METRICS))  # an evaluation's metrics.json
    write_model_card(tmp_path)
    assert "| reasonseg:val | 45.7 | 50.0 | 20 | no |" in (tmp_path / "README.md").read_text()
    model.save_pretrained(tmp_path, tokenizer)
    assert not (tmp_path / "eval_metrics.json").exists() and not (tmp_path / "train_config.json").exists()
    assert "## Metrics" not in (tmp_path / "README.md").read_text()
