"""WebDataset streams over KeySeg shards: train (resampled, mixed, fixed-length epochs)
and eval (every sample exactly once across ranks and workers).

URLs: `resolve_shards` turns a shard-set folder + split names (via its index.json), brace
patterns, lists, local paths, `pipe:` commands and http(s)/s3/gs URLs into a URL list and
checks local shards exist up front. `s3://` is streamed with `aws s3 cp URL -` (the AWS
CLI must be on PATH and configured); with any other tool pass `pipe:your-command URL`.

Ranks and workers: webdataset's `pytorch_worker_info` is the one source of truth. In
webdataset 1.0.2 it reads RANK/WORLD_SIZE from the environment first (torchrun sets them),
else torch.distributed when initialised; DataLoader workers come from torch.

Train: each source is `ResampledShards` (shards drawn with replacement, so ranks need no
node split and never run dry), a shuffle buffer, decoding; sources are mixed by weight
(KeySeg: refer_seg : reason_seg = 9 : 3); batches of `batch_size`; and `.with_epoch(n)`
makes one pass over the pipeline exactly n batches per rank, summed over its workers, so
every rank takes the same number of optimizer steps whatever the shard sizes. Every random
choice comes from an RNG seeded by (seed, epoch, rank, worker, stream): reruns reproduce.

Corrupt samples are logged (logger "keyseg.data": shard URL, key, reason), skipped and
counted. Shards are read one at a time (`iter_raw_samples`), so an error is always charged
to the shard it happened in, and a shard that breaks midway is one skip (key None): the
rest of it is lost. A sample whose key is not a plain file name (a tar member such as
`../../x.jpg`) is skipped before anyone can use the key as a file name. Each batch
carries the skips seen since the previous one (`batch["skipped"]`), so the `KeySegLoader`
returned by `make_loader` sums them in the main process (`loader.stats`, reset every
epoch). Each worker also logs a summary line when its iteration ends. An eval worker that
decodes nothing at all sends its skips on a batch without samples, which only
`KeySegLoader` expects: iterate eval streams through it.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
from dataclasses import dataclass, replace
from functools import partial

import torch
import webdataset as wds
from webdataset.tariterators import tarfile_samples
from webdataset.utils import pytorch_worker_info

from keyseg.data.samples import CorruptSampleError, SampleConfig, SampleDecoder
from keyseg.data.skips import LoaderStats, SkippedSample, _SkipTracker  # noqa: F401 (re-exported)
from keyseg.data.urls import _with_url_schemes, gopen_s3, register_url_schemes, resolve_shards  # noqa: F401
from keyseg.paths import is_plain_name

LOGGER = logging.getLogger("keyseg.data")


@dataclass
class _Seeds:
    """Seeds every random stream from (seed, epoch, rank, worker, stream name)."""

    seed: int
    epoch: int = 0

    def rng(self, *stream) -> random.Random:
        rank, _, worker, _ = pytorch_worker_info()
        # A string seed is hashed with SHA-512 by `random`: stable across processes and runs.
        return random.Random("/".join(map(str, ("keyseg", self.seed, self.epoch, rank, worker) + stream)))


@dataclass
class _StreamSeed:
    """`worker_seed` for ResampledShards (called in the worker when iteration starts)."""

    seeds: _Seeds
    stream: int

    def __call__(self) -> int:
        return self.seeds.rng("shards", self.stream).getrandbits(31)


def _seeded_shuffle(source, bufsize: int, seeds: _Seeds, stream: int):
    if bufsize <= 1:
        yield from source
        return
    yield from wds.shuffle(bufsize, initial=bufsize, rng=seeds.rng("shuffle", stream))(source)


def _shard_samples(source, tracker: _SkipTracker):
    """Raw samples ({"__key__", "__url__", extension: bytes}) of the shards in `source`
    (dicts with a "url"), one shard at a time; see the module docstring."""
    for shard in source:
        url = shard["url"]
        for raw in tarfile_samples([dict(shard)], handler=tracker.shard_error(url)):
            key = raw.get("__key__")
            if not is_plain_name(key):
                tracker.skip(url, key, f"bad key: {key!r} is not a plain file name")
                continue
            yield raw


def iter_raw_samples(urls: list[str], tracker: _SkipTracker):
    """The raw samples of `urls` in order, skips recorded in `tracker` (for readers that
    need no decoding: evaluate's --predictions mode, the tokenizer builder)."""
    register_url_schemes()
    yield from _shard_samples(({"url": url} for url in urls), tracker)


def _decode(source, decoder: SampleDecoder, tracker: _SkipTracker, seeds: _Seeds | None, stream: int = 0):
    rng = seeds.rng("decode", stream) if seeds is not None else None
    for raw in source:
        try:
            sample = decoder(raw, rng)
        except CorruptSampleError as error:
            tracker.skip(raw.get("__url__"), raw.get("__key__"), str(error))
            continue
        except (ValueError, TypeError, KeyError) as error:
            # Data the decoder's checks did not foresee: still one bad sample, not a dead
            # epoch (skips are counted and reported, so a systematic bug cannot hide here).
            tracker.skip(raw.get("__url__"), raw.get("__key__"), f"undecodable sample: {error!r}")
            continue
        tracker.totals.samples += 1
        yield sample


class WeightedMix(wds.RandomMix):
    """`wds.RandomMix` drawing from our seeded RNG: RandomMix itself uses the global
    `random` module, which is neither per-worker nor reproducible."""

    def __init__(self, datasets, probs, seeds: _Seeds):
        super().__init__(datasets, probs=probs, longest=False)
        self.seeds = seeds

    def __iter__(self):
        rng = self.seeds.rng("mix")
        total = float(sum(self.probs))
        cumulative = list(itertools.accumulate(weight / total for weight in self.probs))
        sources = [iter(dataset) for dataset in self.datasets]
        while True:
            index = min(bisect.bisect_right(cumulative, rng.random()), len(sources) - 1)
            try:
                yield next(sources[index])
            except StopIteration:
                return


# ---------------------------------------------------------------- streams
def collate(samples: list[dict]) -> dict:
    """A batch: stacked images, per-image masks, flattened texts with `offsets` (B+1)."""
    counts = [len(sample["questions"]) for sample in samples]

    def flat(name):
        return [value for sample in samples for value in sample[name]]

    return {
        # default_collate stacks straight into shared memory inside DataLoader workers,
        # saving a copy of these large tensors on their way to the main process.
        "image_sam": torch.utils.data.default_collate([sample["image_sam"] for sample in samples]),
        "image_clip": torch.utils.data.default_collate([sample["image_clip"] for sample in samples]),
        "masks": [sample["masks"] for sample in samples],
        "questions": flat("questions"),
        "conversations": flat("conversations"),
        "keywords": flat("keywords"),
        "texts": flat("texts"),
        "is_sentence": flat("is_sentence"),
        "target_indices": flat("target_indices"),
        "text_indices": flat("text_indices"),
        "per_sentence": [sample["per_sentence"] for sample in samples],
        "offsets": torch.tensor([0] + list(itertools.accumulate(counts)), dtype=torch.long),
        "resize": [sample["resize"] for sample in samples],
        "original_size": [sample["original_size"] for sample in samples],
        "keys": [sample["key"] for sample in samples],
        "sources": [sample["source"] for sample in samples],
    }


def worker_share(total: int, worker: int, workers: int) -> int:
    """Worker `worker`'s part of `total` batches; the parts sum to `total` exactly."""
    return total // workers + (1 if worker < total % workers else 0)


class KeySegPipeline(wds.DataPipeline):
    """A DataPipeline of batches that attaches skip records, epochs and worker summaries."""

    def __init__(self, *stages, seeds: _Seeds, tracker: _SkipTracker, workers: int = 0):
        super().__init__(*stages)
        self.seeds, self.tracker, self.workers = seeds, tracker, workers
        self.next_epoch = 0
        self.batches_per_epoch: int | None = None  # None: run until the shards are exhausted

    def with_epoch(self, nbatches: int) -> "KeySegPipeline":
        """One iteration = `nbatches` batches on this rank, split over its DataLoader workers."""
        if nbatches < 1:
            raise ValueError("batches_per_epoch must be positive")
        self.batches_per_epoch = nbatches
        return self

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration uses for its seeds (it then counts on by itself)."""
        self.next_epoch = epoch

    def __iter__(self):
        return self._run()

    def _run(self):
        self.seeds.epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        self.tracker.reset()  # counts are per iteration (a worker's copy starts fresh anyway)
        _, _, worker, workers = pytorch_worker_info()
        if workers != max(self.workers, 1):
            LOGGER.warning("pipeline built for %d workers runs with %d", self.workers, workers)
        batches = self.iterator1()
        if self.batches_per_epoch is not None:
            batches = itertools.islice(batches, worker_share(self.batches_per_epoch, worker, workers))
        try:
            if self.batches_per_epoch is not None:
                for batch in batches:
                    yield self._attach(batch)
                return
            # Eval: hold one batch back so skips at the very end of a worker's shards still
            # ride on its last batch (train streams never end, so they need no look-ahead).
            held = None
            for batch in batches:
                if held is not None:
                    yield self._attach(held)
                held = batch
            if held is not None:
                yield self._attach(held)
            elif self.tracker.pending:
                # Nothing decoded here (e.g. this rank's only shard is truncated): a batch
                # without samples still carries the skips to the loader, which drops it.
                yield {"keys": [], "skipped": self.tracker.drain()}
        finally:
            self.tracker.log_summary()

    def _attach(self, batch: dict) -> dict:
        batch["skipped"] = self.tracker.drain()
        self.tracker.totals.batches += 1
        return batch


def _source_stages(decoder: SampleDecoder, tracker: _SkipTracker, seeds: _Seeds | None,
                   stream: int = 0, shuffle_buffer: int = 0) -> list:
    stages = [_with_url_schemes, partial(_shard_samples, tracker=tracker)]
    if seeds is not None:
        stages.append(partial(_seeded_shuffle, bufsize=shuffle_buffer, seeds=seeds, stream=stream))
    return stages + [partial(_decode, decoder=decoder, tracker=tracker, seeds=seeds, stream=stream)]


def make_train_pipeline(sources: list[tuple[object, float]], sample_config: SampleConfig, batch_size: int,
                        batches_per_epoch: int, workers: int = 0, seed: int | None = None,
                        shuffle_buffer: int = 64) -> KeySegPipeline:
    """Weighted mix of resampled sources -> batches; every iteration yields exactly
    `batches_per_epoch` batches per rank (over all `workers`). `sources` items are
    (anything `resolve_shards` accepts, weight); `seed` defaults to the config's;
    `shuffle_buffer` raw samples are shuffled per source (0/1: off)."""
    if not sources:
        raise ValueError("no training sources")
    config = replace(sample_config, mode="train")
    seeds = _Seeds(config.seed if seed is None else seed)
    decoder, tracker = SampleDecoder(config), _SkipTracker()
    streams = []
    for stream, (spec, _) in enumerate(sources):
        # Resampled (with replacement, seeded per rank and worker): no node/worker split needed.
        shards = wds.ResampledShards(resolve_shards(spec), seed=seeds.seed, worker_seed=_StreamSeed(seeds, stream),
                                     deterministic=True)
        streams.append(wds.DataPipeline(shards, *_source_stages(decoder, tracker, seeds, stream, shuffle_buffer)))
    weights = [float(weight) for _, weight in sources]
    if any(weight <= 0 for weight in weights):
        raise ValueError(f"source weights must be positive, got {weights}")
    mixed = streams[0] if len(streams) == 1 else WeightedMix(streams, weights, seeds)
    pipeline = KeySegPipeline(mixed, wds.batched(batch_size, collation_fn=collate, partial=False),
                              seeds=seeds, tracker=tracker, workers=workers)
    return pipeline.with_epoch(batches_per_epoch)


def make_eval_pipeline(urls, sample_config: SampleConfig, batch_size: int, workers: int = 0) -> KeySegPipeline:
    """Every sample of `urls` exactly once over all ranks and workers, in shard order.

    Shards are split by rank, then by worker, so ranks may get different numbers of
    batches (gather results with variable sizes, e.g. all_gather_object)."""
    config = replace(sample_config, mode="eval")
    decoder, tracker = SampleDecoder(config), _SkipTracker()
    return KeySegPipeline(
        wds.SimpleShardList(resolve_shards(urls)),
        wds.split_by_node,
        wds.split_by_worker,
        *_source_stages(decoder, tracker, None),
        wds.batched(batch_size, collation_fn=collate, partial=True),
        seeds=_Seeds(config.seed), tracker=tracker, workers=workers,
    )


def _as_is(batch):
    # The DataLoader's default per-item conversion would turn our (h, w) tuples into lists.
    return batch


class KeySegLoader(wds.WebLoader):
    """WebLoader that numbers epochs for the pipeline's seeds and sums skip counts."""

    def __init__(self, pipeline: KeySegPipeline, workers: int = 0, **kw):
        kw.setdefault("collate_fn", _as_is)
        super().__init__(pipeline, batch_size=None, num_workers=workers, **kw)
        self.keyseg_pipeline = pipeline
        self.epoch = 0
        self.stats = LoaderStats()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        # Set before the DataLoader starts its workers, which take the pipeline as it is then.
        self.keyseg_pipeline.set_epoch(self.epoch)
        self.epoch += 1
        self.stats = LoaderStats()
        return self._batches(super().__iter__())

    def _batches(self, batches):
        for batch in batches:
            self.stats.add_skips(batch.pop("skipped", []))
            if not batch["keys"]:
                continue  # only carried skips (see KeySegPipeline._run)
            self.stats.batches += 1
            self.stats.samples += len(batch["keys"])
            yield batch


def make_loader(pipeline: KeySegPipeline, workers: int = 0, **kw) -> KeySegLoader:
    """Batches come from the pipeline (batch_size=None); extra kw go to the DataLoader."""
    return KeySegLoader(pipeline, workers=workers, **kw)
