"""Checkpoint files are data: one that would run code when unpickled is refused by every
command that reads checkpoints (export, evaluate --model, predict --model, train --resume),
and a clean checkpoint still resumes exactly.

One real tiny DeepSpeed run (3 steps, ZeRO-2 on the CPU) is trained once; each hostile case
copies it and adds a `__reduce__` payload to one of its last checkpoint's `.pt` files.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app

MODEL_STATES = "mp_rank_00_model_states.pt"
OPTIM_STATES = "zero_pp_rank_0_mp_rank_00_optim_states.pt"
PREVIOUS, LAST = "step_00000002", "step_00000003"
# Tiny and short: 3 steps inside the first epoch (no validation), a checkpoint at each step
# (the last two kept), a warm-up so the learning rate changes at every step (it is 0 at step 1).
SETTINGS = ["optim.steps_per_epoch=4", "optim.micro_batch=2", "optim.warmup_steps=3", "data.workers=0",
            "checkpoint_every=1", "keep_checkpoints=2"]


def train(shards: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`keyseg train` in its own process (each run owns its process group)."""
    command = [sys.executable, "-m", "cli", "train", "--config", "tiny", "--shards", str(shards), "--out", str(out),
               "--no-progress", *SETTINGS, *extra]
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["COLUMNS"] = "400"  # one message, one line
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env,
                          cwd=Path(__file__).resolve().parents[3])


@pytest.fixture(scope="module")
def run_dir(demo_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoint_safety") / "run"
    done = train(demo_shards, out, "--max-steps", "3")
    assert done.returncode == 0, done.stderr[-4000:]
    return out


class RunsACommand:
    """Unpickling this calls os.system: what a hostile checkpoint hides."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class RunsPython:
    """Unpickling this calls builtins.exec (a module torch does not block by name)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


# (file, payload, the global the refusal must name)
HOSTILE = [(MODEL_STATES, RunsACommand, "posix.system"), (OPTIM_STATES, RunsPython, "builtins.exec")]


def hostile_copy(run_dir: Path, tmp_path: Path, file_name: str, payload) -> tuple[Path, Path, Path]:
    """(run copy, the poisoned file, the marker file its payload would create)."""
    run = tmp_path / "run"
    # The last checkpoint only: `latest` names it.
    shutil.copytree(run_dir, run, ignore=lambda folder, names: [n for n in names if n in (PREVIOUS, "export")])
    marker = tmp_path / "payload_ran"
    poisoned = run / "checkpoints" / LAST / file_name
    state = torch.load(poisoned, map_location="cpu", weights_only=False)  # our own clean file
    state["extra"] = payload(marker)
    torch.save(state, poisoned)
    return run, poisoned, marker


def assert_refused(exit_code: int, output: str, poisoned: Path, name: str, marker: Path) -> None:
    assert not marker.exists(), "the checkpoint's payload ran"
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert exit_code == 1, output[-3000:]
    assert len(errors) == 1, output[-3000:]
    assert str(poisoned) in errors[0] and name in errors[0], errors


@pytest.mark.slow
@pytest.mark.parametrize("file_name,payload,name", HOSTILE, ids=["model_states", "optim_states"])
@pytest.mark.parametrize("command", ["export", "evaluate", "predict"])
def test_a_checkpoint_that_runs_code_is_refused_when_read(run_dir, demo_shards, tmp_path, command, file_name,
                                                          payload, name):
    run, poisoned, marker = hostile_copy(run_dir, tmp_path, file_name, payload)
    image = next((demo_shards.parent / "data" / "reason_seg" / "ReasonSeg" / "val").glob("*.jpg"))
    args = {
        "export": ["export", "--checkpoint", str(run), "--out", str(tmp_path / "exported")],
        "evaluate": ["evaluate", "--shards", str(demo_shards), "--split", "reasonseg:val", "--model", str(run),
                     "--out", str(tmp_path / "eval"), "--no-progress"],
        "predict": ["predict", "--model", str(run), "--image", str(image), "--query", "the object",
                    "--out", str(tmp_path / "predicted")],
    }[command]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert_refused(result.exit_code, result.output, poisoned, name, marker)
    if command == "export":
        assert not (tmp_path / "exported" / "model.safetensors").exists()


@pytest.mark.slow
def test_train_resume_refuses_a_checkpoint_that_runs_code(run_dir, demo_shards, tmp_path):
    # The engine reads the model states file first; the optimizer states file goes through the
    # same loader (refused in the export/evaluate/predict cases above): one case is enough here.
    file_name, payload, name = HOSTILE[0]
    run, poisoned, marker = hostile_copy(run_dir, tmp_path, file_name, payload)
    done = train(demo_shards, run, "--resume", "auto", "--max-steps", "4")
    assert_refused(done.returncode, done.stderr, poisoned, name, marker)
    assert not (run / "checkpoints" / "step_00000004").exists()


def test_a_callers_weights_only_false_and_the_opposite_variable_do_not_bypass_it(tmp_path, monkeypatch):
    """DeepSpeed passes weights_only=False and a user may export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD:
    inside restricted_loading both lose; outside, the environment is as it was."""
    from keyseg.errors import DataError
    from keyseg.training.safe_load import restricted_loading

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    marker = tmp_path / "payload_ran"
    poisoned = tmp_path / "states.pt"
    torch.save({"weight": torch.zeros(2), "extra": RunsACommand(marker)}, poisoned)
    with pytest.raises(DataError) as refused, restricted_loading(tmp_path):
        torch.load(poisoned, weights_only=False)
    assert not marker.exists()
    assert str(refused.value).startswith(f"{poisoned}: ") and "posix.system" in str(refused.value)
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1" and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_a_pickle_torch_does_not_write_is_refused_and_named(tmp_path):
    """Protocol 4 (framed, STACK_GLOBAL) is not what torch.save writes: refused before any
    instruction runs, and the file is named."""
    from keyseg.errors import DataError
    from keyseg.training.safe_load import restricted_loading

    marker = tmp_path / "payload_ran"
    torch.save({"weight": torch.zeros(2)}, tmp_path / "clean.pt")
    torch.save({"weight": torch.zeros(2), "extra": RunsPython(marker)}, tmp_path / "states.pt", pickle_protocol=4)
    with restricted_loading(tmp_path):
        assert torch.load(tmp_path / "clean.pt", weights_only=False)["weight"].shape == (2,)
    with pytest.raises(DataError) as refused, restricted_loading(tmp_path):
        torch.load(tmp_path / "states.pt", weights_only=False)
    assert not marker.exists()
    assert str(refused.value).startswith(f"{tmp_path / 'states.pt'}: refusing to load it")


@pytest.mark.slow
def test_the_allow_list_is_what_deepspeed_writes(run_dir):
    """The real checkpoint needs exactly the listed DeepSpeed classes: nothing missing (it
    would not load) and each listed one is really a class DeepSpeed writes here."""
    from keyseg.training.safe_load import CHECKPOINT_GLOBALS

    needed = set()
    for path in (run_dir / "checkpoints" / LAST).glob("*.pt"):
        needed |= set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    # DynamicLossScaler is fp16's loss scaler, which DeepSpeed cannot run on a CPU.
    assert needed == set(CHECKPOINT_GLOBALS) - {"deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler"}


@pytest.fixture(scope="module")
def resumed_dir(run_dir, demo_shards, tmp_path_factory):
    """The run resumed from its step-2 checkpoint to take step 3 again."""
    resumed = tmp_path_factory.mktemp("checkpoint_safety_resumed") / "run"
    shutil.copytree(run_dir, resumed, ignore=lambda folder, names: [n for n in names if n in (LAST, "export")])
    (resumed / "checkpoints" / "latest").write_text(PREVIOUS)
    metrics = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    (resumed / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics
                                                   if m.get("step", 3) < 3 and "lr" in m))
    done = train(demo_shards, resumed, "--resume", "auto", "--max-steps", "3")
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"resumed from {resumed / 'checkpoints' / PREVIOUS}: step 2, epoch 0" in done.stderr
    return resumed


