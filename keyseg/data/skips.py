"""Corrupt-sample accounting: each skip is logged where it happens (shard URL, key,
reason), carried to the main process on the next batch, and summed per epoch."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from webdataset.utils import pytorch_worker_info

LOGGER = logging.getLogger("keyseg.data")


@dataclass(frozen=True)
class SkippedSample:
    url: str | None
    key: str | None  # None when a whole shard (or its tail) could not be read
    reason: str


@dataclass
class LoaderStats:
    """What one epoch delivered and skipped (main-process view when built by KeySegLoader)."""

    batches: int = 0
    samples: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[SkippedSample] = field(default_factory=list)  # the first `max_examples`
    max_examples: int = 100

    def add_skips(self, skips: list[SkippedSample]) -> None:
        self.skipped += len(skips)
        self.reasons.update(skip.reason.split(":")[0] for skip in skips)
        self.examples.extend(skips[: max(0, self.max_examples - len(self.examples))])


class _SkipTracker:
    """Worker-local: logs each skip as it happens and holds it until a batch carries it."""

    def __init__(self):
        self.pending: list[SkippedSample] = []
        self.totals = LoaderStats()

    def skip(self, url, key, reason: str) -> None:
        LOGGER.warning("skipping sample: shard %s key %s: %s", url, key, reason)
        record = SkippedSample(url, key, reason)
        self.pending.append(record)
        self.totals.add_skips([record])

    def tar_error(self, exn: Exception) -> bool:
        """webdataset handler for unreadable shards/members: log, count, carry on."""
        urls = [arg for arg in exn.args[1:] if isinstance(arg, str)]
        self.skip(urls[-1] if urls else None, None, f"shard read error: {exn.args[0] if exn.args else exn!r}")
        return True

    def drain(self) -> list[SkippedSample]:
        drained, self.pending = self.pending, []
        return drained

    def reset(self) -> None:
        self.pending, self.totals = [], LoaderStats()

    def log_summary(self) -> None:
        rank, world, worker, workers = pytorch_worker_info()
        totals = self.totals
        LOGGER.info("rank %d/%d worker %d/%d done: %d batches, %d samples decoded, %d skipped %s",
                    rank, world, worker, workers, totals.batches, totals.samples, totals.skipped,
                    dict(totals.reasons))


# ---------------------------------------------------------------- seeded stages
