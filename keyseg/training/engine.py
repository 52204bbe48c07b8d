"""DeepSpeed settings from a TrainConfig, and process-group set-up that also works for a
plain `python -m cli train` (one process, no launcher)."""

from __future__ import annotations

import os
import socket

from keyseg.training.config import TrainConfig


def ensure_single_process_env() -> None:
    """Without a launcher there is no RANK/WORLD_SIZE: describe a world of one."""
    if "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def total_steps(config: TrainConfig) -> int:
    return config.optim.epochs * config.optim.steps_per_epoch


def parameter_groups(named_parameters, lr_scales: dict) -> list[dict]:
    """Trainable parameters grouped by learning-rate scale: [{"params", "lr_scale", "name"}, ...].

    Each parameter takes the scale of the longest prefix of `lr_scales` its name starts
    with (1.0 if none). Groups come in a fixed order so checkpoints resume into the same
    groups: the base group (scale 1.0) first, so the logged "lr" is `optim.lr`'s schedule,
    then the others by scale. A group's name is "base" for scale 1.0, else its prefixes
    joined by "+" (e.g. "keyword_fusion+sam"): the same config always gives the same names,
    which label the learning-rate curves.
    """
    prefixes = sorted(lr_scales, key=len, reverse=True)
    by_scale: dict[float, list] = {}
    prefixes_by_scale: dict[float, set] = {}
    used = set()
    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        prefix = next((p for p in prefixes if name == p or name.startswith(p + ".")), None)
        used.add(prefix)
        scale = float(lr_scales[prefix]) if prefix else 1.0
        by_scale.setdefault(scale, []).append(parameter)
        prefixes_by_scale.setdefault(scale, set()).add(prefix)
    unused = sorted(set(prefixes) - used)
    if unused:
        raise ValueError(f"optim.lr_scales: no trainable parameter under {unused}")
    order = sorted(by_scale, key=lambda scale: (scale != 1.0, scale))
    return [{"params": by_scale[scale], "lr_scale": scale,
             "name": "base" if scale == 1.0 else "+".join(sorted(prefixes_by_scale[scale]))} for scale in order]


def deepspeed_config(config: TrainConfig, on_cpu: bool, groups: list[dict] | None = None) -> dict:
    """The DeepSpeed JSON this run uses (printed by --dry-run, saved with checkpoints).

    `groups` (from `parameter_groups`): with more than one, the scheduler warms each group
    up to its own peak learning rate, `optim.lr * lr_scale`.
    """
    optim = config.optim
    peak_lr = [optim.lr * group["lr_scale"] for group in groups] if groups and len(groups) > 1 else optim.lr
    return {
        "train_micro_batch_size_per_gpu": optim.micro_batch,
        "gradient_accumulation_steps": optim.grad_accum,
        "gradient_clipping": optim.grad_clip,
        "steps_per_print": 10**9,  # progress is ours
        "zero_optimization": {"stage": config.zero_stage, "contiguous_gradients": True, "overlap_comm": not on_cpu},
        "bf16": {"enabled": config.precision == "bf16"},
        "fp16": {"enabled": config.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW on CPU; DeepSpeed's fused kernel needs a GPU.
            "params": {"lr": optim.lr, "betas": list(optim.betas), "weight_decay": optim.weight_decay,
                       "torch_adam": on_cpu},
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {"total_num_steps": max(total_steps(config), optim.warmup_steps + 1), "warmup_min_lr": 0.0,
                       "warmup_max_lr": peak_lr, "warmup_num_steps": optim.warmup_steps, "warmup_type": "linear"},
        },
    }
