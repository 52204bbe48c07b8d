"""DeepSpeed checkpoints with our training state, `--resume auto`, and pruning.

Layout under OUT/checkpoints: one folder per tag (`step_00000040`, `best`), DeepSpeed's
`latest` file naming the newest step tag, and in every tag folder `train_state.json`
(step, epoch, micro-batch in epoch, best gIoU, epochs without improvement) and the RNG
states, so a resumed run continues exactly where the interrupted one stopped.

Every read of a checkpoint's `.pt` files goes through `keyseg.training.safe_load`: a
checkpoint is data, and a file that would run code when unpickled is refused.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from keyseg.errors import DataError
from keyseg.io import atomic_write_json
from keyseg.training.safe_load import restricted_loading

STEP_PREFIX = "step_"


def rng_state() -> dict:
    return {"torch": torch.get_rng_state().tolist(), "numpy": _numpy_state(), "python": _python_state()}


def _numpy_state() -> list:
    name, keys, position, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), position, has_gauss, cached]


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def restore_rng(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def step_tag(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def save(engine, folder: Path, tag: str, train_state: dict, rank: int) -> None:
    """Every rank calls this (ZeRO shards are per rank); rank 0 writes our side files."""
    engine.save_checkpoint(str(folder), tag=tag, client_state={"train_state": train_state},
                           save_latest=tag.startswith(STEP_PREFIX))
    # Each rank draws its own random numbers (dropout, sampling): each saves its own state.
    atomic_write_json(folder / tag / f"rng_rank{rank}.json", rng_state())
    if rank == 0:
        atomic_write_json(folder / tag / "train_state.json", train_state)


def latest_tag(folder: Path) -> str | None:
    latest = folder / "latest"
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    return tag if (folder / tag).is_dir() else None


def load(engine, folder: Path, tag: str, rank: int) -> dict:
    """Model, optimizer, scheduler, this rank's RNG; returns the training state."""
    with restricted_loading(Path(folder) / tag):
        _, client_state = engine.load_checkpoint(str(folder), tag=tag, load_optimizer_states=True,
                                                 load_lr_scheduler_states=True)
    if client_state is None or "train_state" not in client_state:
        raise FileNotFoundError(f"{folder / tag}: not a keyseg training checkpoint (no train_state)")
    restore_rank_rng(Path(folder) / tag, rank)
    return client_state["train_state"]


def restore_rank_rng(tag_dir: Path, rank: int) -> None:
    """Put back this rank's RNG states as the checkpoint saved them (no file: left as is)."""
    rng_file = Path(tag_dir) / f"rng_rank{rank}.json"
    if not rng_file.is_file():
        return
    try:
        restore_rng(json.loads(rng_file.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        raise DataError(rng_file, f"not an RNG state written by keyseg ({type(error).__name__}: {error})") from None


def load_zero_state_dict(folder: Path, tag: str) -> dict:
    """The model's full fp32 state dict from a (ZeRO-partitioned) checkpoint tag folder."""
    import contextlib
    import io

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    # DeepSpeed narrates the consolidation (prints and a progress bar): kept out of our
    # output; a failure still raises with its own message.
    chatter = io.StringIO()
    with restricted_loading(Path(folder) / tag), contextlib.redirect_stdout(chatter), \
            contextlib.redirect_stderr(chatter):
        return get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag)


def prune(folder: Path, keep: int) -> None:
    """Drop the oldest step checkpoints beyond `keep` (the `best` folder is never pruned)."""
    steps = sorted(path for path in folder.glob(f"{STEP_PREFIX}*") if path.is_dir())
    for path in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint(path: Path) -> tuple[Path, str, Path]:
    """(checkpoints folder, tag, run folder) for any of the accepted paths."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "latest").is_file() or any(path.glob(f"{STEP_PREFIX}*")):
        tag = latest_tag(path)
        if tag is None:
            raise FileNotFoundError(f"{path}: no `latest` checkpoint")
        return path, tag, path.parent
    if (path / "train_state.json").is_file():
        return path.parent, path.name, path.parent.parent
    raise FileNotFoundError(f"{path}: not a keyseg run, checkpoints folder or checkpoint tag folder")
