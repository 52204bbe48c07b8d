"""Parameter groups by learning-rate scale, and the DeepSpeed config built from them."""

import pytest
from torch import nn

from keyseg.training.config import load_train_config
from keyseg.training.engine import deepspeed_config, parameter_groups


def toy_model() -> nn.Module:
    model = nn.Module()
    model.sam = nn.Module()
    model.sam.mask_decoder = nn.Linear(2, 2)
    model.sam.mask_decoder_extra = nn.Linear(2, 2)  # shares a name prefix, not a module prefix
    model.llm = nn.Linear(2, 2)
    model.frozen = nn.Linear(2, 2)
    model.frozen.requires_grad_(False)
    return model


def names(model, group):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return sorted(by_id[id(p)] for p in group["params"])


def test_longest_prefix_wins_and_frozen_parameters_are_left_out():
    model = toy_model()
    groups = parameter_groups(model.named_parameters(), {"sam": 0.5, "sam.mask_decoder": 0.1})
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1, 0.5]  # the base group first
    assert [g["name"] for g in groups] == ["base", "sam.mask_decoder", "sam"]
    assert names(model, groups[1]) == ["sam.mask_decoder.bias", "sam.mask_decoder.weight"]
    assert names(model, groups[2]) == ["sam.mask_decoder_extra.bias", "sam.mask_decoder_extra.weight"]
    assert names(model, groups[0]) == ["llm.bias", "llm.weight"]


def test_groups_are_named_after_their_prefixes():
    groups = parameter_groups(toy_model().named_parameters(),
                              {"sam.mask_decoder": 0.1, "sam.mask_decoder_extra": 0.1, "llm": 1.0})
    assert [g["name"] for g in groups] == ["base", "sam.mask_decoder+sam.mask_decoder_extra"]
    assert [g["name"] for g in parameter_groups(toy_model().named_parameters(), {})] == ["base"]


def test_a_prefix_matching_no_trainable_parameter_is_an_error():
    with pytest.raises(ValueError, match="frozen"):
        parameter_groups(toy_model().named_parameters(), {"frozen": 0.1})
    with pytest.raises(ValueError, match="sam.mask_dec"):
        parameter_groups(toy_model().named_parameters(), {"sam.mask_dec": 0.1})


def test_each_group_warms_up_to_its_own_peak():
    config = load_train_config("tiny", ["optim.lr=1e-3", "optim.lr_scales={sam.mask_decoder: 0.1}"])
    groups = parameter_groups(toy_model().named_parameters(), config.optim.lr_scales)
    ds = deepspeed_config(config, on_cpu=True, groups=groups)
    assert ds["scheduler"]["params"]["warmup_max_lr"] == pytest.approx([1e-3, 1e-4])
    assert deepspeed_config(config, on_cpu=True)["scheduler"]["params"]["warmup_max_lr"] == 1e-3
