"""The texts a tiny run's word-level tokenizer is built from (`keyseg.model.tokenizer`).

Collecting them reads the training shards, so it lives with training; building and
loading the tokenizer is the model's part.
"""

from __future__ import annotations

from pathlib import Path


def shard_texts(shard_paths: list[Path], skipped: list | None = None) -> list[str]:
    """Every text, keyword, explanatory answer and conversation turn in the given shards.

    A bad sample or the unreadable rest of a truncated shard is skipped, as the loader
    skips it (one bad shard must not stop a run before its first step); each skip is
    appended to `skipped` (SkippedSample records) when given."""
    from keyseg.data.loader import iter_raw_samples
    from keyseg.data.skips import _SkipTracker
    from keyseg.shards.samples import BadSampleError, read_sample

    tracker = _SkipTracker()
    texts = []
    for raw in iter_raw_samples([str(path) for path in shard_paths], tracker):
        members = {name: data for name, data in raw.items() if not name.startswith("__")}
        try:
            document = read_sample(raw["__key__"], members)
        except BadSampleError as error:
            tracker.skip(raw["__url__"], raw["__key__"], str(error))
            continue
        for target in document["targets"]:
            texts += target["texts"]
            texts += [value for value in (target["keyword"], target["explanatory"], target["explanatory_query"])
                      if value]
        texts += [turn["value"] for turn in document.get("conversations") or []]
    if skipped is not None:
        skipped += tracker.drain()
    return texts
