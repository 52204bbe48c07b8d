"""Dotted overrides (YAML scalars coerced to the field's type), validation, and the 7B presets."""

from pathlib import Path

import pytest

from keyseg.training.config import ConfigError, load_train_config


def test_exponent_without_a_dot_is_a_float_in_optim_and_model_fields():
    # YAML 1.1 reads "1e-4" as a string; a string loss weight would only fail mid-training.
    config = load_train_config("demo", ["optim.lr=2e-3", "model.ce_weight=1e-4"])
    assert config.optim.lr == 2e-3 and config.model["ce_weight"] == 1e-4
    assert isinstance(config.model["ce_weight"], float)


def test_a_non_number_for_a_number_field_is_refused_before_training():
    with pytest.raises(ConfigError, match="model.dice_weight"):
        load_train_config("tiny", ["model.dice_weight=lots"])


@pytest.mark.parametrize("override, key", [
    ("optim.micro_batch=-3", "optim.micro_batch"), ("optim.grad_accum=0", "optim.grad_accum"),
    ("optim.lr=-1e-3", "optim.lr"), ("optim.betas=[0.9]", "optim.betas"), ("data.explanatory=1.5", "data.explanatory"),
    ("zero_stage=4", "zero_stage"), ("data.train=[]", "data.train"), ("data.workers=-1", "data.workers"),
    ("optim.lr=.nan", "optim.lr"), ("data.train=[{split: refcoco}]", "data.train"),
])
def test_values_no_run_can_use_are_refused_even_in_a_dry_run(override, key):
    from typer.testing import CliRunner

    from cli import app

    with pytest.raises(ConfigError, match=key):
        load_train_config("tiny", [override])
    result = CliRunner().invoke(app, ["train", "--config", "tiny", "--dry-run", override])
    assert result.exit_code == 2 and key in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("text, reason", [
    ("optim:\n  lr: [1, 2\n", "not valid YAML"), ("- a\n- b\n", "a config is a mapping"),
    ("optim: {lr: 1e-3}\n\tbad: tab\n", "not valid YAML"),
])
def test_a_broken_config_file_is_named_with_the_reason(tmp_path, text, reason):
    from typer.testing import CliRunner

    from cli import app

    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=reason):
        load_train_config(str(path))
    result = CliRunner().invoke(app, ["train", "--config", str(path), "--dry-run"])
    assert result.exit_code == 2 and str(path) in result.output.replace("\n", "") and reason in result.output
    assert len(result.output.strip().splitlines()) <= 2  # one line (a long path may wrap once)


def test_a_broken_override_is_named():
    with pytest.raises(ConfigError, match="override 'optim.lr=\\[1'"):
        load_train_config("tiny", ["optim.lr=[1"])


# ----------------------------------------------------------------------------- 7B presets

RELEASE_TRAINABLE = 288_275_940
"""What ha-erim/KeySeg finetune.py trains at vocabulary 32005: embed_tokens + lm_head
(2 x 32005 x 4096), SAM's mask decoder (4,058,340), text_hidden_fcs (17,830,144), LoRA r 8 on
the LM's q/v (4,194,304) and on the fusion's self-attention q/v (8,192)."""


def test_release_count_is_the_sum_of_what_the_release_trains():
    assert 2 * 32005 * 4096 + 4_058_340 + (4096 * 4096 + 4096 + 4096 * 256 + 256) \
        + 32 * 2 * 8 * (4096 + 4096) + 2 * 8 * (256 + 256) == RELEASE_TRAINABLE


@pytest.mark.parametrize("preset, trainable", [("keyseg-7b-release", RELEASE_TRAINABLE), ("keyseg-7b", 290_106_852)])
def test_dry_run_of_the_7b_presets_prints_the_trainable_count(preset, trainable):
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["train", "--config", preset, "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"trainable parameters: {trainable:,} (vocabulary 32,005)" in result.output
    fusion_lora = [line for line in result.output.splitlines() if "keyword_fusion (LoRA)" in line]
    assert bool(fusion_lora) == (preset == "keyseg-7b-release")
    if fusion_lora:
        assert "8,192" in fusion_lora[0]


def _flatten(document: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_the_presets_differ_exactly_where_docs_presets_md_says():
    release = _flatten(load_train_config("keyseg-7b-release").to_dict())
    paper = _flatten(load_train_config("keyseg-7b").to_dict())
    differing = {key for key in release.keys() | paper.keys() if release.get(key) != paper.get(key)}
    # init.sam is a local path the user gives (null in both files); the release needs it
    assert differing == {"model.lora_fusion", "model.train_fusion", "model.train_embedding_table_proj",
                         "init.fresh"}
    differing.add("init.sam")
    assert release["init.fresh"] == ["text_hidden_fcs"] and release["model.lora_fusion"] is True
    # the release's defaults (ha-erim/KeySeg finetune.py:87-142, 156)
    for key, value in {"model.ce_weight": 1e-4, "model.dice_weight": 0.5, "model.bce_weight": 2.0,
                       "model.key_weight": 1.0, "model.gradient_checkpointing": True, "optim.lr": 3e-4,
                       "optim.betas": [0.9, 0.95], "optim.epochs": 20, "optim.steps_per_epoch": 200,
                       "optim.micro_batch": 2, "optim.grad_accum": 10, "optim.warmup_steps": 100,
                       "data.explanatory": 1.0, "data.max_length": 512, "data.num_queries": 3,
                       "model.new_module_init": "normal", "precision": "bf16"}.items():
        assert release[key] == value, key
    weights = {item["split"]: item["weight"] for item in release["data.train"]}
    assert weights == {"refcoco:train": 3.0, "refcoco+:train": 3.0, "refcocog:train": 3.0, "reasonseg:train": 3.0}
    documented = (Path(__file__).parents[3] / "docs" / "presets.md").read_text()
    for key in differing:
        assert f"`{key}`" in documented, key


def test_init_fresh_names_known_modules():
    with pytest.raises(ConfigError, match="init.fresh"):
        load_train_config("keyseg-7b-release", ["init.fresh=[text_fcs]"])
    assert load_train_config("keyseg-7b", ["init.fresh=[text_hidden_fcs, keyword_fusion]"]).init.fresh == [
        "text_hidden_fcs", "keyword_fusion"]
