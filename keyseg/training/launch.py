"""`keyseg train --gpus N`: re-run the same command under torchrun with N processes."""

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


def torchrun_command(processes: int, argv: list[str]) -> list[str]:
    """torchrun on one node; DeepSpeed picks the world up from its environment variables."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            f"--master_port={free_port()}", "-m", "cli", *strip_gpus(argv)]
