"""The real DeepSpeed engine on CPU, in subprocesses (each run owns its process group)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from cli import app

TINY = ["optim.steps_per_epoch=4", "optim.epochs=2", "optim.micro_batch=2", "optim.warmup_steps=2",
        "data.workers=1", "checkpoint_every=2", "optim.lr_scales={sam.mask_decoder: 0.5}"]


def train(shards, out, *extra, gpus=0):
    command = [sys.executable, "-m", "cli", "train", "--config", "tiny", "--shards", str(shards), "--out", str(out),
               "--no-progress", *(["--gpus", str(gpus)] if gpus else []), *TINY, *extra]
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def losses(out):
    return {line["step"]: line["loss"] for line in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "step" in line and "loss" in line}


@pytest.fixture(scope="module")
def full_run(demo_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "full"
    train(demo_shards, out)
    return out


@pytest.mark.slow
def test_tiny_run_writes_everything_with_finite_losses(full_run):
    out = full_run
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000008"
    assert (out / "checkpoints" / "best" / "train_state.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("train_config.json", "deepspeed_config.json", "model_config.json", "data_provenance.json"):
        assert (out / name).is_file(), name
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    exported = json.loads((out / "export" / "export_info.json").read_text())
    assert exported["tag"] == "best" and (out / "export" / "model.safetensors").is_file()
    curve = losses(out)
    assert sorted(curve) == list(range(1, 9))
    assert all(torch.isfinite(torch.tensor(value)) for value in curve.values())
    # optim.lr_scales reached the real engine: the mask decoder's group runs at half the rate,
    # and the logged "lr" is the base group's
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step4 = [record for record in records if record.get("step") == 4 and "group_lrs" in record][0]
    group_lrs = step4["group_lrs"]
    assert group_lrs[1] > 0 and group_lrs[1] == pytest.approx(0.5 * group_lrs[0])
    assert step4["lr"] == group_lrs[0]
    # each group's curve is named after it (keyseg.training.engine.parameter_groups)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train/lr", "train/lr/base", "train/lr/sam.mask_decoder"} <= set(events.Tags()["scalars"])
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 8 and len(summary["val"]) == 2
    # only the newest `keep_checkpoints` step folders stay
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_00000006", "step_00000008"]


@pytest.mark.slow
def test_resume_reproduces_the_next_losses(demo_shards, full_run, tmp_path):
    out = tmp_path / "resumed"
    train(demo_shards, out, "--max-steps", "3")
    assert losses(out).keys() == {1, 2, 3}
    resumed = train(demo_shards, out, "--resume", "auto", "--max-steps", "6")
    assert "resumed from" in resumed.stderr
    reference, curve = losses(full_run), losses(out)
    for step in (1, 2, 3, 4, 5, 6):
        assert curve[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-5), (step, curve, reference)


@pytest.mark.slow
def test_export_then_reload_gives_identical_predictions(demo_shards, full_run, tmp_path):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from keyseg.data.loader import make_eval_pipeline, make_loader
    from keyseg.data.samples import SampleConfig
    from keyseg.model.pretrained import load_pretrained
    from keyseg.training.batches import model_inputs
    from keyseg.training.export import build_for_checkpoint

    exported = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(full_run), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "config.json", "train_config.json", "data_provenance.json", "export_info.json"):
        assert (exported / name).is_file(), name
    assert json.loads((exported / "export_info.json").read_text())["step"] == 8

    reloaded, tokenizer = load_pretrained(exported)
    direct, _ = build_for_checkpoint(full_run)
    direct.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(full_run / "checkpoints"), tag="step_00000008"))
    direct.eval()
    config = reloaded.config
    shards = sorted(str(p) for p in (demo_shards / "reasonseg" / "val").glob("*.tar"))
    pipeline = make_eval_pipeline(shards, SampleConfig(sam_size=config.sam_image_size, clip_size=config.clip_image_size,
                                                       mode="eval"), batch_size=2)
    batch = next(iter(make_loader(pipeline)))
    with torch.no_grad():
        a = reloaded(**model_inputs(batch, tokenizer, reloaded.config, 96, "cpu", torch.float32), inference=True)["pred_masks"]
        b = direct(**model_inputs(batch, tokenizer, reloaded.config, 96, "cpu", torch.float32), inference=True)["pred_masks"]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.slow
def test_two_processes_zero2_take_equal_steps_over_uneven_shards(demo_shards, tmp_path):
    index = json.loads((demo_shards / "index.json").read_text())
    assert len(index["splits"]["refcoco:train"]["shards"]) % 2 == 1 or \
        len(index["splits"]["reasonseg:train"]["shards"]) % 2 == 1  # uneven over 2 ranks
    out = tmp_path / "ddp"
    done = train(demo_shards, out, "--max-steps", "3", "zero_stage=2", gpus=2)
    assert "terminate called" not in done.stderr  # every rank tore its process group down
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["steps"] == ranks[1]["steps"] == 3
    assert ranks[0]["micro_batches"] == ranks[1]["micro_batches"]


def test_dry_run_of_the_published_recipe_needs_no_weights():
    result = CliRunner().invoke(app, ["train", "--config", "keyseg-7b", "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "sam.mask_decoder" in result.output and "WarmupDecayLR" in result.output
    assert '"stage": 2' in result.output


def test_unknown_override_lists_the_valid_keys(tmp_path):
    result = CliRunner().invoke(app, ["train", "--config", "tiny", "--dry-run", "optim.learning_rate=1"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "unknown config key 'optim.learning_rate'" in result.output
    assert "optim.lr" in result.output
