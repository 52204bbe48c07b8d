"""Special tokens and tokenisation, exactly as the reference tokenises (docs/fidelity.md, "Tokens").

The KeySeg release and LISA tokenise with the slow `LlamaTokenizer` of transformers 4.31.
Two of its habits decide which ids the model sees, and where the [SEG] and [KEY] states are
read from:
  - Text is cut at every added token ([SEG], [KEY], <im_start>, ...) and at the special
    tokens (<s>, </s>, <unk>); each piece of text in between is encoded on its own, and
    whitespace on both sides of an added (non-special) token is dropped. So "it is [SEG]."
    is "it is" + [SEG] + "." and "<im_end>\\n What" loses its "\\n ".
  - `<image>` is not a token: a prompt is split at "<image>", each part encoded on its own
    (each with the leading <s>, which is kept only for the first part) and the parts are
    joined with the placeholder id -200 (`tokenizer_image_token`).
`ReferenceTokenizer` reproduces both on top of any transformers tokenizer; when the
tokenizer is a SentencePiece model (LLaMA's `tokenizer.model`), each piece of text is
encoded by SentencePiece itself, as the slow tokenizer does.

Labels follow the reference's arithmetic (one round "... ASSISTANT: answer</s>"): the first
position and the instruction (everything up to "ASSISTANT: ", as its own encoding counts
it, minus 2) are -100; the rest, up to and including </s>, is supervised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

SEG_TOKEN = "[SEG]"
KEY_TOKEN = "[KEY]"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200  # the placeholder id of <image> in input ids; never a vocabulary id
# Added in the release's order: to a LISA-7B-v1 tokenizer (which holds <im_patch>,
# <im_start>, <im_end> and [SEG]) only [KEY] is new, and it gets id 32004 (vocabulary 32005).
SPECIAL_TOKENS = [SEG_TOKEN, KEY_TOKEN, IM_START_TOKEN, IM_END_TOKEN]
IGNORE_INDEX = -100
ANSWER_SEPARATOR = " ASSISTANT: "  # llava_v1: what ends the instruction part of a round


def add_special_tokens(tokenizer) -> dict[str, int]:
    """Add SPECIAL_TOKENS to `tokenizer` (in place) and return the ids a KeySegConfig needs.

    Tokens already present keep their ids. A tokenizer without a pad token (LLaMA) pads with
    its unk token, as LLaVA, LISA and the release do. The caller resizes the LM's embeddings.
    """
    for token in SPECIAL_TOKENS:
        if token not in tokenizer.get_vocab():
            tokenizer.add_tokens([token], special_tokens=token in (IM_START_TOKEN, IM_END_TOKEN))
    if tokenizer.pad_token is None:
        if tokenizer.unk_token is None:
            raise ValueError("the tokenizer has neither a pad nor an unk token to pad with")
        tokenizer.pad_token = tokenizer.unk_token
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer needs an eos token: it closes every supervised answer")
    return {
        "seg_token_id": tokenizer.convert_tokens_to_ids(SEG_TOKEN),
        "key_token_id": tokenizer.convert_tokens_to_ids(KEY_TOKEN),
        "im_start_token_id": tokenizer.convert_tokens_to_ids(IM_START_TOKEN),
        "im_end_token_id": tokenizer.convert_tokens_to_ids(IM_END_TOKEN),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _sentencepiece_model(tokenizer):
    """The SentencePiece processor behind `tokenizer`, or None when it has none."""
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if not vocab_file or not str(vocab_file).endswith(".model"):
        return None
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(vocab_file))


class ReferenceTokenizer:
    """Encodes text and conversations as the reference's slow tokenizer does (module docstring)."""

    def __init__(self, tokenizer):
        if tokenizer.eos_token is None or tokenizer.pad_token_id is None:
            raise ValueError("call add_special_tokens(tokenizer) first (eos and pad tokens are needed)")
        self.tokenizer = tokenizer
        self.sentencepiece = _sentencepiece_model(tokenizer)
        special = {token for token in tokenizer.all_special_tokens if token}
        added = {token for token in tokenizer.get_added_vocab() if token}
        self._stripped = added - special  # whitespace around these is dropped
        self._ids = {token: tokenizer.convert_tokens_to_ids(token) for token in added | special}
        # Added tokens that are not special ([SEG], [KEY]): decoded by their registered name.
        self._names_by_id = {self._ids[token]: token for token in self._stripped}
        # Longest first: at one position the longest token wins, as the slow tokenizer's trie.
        pattern = "|".join(re.escape(token) for token in sorted(self._ids, key=len, reverse=True))
        self._split = re.compile(pattern) if pattern else None
        self.pad_id = tokenizer.pad_token_id
        self.eos_token = tokenizer.eos_token
        probe = tokenizer("a")["input_ids"]
        self.bos_id = tokenizer.bos_token_id if probe[:1] == [tokenizer.bos_token_id] else None

    def __len__(self) -> int:
        return len(self.tokenizer)

    def _encode_text(self, text: str) -> list[int]:
        if self.sentencepiece is not None:
            return self.sentencepiece.encode(text)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """`tokenizer(text).input_ids` of the reference (<s> first when the tokenizer adds it)."""
        pieces: list[str] = []
        last = 0
        for match in (self._split.finditer(text) if self._split else ()):
            pieces += [text[last:match.start()], match.group()]
            last = match.end()
        pieces.append(text[last:])
        # pieces alternate text, token, text, ..., text
        for index in range(1, len(pieces), 2):
            if pieces[index] in self._stripped:
                pieces[index - 1] = pieces[index - 1].rstrip()
                pieces[index + 1] = pieces[index + 1].lstrip()
        ids = [self.bos_id] if add_bos and self.bos_id is not None else []
        for index, piece in enumerate(pieces):
            if index % 2:
                ids.append(self._ids[piece])
            elif piece:
                ids += self._encode_text(piece)
        return ids

    def encode_with_image(self, prompt: str) -> list[int]:
        """`tokenizer_image_token`: parts between "<image>" encoded alone, joined by -200."""
        parts = [self.encode(part) for part in prompt.split(IMAGE_TOKEN)]
        skip = 1 if self.bos_id is not None and parts[0][:1] == [self.bos_id] else 0
        ids = parts[0][:1] if skip else []
        for index, part in enumerate(parts):
            if index:
                ids.append(IMAGE_TOKEN_INDEX)
            ids += part[skip:]
        return ids

    def _encode_any(self, text: str, has_image: bool) -> list[int]:
        return self.encode_with_image(text) if has_image else self.encode(text)

    def labels(self, conversation: str, input_ids: list[int]) -> list[int]:
        """The reference's targets for one conversation (module docstring)."""
        has_image = IMAGE_TOKEN in conversation
        labels = list(input_ids)
        position = 1
        labels[:position] = [IGNORE_INDEX] * min(position, len(labels))
        for round_text in conversation.split(self.eos_token):
            if round_text == "":
                break
            parts = round_text.split(ANSWER_SEPARATOR)
            if len(parts) != 2:
                raise ValueError(f"a round must contain {ANSWER_SEPARATOR.strip()!r} exactly once: {round_text!r}")
            instruction = len(self._encode_any(parts[0] + ANSWER_SEPARATOR, has_image)) - 2
            end = min(position + instruction, len(labels))
            labels[position:end] = [IGNORE_INDEX] * max(end - position, 0)
            position += len(self._encode_any(round_text, has_image))
        labels[position:] = [IGNORE_INDEX] * max(len(labels) - position, 0)
        if position != len(input_ids):
            raise ValueError(f"the conversation's rounds cover {position} of its {len(input_ids)} tokens "
                             "(the reference would stop on this conversation)")
        return labels

    def tokenize_conversations(self, conversations: Sequence[str], text_limit: int | None) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and labels (R, T) for full conversation strings.

        Rows are right-padded with the pad id; the attention mask is `input_ids != pad`, as in
        the reference (so an unk token inside a LLaMA text is masked too: pad is unk there).
        When the padded width exceeds `text_limit` every row is cut to it (the reference's
        `model_max_length - 255`: the token budget left after the image's extra positions);
        None cuts nothing.
        """
        if not conversations:
            raise ValueError("no conversations to tokenize")
        rows = [self.encode_with_image(text) for text in conversations]
        labels = [self.labels(text, ids) for text, ids in zip(conversations, rows)]
        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for index, (ids, label) in enumerate(zip(rows, labels)):
            input_ids[index, :len(ids)] = torch.tensor(ids)
            targets[index, :len(label)] = torch.tensor(label)
        if text_limit is not None and width > text_limit:
            input_ids, targets = input_ids[:, :text_limit], targets[:, :text_limit]
        return {"input_ids": input_ids, "attention_mask": (input_ids != self.pad_id).long(), "labels": targets}

    def keyword_target_ids(self, keywords: Sequence[str | None]) -> torch.LongTensor:
        """Per row: the first id of the keyword (the keyword loss target).

        As the reference: the keyword is encoded alone, without <s>; an empty encoding gives
        the pad id, which the loss ignores. None (a row without [KEY]) gives -100.
        """
        ids = []
        for keyword in keywords:
            if keyword is None:
                ids.append(IGNORE_INDEX)
                continue
            pieces = self.encode(keyword, add_bos=False)
            ids.append(pieces[0] if pieces else self.pad_id)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, each added non-special token written as it was registered ("[SEG]"):
        a tokenizer whose normaliser lower-cases (the word-level one) would otherwise give
        "[seg]", which no reader of the answer recognises. Runs of other ids (special tokens
        such as </s> included) are decoded by the tokenizer; pieces are joined by one space,
        which the reference's encoding drops around these tokens anyway."""
        names = self._names_by_id
        pieces, run = [], []
        for token_id in (int(i) for i in ids if int(i) >= 0):
            if token_id in names:
                if run:
                    pieces.append(self.tokenizer.decode(run, skip_special_tokens=False))
                    run = []
                pieces.append(names[token_id])
            else:
                run.append(token_id)
        if run:
            pieces.append(self.tokenizer.decode(run, skip_special_tokens=False))
        return " ".join(piece.strip() for piece in pieces if piece.strip())


def as_reference_tokenizer(tokenizer) -> ReferenceTokenizer:
    """`tokenizer` itself when it already is a ReferenceTokenizer, else a wrapper around it."""
    return tokenizer if isinstance(tokenizer, ReferenceTokenizer) else ReferenceTokenizer(tokenizer)
