"""`--gpus N`: re-run the same command under torchrun with N processes, and leave the
process group cleanly when a rank is done."""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def strip_gpus(argv: list[str]) -> list[str]:
    """The command line without --gpus (each launched process must not launch again)."""
    cleaned, skip = [], False
    for argument in argv:
        if skip:
            skip = False
            continue
        if argument == "--gpus":
            skip = True
            continue
        if argument.startswith("--gpus="):
            continue
        cleaned.append(argument)
    return cleaned


def torchrun_command(processes: int, module: str, argv: list[str]) -> list[str]:
    """torchrun on one node running `python -m MODULE ARGV` (without --gpus) per process.

    The caller names its own entry module, so this library never refers to the command
    line that uses it. DeepSpeed picks the world up from torchrun's environment variables."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            f"--master_port={free_port()}", "-m", module, *strip_gpus(argv)]


def leave_process_group(synchronise: bool) -> None:
    """Tear the process group down (no group: nothing to do). A rank that exits with the
    group alive can abort in its C++ destructors ("terminate called without an active
    exception"), and torchrun then kills the others. With `synchronise` the ranks first
    meet at a barrier, so none closes connections another still uses; after a failure
    pass False, since the other ranks may be stuck in a collective."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if synchronise:
        try:
            dist.barrier()
        except RuntimeError:
            pass  # a peer is already gone: nothing left to wait for
    dist.destroy_process_group()


def select_deepspeed_accelerator() -> None:
    """Name DeepSpeed's accelerator before it is imported, unless the user already did.

    Left to detect it, DeepSpeed warns "Setting accelerator to CPU ... unable to detect it"
    on every CPU run: nothing a user can act on, printed in the middle of our output."""
    import os

    if "DS_ACCELERATOR" not in os.environ:
        import torch

        os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"


def filter_deepspeed_notices() -> None:
    """Drop DeepSpeed log lines a user cannot act on (its scheduler asks for a learning
    rate before its first step, once per run, by design of its own engine)."""
    from deepspeed.utils import logger

    logger.addFilter(lambda record: "before it has started" not in record.getMessage())
