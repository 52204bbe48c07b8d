"""Corrupt-sample accounting: each skip is logged where it happens (shard URL, key,
reason), carried to the main process on the next batch, and summed per epoch.

A shard that cannot be read to its end (missing, truncated, not a tar) is one skip with
key None: the samples after the break are lost and only the index's sample counts tell how
many. Stages compare what they scored with those counts (`evaluate`) and record every skip
in their outputs (`evaluate`'s metrics.json, `train`'s train_summary.json and metrics.jsonl).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from webdataset.utils import pytorch_worker_info

LOGGER = logging.getLogger("keyseg.data")

# Skips listed by name in outputs; beyond this only the count grows.
MAX_LISTED_SKIPS = 100


@dataclass(frozen=True)
class SkippedSample:
    url: str | None
    key: str | None  # None when a whole shard (or its tail) could not be read
    reason: str

    def to_dict(self) -> dict:
        """The form written to metrics.json, train_summary.json and metrics.jsonl."""
        return {"shard": self.url, "key": self.key, "reason": self.reason}


@dataclass
class LoaderStats:
    """What one epoch delivered and skipped (main-process view when built by KeySegLoader)."""

    batches: int = 0
    samples: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[SkippedSample] = field(default_factory=list)  # the first `max_examples`
    max_examples: int = MAX_LISTED_SKIPS

    def add_skips(self, skips: list[SkippedSample]) -> None:
        self.skipped += len(skips)
        self.reasons.update(skip.reason.split(":")[0] for skip in skips)
        self.examples.extend(skips[: max(0, self.max_examples - len(self.examples))])


@dataclass
class SkipLog:
    """Skips as the stages' outputs record them: how many, and the first MAX_LISTED_SKIPS
    as {"shard", "key", "reason"} dicts."""

    count: int = 0
    listed: list[dict] = field(default_factory=list)

    def add(self, count: int, listed: list[dict]) -> None:
        self.count += count
        self.listed += listed[: max(0, MAX_LISTED_SKIPS - len(self.listed))]

    def add_stats(self, stats: LoaderStats) -> None:
        self.add(stats.skipped, [skip.to_dict() for skip in stats.examples])


def _error_text(exn: Exception) -> str:
    """An exception's message without webdataset's " @ <file object>" suffix."""
    text = str(exn.args[0]) if exn.args else repr(exn)
    return text.split(" @ <", 1)[0] or type(exn).__name__


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

    def shard_error(self, url: str):
        """A webdataset handler for one shard: log and count the error, stop reading that
        shard (a tar stream is not readable past a broken member), go on with the next.

        Bound to the shard's URL because webdataset does not pass it to every handler
        call (errors inside a tar member only name the file object)."""

        def handler(exn: Exception) -> bool:
            self.skip(url, None, f"shard read error: {_error_text(exn)}")
            return False

        return handler

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
