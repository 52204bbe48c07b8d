"""Many two-process `keyseg evaluate --predictions` runs, cheaply.

    python evaluate_ranks.py --runs N --shards S --split X [--split Y] --predictions P --out OUT

Importing torch takes seconds; a run takes a fraction of one. So this process imports
everything once, then for each run forks rank 0 and rank 1 with RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT set as torchrun sets them. Each rank calls the real
`pipelines.evaluate.run` (predictions mode, --missing-as-empty, outputs in OUT/<run>) and
then leaves through the normal interpreter shutdown, where a process group left alive can
abort the process. A rank whose process group is still initialised after `run` exits 3.
Prints one JSON line: the exit statuses, [rank 0, rank 1] per run (-6 is SIGABRT).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import torch.distributed
from rich.console import Console

from pipelines import evaluate


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rank_process(rank: int, port: int, args, out: Path) -> int:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    config = evaluate.EvaluateConfig(shards=Path(args.shards), splits=args.split, out=out,
                                     predictions=Path(args.predictions), missing_as_empty=True, show_progress=False)
    evaluate.run(config, console=Console(quiet=True))
    return 3 if torch.distributed.is_initialized() else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--split", action="append", required=True)
    parser.add_argument("--predictions", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    statuses = []
    for run in range(args.runs):
        port = free_port()
        pids = []
        for rank in (0, 1):
            pid = os.fork()
            if pid == 0:
                # The child returns from main and exits through sys.exit like any script.
                return rank_process(rank, port, args, Path(args.out) / str(run))
            pids.append(pid)
        statuses.append([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids])
    print(json.dumps(statuses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