def learning_rates(run: Path) -> dict[int, float]:
    """{step: learning rate} from metrics.jsonl's step lines."""
    lines = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return {line["step"]: line["lr"] for line in lines if "step" in line and "lr" in line}


@pytest.mark.slow
def test_a_clean_resume_restores_step_optimizer_scheduler_and_rng(run_dir, resumed_dir):
    """Resumed through the restricted loader, step 3 gives the uninterrupted run's checkpoint."""
    from keyseg.training.checkpoints import load_zero_state_dict
    from keyseg.training.safe_load import restricted_loading

    reference_tag, resumed_tag = run_dir / "checkpoints" / LAST, resumed_dir / "checkpoints" / LAST
    assert json.loads((resumed_tag / "train_state.json").read_text()) == \
        json.loads((reference_tag / "train_state.json").read_text())
    # RNG: numpy's and Python's global generators are never seeded, so a new process starts
    # them anywhere: they match the uninterrupted run's only if step 2's states were restored.
    rng = [json.loads((tag / "rng_rank0.json").read_text()) for tag in (resumed_tag, reference_tag)]
    assert rng[0]["numpy"] == rng[1]["numpy"] and rng[0]["python"] == rng[1]["python"]
    # scheduler: step 3's learning rate (still warming up, so it differs from step 2's)
    lrs, reference_lrs = learning_rates(resumed_dir), learning_rates(run_dir)
    assert lrs == reference_lrs and lrs[2] != lrs[3]
    states, optimizers = [], []
    for tag in (resumed_tag, reference_tag):
        with restricted_loading(tag):
            states.append(torch.load(tag / MODEL_STATES, weights_only=True))
            optimizers.append(torch.load(tag / OPTIM_STATES, weights_only=True)["optimizer_state_dict"])
    assert states[0]["lr_scheduler"] == states[1]["lr_scheduler"]
    assert states[0]["global_steps"] == states[1]["global_steps"] == 3
    # optimizer: Adam's moments and step count after step 3 (they carry the earlier gradients)
    torch.testing.assert_close(optimizers[0]["base_optimizer_state"]["state"],
                               optimizers[1]["base_optimizer_state"]["state"], rtol=1e-5, atol=1e-7)
    assert optimizers[0]["base_optimizer_state"]["state"][0]["step"] == 3
    # and so the weights (step 2 moved them: its learning rate is not 0)
    weights = [load_zero_state_dict(tag.parent, LAST) for tag in (resumed_tag, reference_tag)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_a_clean_resume_continues_the_torch_rng_exactly(run_dir, resumed_dir):
    rng = [json.loads((tag / "checkpoints" / LAST / "rng_rank0.json").read_text()) for tag in (resumed_dir, run_dir)]
    assert rng[0]["torch"] == rng[1]["torch"]


@pytest.mark.slow
@pytest.mark.parametrize("file_name", [HOSTILE[0][0], HOSTILE[1][0]])
def test_a_truncated_checkpoint_file_is_one_line(run_dir, tmp_path, file_name):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=lambda folder, names: [n for n in names if n in (PREVIOUS, "export")])
    damaged = run / "checkpoints" / LAST / file_name
    damaged.write_bytes(damaged.read_bytes()[:3000])
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(run), "--out", str(tmp_path / "exported")], env={"COLUMNS": "200"})
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "unreadable checkpoint" in errors[0], result.output[-3000:]
    assert str(run / "checkpoints" / LAST) in errors[0]
