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


# ----------------------------------------------------------------------------- lisa-7b and data mixtures

LISA_TRAINABLE = 288_259_556
"""What dvlab-research/LISA train_ds.py trains from a LLaVA-v1 folder at vocabulary 32004
(LLaVA's 32003 tokens + [SEG]): embed_tokens + lm_head (2 x 32004 x 4096), SAM's mask
decoder, text_hidden_fcs and LoRA r 8 on the LM's q/v; its name search for LoRA targets
meets nothing else (SAM is `visual_model`, excluded). Counted on the meta device with
LISA's own model classes and train_ds.py:158-228 (docs/presets.md)."""


def test_lisa_count_is_the_sum_of_what_lisa_trains():
    assert 2 * 32004 * 4096 + 4_058_340 + (4096 * 4096 + 4096 + 4096 * 256 + 256) \
        + 32 * 2 * 8 * (4096 + 4096) == LISA_TRAINABLE
    assert RELEASE_TRAINABLE - LISA_TRAINABLE == 2 * 4096 + 2 * 8 * (256 + 256)  # [KEY]'s rows + fusion adapters


def test_lisa_preset_has_train_ds_defaults():
    config = load_train_config("lisa-7b")
    flat = _flatten(config.to_dict())
    # dvlab-research/LISA train_ds.py:39-98, 268-304
    for key, value in {"model.fusion": "none", "model.ce_weight": 1.0, "model.dice_weight": 0.5,
                       "model.bce_weight": 2.0, "model.key_weight": 0.0, "model.lora_r": 8, "model.lora_alpha": 16,
                       "model.lora_dropout": 0.05, "model.lora_targets": ["q_proj", "v_proj"],
                       "model.lora_fusion": False, "model.train_fusion": False,
                       "model.train_embedding_table_proj": False, "model.train_mask_decoder": True,
                       "model.train_text_hidden_fcs": True, "model.train_lm_head": True,
                       "model.train_embed_tokens": True, "model.gradient_checkpointing": True, "optim.lr": 3e-4,
                       "optim.betas": [0.9, 0.95], "optim.weight_decay": 0.0, "optim.epochs": 10,
                       "optim.steps_per_epoch": 500, "optim.micro_batch": 2, "optim.grad_accum": 10,
                       "optim.warmup_steps": 100, "optim.grad_clip": 1.0, "data.explanatory": 0.1,
                       "data.max_length": 512, "data.num_queries": 3, "data.val": "reasonseg:val",
                       "data.val_batch_size": 1, "data.workers": 4, "zero_stage": 2, "precision": "bf16",
                       "patience": 0}.items():
        assert flat[key] == value, key
    mixture = config.data.mixture
    assert {kind: part["rate"] for kind, part in mixture.items()} == {"sem_seg": 9, "refer_seg": 3, "vqa": 3,
                                                                       "reason_seg": 1}
    assert [item["split"] for item in mixture["sem_seg"]["datasets"]] == [
        "ade20k:train", "cocostuff:train", "pascal_part:train", "paco_lvis:train", "mapillary:train"]
    assert [item["split"] for item in mixture["refer_seg"]["datasets"]] == [
        "refclef:train", "refcoco:train", "refcoco+:train", "refcocog:train"]
    # the loader's flat list: a dataset's weight is its kind's rate shared uniformly within the kind
    weights = {item["split"]: item["weight"] for item in config.data.train}
    assert weights["ade20k:train"] == 9 / 5 and weights["refcoco:train"] == 3 / 4
    assert weights["llava_instruct_150k:train"] == 3 and weights["reasonseg:train"] == 1
    assert "## `lisa-7b`" in (Path(__file__).parents[3] / "docs" / "presets.md").read_text()


def test_a_mixture_kind_can_be_left_out_by_rate():
    config = load_train_config("lisa-7b", ["data.mixture.sem_seg.rate=0", "data.mixture.vqa.rate=0"])
    assert [item["split"] for item in config.data.train] == [
        "refclef:train", "refcoco:train", "refcoco+:train", "refcocog:train", "reasonseg:train"]
    assert sum(item["weight"] for item in config.data.train) == 4.0


