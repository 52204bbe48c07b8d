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
