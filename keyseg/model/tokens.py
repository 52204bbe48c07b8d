"""Special tokens, the LLaVA v1 conversation and its tokenisation (reference-semantics.md section 5).

One conversation is
    "{SYSTEM} USER: <im_start><image><im_end>\\n{question} ASSISTANT: {answer}</s>"
The model replaces the single `<image>` token by the projected CLIP patch features. Only
the answer and the closing eos token are supervised; every other label is -100.

Labels are found from character offsets (fast tokenizers only): a token is supervised when
it covers at least one character of the answer or the eos that follows it. The whole text
is tokenised in one go, so input ids are what the tokenizer makes of the full conversation
(with SentencePiece, tokenising the prompt and the answer separately could split the text
differently at the boundary).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SEG_TOKEN = "[SEG]"
KEY_TOKEN = "[KEY]"
IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
IMAGE_TOKEN = "<image>"
# Order matters: added to a LISA-7B-v1 tokenizer (which already holds [SEG], <im_start> and
# <im_end>), [KEY] becomes id 32004 as in the KeySeg release; <image> is appended after it.
SPECIAL_TOKENS = [SEG_TOKEN, KEY_TOKEN, IM_START_TOKEN, IM_END_TOKEN, IMAGE_TOKEN]

SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
# The answer validation and evaluation teacher-force (no keyword text after [KEY]).
EVAL_ANSWER = f"{SEG_TOKEN}. {KEY_TOKEN}."
IGNORE_INDEX = -100


def add_special_tokens(tokenizer) -> dict[str, int]:
    """Add SPECIAL_TOKENS to `tokenizer` (in place) and return the ids a KeySegConfig needs.

    Tokens already present keep their ids. A tokenizer without a pad token (LLaMA) pads with
    its unk token, as LLaVA and LISA do. The caller resizes the LM's embeddings afterwards.
    """
    tokenizer.add_tokens(SPECIAL_TOKENS, special_tokens=True)
    if tokenizer.pad_token is None:
        if tokenizer.unk_token is None:
            raise ValueError("the tokenizer has neither a pad nor an unk token to pad with")
        tokenizer.pad_token = tokenizer.unk_token
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer needs an eos token: it closes every supervised answer")
    ids = {
        "seg_token_id": tokenizer.convert_tokens_to_ids(SEG_TOKEN),
        "key_token_id": tokenizer.convert_tokens_to_ids(KEY_TOKEN),
        "im_start_token_id": tokenizer.convert_tokens_to_ids(IM_START_TOKEN),
        "im_end_token_id": tokenizer.convert_tokens_to_ids(IM_END_TOKEN),
        "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    for token in SPECIAL_TOKENS:
        # An added token must come out of the tokenizer as exactly one id, or the model
        # could not find [SEG]/[KEY]/<image> in the input ids.
        if tokenizer(token, add_special_tokens=False)["input_ids"] != [tokenizer.convert_tokens_to_ids(token)]:
            raise ValueError(f"{token!r} does not tokenize as a single token")
    return ids


def build_prompt(question: str) -> str:
    """The conversation up to and including "ASSISTANT:" (no trailing space)."""
    if IMAGE_TOKEN in question:
        raise ValueError(f"the question must not contain {IMAGE_TOKEN!r}: the prompt adds it")
    return f"{SYSTEM_PROMPT} USER: {IM_START_TOKEN}{IMAGE_TOKEN}{IM_END_TOKEN}\n{question} ASSISTANT:"


def build_conversation(question: str, answer: str, eos_token: str) -> tuple[str, int]:
    """The full conversation text and the character index where the supervised part starts."""
    prompt = build_prompt(question) + " "
    return f"{prompt}{answer}{eos_token}", len(prompt)


def tokenize_conversations(tokenizer, questions: Sequence[str], answers: Sequence[str],
                           max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise one conversation per query row, right-padded to the longest row.

    Returns `input_ids`, `attention_mask` and `labels` (LongTensor (R, T)); labels equal the
    input ids on the answer tokens and the eos, -100 elsewhere (prompt and padding). Rows
    longer than `max_length` are cut on the right; a cut that removes [SEG] makes the model
    reject the batch (its mask count no longer matches).
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("tokenize_conversations needs a fast tokenizer (it reads character offsets)")
    if tokenizer.eos_token is None or tokenizer.pad_token_id is None:
        raise ValueError("call add_special_tokens(tokenizer) first (eos and pad tokens are needed)")
    if not questions:
        raise ValueError("no conversations to tokenize")
    conversations = [build_conversation(q, a, tokenizer.eos_token) for q, a in zip(questions, answers)]
    texts = [text for text, _ in conversations]
    answer_starts = [start for _, start in conversations]
    encoded = tokenizer(texts, padding="longest", padding_side="right", truncation=True,
                        max_length=max_length, return_offsets_mapping=True, return_tensors="pt")
    input_ids = encoded["input_ids"]
    attention_mask = encoded["attention_mask"]
    token_ends = encoded["offset_mapping"][..., 1]
    starts = torch.tensor(answer_starts, dtype=token_ends.dtype).unsqueeze(1)
    # Padding and BOS have offsets (0, 0), so they never pass `end > start`.
    supervised = (token_ends > starts) & attention_mask.bool()
    labels = torch.where(supervised, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def keyword_token_ids(tokenizer, keywords: Sequence[str | None]) -> torch.LongTensor:
    """The first sub-token id of each keyword (the keyword loss target); -100 for None or "".

    Keywords are tokenised on their own without special tokens, which for SentencePiece gives
    the word-initial piece ("▁car"), the piece the LM emits after "[KEY] ".
    """
    ids = []
    for keyword in keywords:
        pieces = tokenizer(keyword.strip(), add_special_tokens=False)["input_ids"] if keyword else []
        ids.append(pieces[0] if pieces else IGNORE_INDEX)
    return torch.tensor(ids, dtype=torch.long)