def test_a_plain_train_list_still_works_and_shows_as_a_mixture_by_kind():
    from keyseg.training.config import mixture_rows

    config = load_train_config("keyseg-7b-release")
    assert config.data.mixture == {}
    rows = mixture_rows(config.data)
    assert [(row.kind, row.rate, row.split) for row in rows] == [
        ("refer_seg", 9.0, "refcoco:train"), ("refer_seg", 9.0, "refcoco+:train"), ("refer_seg", 9.0, "refcocog:train"),
        ("reason_seg", 3.0, "reasonseg:train")]
    assert [row.share for row in rows] == [0.25, 0.25, 0.25, 0.25]
    # a train list given in place of the preset's mixture, once the mixture is cleared
    swapped = load_train_config("lisa-7b", ["data.mixture={}", "data.train=[{split: 'reasonseg:train'}]"])
    assert swapped.data.train == [{"split": "reasonseg:train"}]


@pytest.mark.parametrize("override, message", [
    ("data.train=[{split: 'reasonseg:train'}]", "data.train and data.mixture are both set"),
    ("data.mixture.detection={rate: 1, datasets: [{split: 'coco:train'}]}", "data.mixture"),
    ("data.mixture.vqa.rate=-1", "data.mixture"),
    ("data.mixture.vqa.datasets=[]", "data.mixture"),
    ("data.mixture.vqa.datasets=[{split: llava}]", "data.mixture"),
    ("data.mixture.reason_seg.weight=2", "data.mixture"),
])
def test_a_mixture_no_run_can_use_is_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config("lisa-7b", [override])


def test_a_mixture_with_every_rate_zero_is_refused():
    zeros = [f"data.mixture.{kind}.rate=0" for kind in ("sem_seg", "refer_seg", "vqa", "reason_seg")]
    with pytest.raises(ConfigError, match="data.mixture"):
        load_train_config("lisa-7b", zeros)


def test_dry_run_of_lisa_7b_prints_the_reference_count_and_the_mixture():
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["train", "--config", "lisa-7b", "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"trainable parameters: {LISA_TRAINABLE:,} (vocabulary 32,004)" in result.output
    table = result.output[result.output.index("training mixture"):]
    lines = {line.split("│")[1].strip() or line.split("│")[4].strip(): [cell.strip() for cell in line.split("│")[1:-1]]
             for line in table.splitlines() if line.count("│") == 7}
    assert lines["sem_seg"] == ["sem_seg", "9", "56.25%", "ade20k:train", "1", "11.25%"]
    assert lines["refer_seg"] == ["refer_seg", "3", "18.75%", "refclef:train", "1", "4.69%"]
    assert lines["mapillary:train"][3:] == ["mapillary:train", "1", "11.25%"]
    assert lines["vqa"] == ["vqa", "3", "18.75%", "llava_instruct_150k:train", "1", "18.75%"]
    assert lines["reason_seg"] == ["reason_seg", "1", "6.25%", "reasonseg:train", "1", "6.25%"]


def test_a_run_whose_mixture_has_no_shards_stops_before_training(tmp_path):
    import json

    from typer.testing import CliRunner

    from cli import app

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "index.json").write_text(json.dumps({"splits": {
        name: {"shards": []} for name in ("reasonseg:train", "reasonseg:val", "refcoco:train", "refcoco+:train",
                                          "refcocog:train")}}))
    result = CliRunner().invoke(app, ["train", "--config", "lisa-7b", "--shards", str(shards), "--out",
                                      str(tmp_path / "out")], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "sem_seg: ade20k:train, cocostuff:train, pascal_part:train, paco_lvis:train, mapillary:train" in output
    assert "refer_seg: refclef:train" in output and "vqa: llava_instruct_150k:train" in output
    assert "data.mixture.<kind>.rate=0" in output and "Traceback" not in output
    assert not (tmp_path / "out").exists()
