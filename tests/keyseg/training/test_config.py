"""Dotted overrides: YAML scalars coerced to the field's type, for optim.* and model.* alike."""

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
