"""Tokenizers: a pretrained one from a local folder, or a word-level one built from the data.

Tiny models have no pretrained tokenizer; a word-level vocabulary over every text the
shards and templates can produce is enough for them and is built without any download.
It is saved with each run, so checkpoints and exports carry it.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<pad>", "<unk>", "</s>"]


def word_level_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre_tokenizer = pre_tokenizers.Whitespace()
    normalizer = normalizers.Lowercase()
    words = sorted({piece for text in texts for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))})
    vocab = {token: index for index, token in enumerate([*SPECIALS, *(w for w in words if w not in SPECIALS)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizer
    core.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")


def shard_texts(shard_paths: list[Path], skipped: list | None = None) -> list[str]:
    """Every text, keyword and explanatory answer in the given shards.

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
    if skipped is not None:
        skipped += tracker.drain()
    return texts


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
