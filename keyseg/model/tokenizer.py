"""Tokenizers: a pretrained one from a local folder, or a word-level one over given texts.

Tiny models have no pretrained tokenizer; a word-level vocabulary over every text the
shards and templates can produce is enough for them and is built without any download
(the caller collects the texts). Like LLaMA's, it starts every encoding with <s>: the
reference's label arithmetic counts that token once per round (keyseg/model/tokens.py), so
multi-turn conversations only line up with it. A training run saves its tokenizer, so
checkpoints and exports carry it.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<pad>", "<unk>", "</s>", "<s>"]


def word_level_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre_tokenizer = pre_tokenizers.Whitespace()
    normalizer = normalizers.Lowercase()
    words = sorted({piece for text in texts for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))})
    vocab = {token: index for index, token in enumerate([*SPECIALS, *(w for w in words if w not in SPECIALS)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizer
    core.pre_tokenizer = pre_tokenizer
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                        special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="</s>",
                                   bos_token="<s>")


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
