"""Tokenizers: a pretrained one from a local folder, or a word-level one built from the data.

Tiny models have no pretrained tokenizer; a word-level vocabulary over every text the
shards and templates can produce is enough for them and is built without any download.
It is saved with each run, so checkpoints and exports carry it.
"""

from __future__ import annotations

import json
from pathlib import Path

from keyseg.shards.tario import iter_samples

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


def shard_texts(shard_paths: list[Path]) -> list[str]:
    """Every text, keyword and explanatory answer in the given shards."""
    texts = []
    for path in shard_paths:
        with open(path, "rb") as handle:
            for _, members in iter_samples(handle):
                for target in json.loads(members["json"])["targets"]:
                    texts += target["texts"]
                    texts += [value for value in (target.get("keyword"), target.get("explanatory"),
                                                  target.get("explanatory_query")) if value]
    return texts


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
