"""Build the tiny LLaMA-style SentencePiece tokenizer used by the reference goldens.

The real LISA-7B-v1 tokenizer cannot be shipped or downloaded here, so this
script trains a small BPE model with the same SentencePiece settings as
LLaMA's (byte fallback, dummy prefix, identity normalisation, split digits,
unk/bos/eos = 0/1/2, no pad) and lays it out like the LISA-7B-v1 tokenizer
folder, including the LLaVA/LISA added tokens. Training reads sentences from
memory with one thread, so two runs give byte-identical files.

Usage (keyseg's venv): .venv/bin/python tests/golden/reference/build_tiny_tokenizer.py
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import sentencepiece as spm

VOCAB_SIZE = 800
DEFAULT_OUT = Path(__file__).resolve().parent / "tiny_llama"

# Tokens LLaVA added after the base vocabulary, then the one LISA added.
ADDED_TOKENS = ["<im_patch>", "<im_start>", "<im_end>", "[SEG]"]

SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

QUESTION_TEMPLATES = [
    "<image>",
    "Can you segment the {x} in this image?",
    "Please segment the {x} in this image.",
    "What is {x} in this image? Please respond with segmentation mask.",
    "What is {x} in this image? Please output segmentation mask.",
    "{x} Please respond with segmentation mask.",
    "{x} Please output segmentation mask.",
    "{x} Please output segmentation mask and explain why.",
    "{x} Please output segmentation mask and explain the reason.",
    "{x} Please output segmentation mask and give some explanation.",
    "USER: {x} ASSISTANT: Sure, it is [SEG].",
]

ANSWERS = [
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
]

REASONING_SENTENCES = [
    "What part of the car would you hold to open the door?",
    "Which object in the kitchen is used to keep food cold for a long time?",
    "Where should a tired traveller sit down to rest while waiting for the train?",
    "Something that tells the time on the wall of the station.",
    "What could a child use to reach the cookies on the top shelf?",
    "The animal that is most likely to catch the mouse in this picture.",
    "Which item on the table would you use to cut the birthday cake?",
    "What in this room provides light when it is dark outside?",
    "The place where people usually wash their hands after cooking.",
    "Which part of the bicycle stops it when you need to slow down?",
    "What would protect the man from the rain if it starts to pour?",
    "The object that is used to write notes during the meeting.",
    "Where would you put the dirty dishes after dinner?",
    "Which thing in the garden needs water every day to stay green?",
    "What can the dog play with in the park?",
    "The device that lets you watch the news at home.",
    "Which container holds the hot coffee on the desk?",
    "What helps the sailor find the direction at sea?",
    "The part of the plane that makes it fly through the air.",
    "Which tool would a carpenter use to hit the nail?",
    "In 2019, 3 people bought 12 red apples for 5 dollars.",
    "The tallest building has 101 floors and 42 elevators.",
]

EXPLANATIONS = [
    "The handle is attached to the door, so you pull it to open the car.",
    "A refrigerator keeps food cold because it cools the air inside.",
    "The bench is near the platform, so the traveller can sit there.",
    "The clock on the wall shows the hours and the minutes.",
    "The stool is short and sturdy, so a child can stand on it.",
    "The cat is hunting and it is close to the mouse.",
    "The knife is sharp and lies next to the cake.",
    "The lamp gives light in the dark room.",
]

REFER_PHRASES = [
    "man in red shirt", "woman on the left", "the dog near the bench",
    "left most person", "guy with the hat", "white car behind the bus",
    "the small cat sleeping on the sofa", "girl holding an umbrella",
    "middle zebra", "bottom right pizza slice", "the tall giraffe",
    "blue chair by the window", "elephant on the right",
    "person wearing glasses", "the second bowl from left",
    "Black Horse", "Front Sheep", "the TV screen", "Top Left Donut",
    "red bus", "boy in blue jeans", "old lady with a bag",
]

KEYWORDS = [
    "handle", "refrigerator", "bench", "clock", "stool", "cat", "knife",
    "lamp", "sink", "brake", "umbrella", "pen", "dishwasher", "plant",
    "ball", "television", "mug", "compass", "wing", "hammer", "door",
    "person", "car", "dog", "zebra", "pizza", "giraffe", "chair", "elephant",
]

COLORS = ["red", "blue", "green", "white", "black", "yellow", "brown", "gray"]
OBJECTS = ["shirt", "car", "bag", "hat", "chair", "cup", "bowl", "umbrella",
           "horse", "sheep", "truck", "plate", "bottle", "laptop", "book"]
PLACES = ["on the left", "on the right", "in the middle", "in front",
          "behind the table", "near the window", "at the top", "at the bottom"]


def tiny_corpus() -> list[str]:
    """Return the training sentences in a fixed order (no newlines inside)."""
    # The system prompt opens every conversation; repeating it lets BPE learn
    # its words as whole pieces, which keeps the golden sequences short.
    lines = [SYSTEM_PROMPT] * 40 + ["USER", "ASSISTANT", "USER:", "ASSISTANT:"]
    lines.extend(ANSWERS)
    fillers = REASONING_SENTENCES + REFER_PHRASES + KEYWORDS
    for template in QUESTION_TEMPLATES:
        for filler in fillers:
            lines.append(template.replace("{x}", filler))
    lines.extend(EXPLANATIONS)
    for color in COLORS:
        for obj in OBJECTS:
            for place in PLACES:
                lines.append(f"the {color} {obj} {place}")
    for number in range(0, 200, 7):
        lines.append(f"There are {number} objects in picture {number * 3}.")
    return lines


def train_model_bytes(vocab_size: int) -> bytes:
    """Train the BPE model in memory with LLaMA's SentencePiece settings."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        split_by_unicode_script=True,
        split_by_number=True,
        split_by_whitespace=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        max_sentence_length=4192,
        hard_vocab_limit=True,
        minloglevel=2,
    )
    return model.getvalue()


def added_token(content: str) -> dict:
    """Serialised AddedToken as the LLaMA tokenizer_config.json writes it."""
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def tokenizer_config() -> dict:
    # No "legacy" key: transformers 4.31 then keeps its legacy behaviour,
    # as the LISA-7B-v1 tokenizer folder does.
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": added_token("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": added_token("</s>"),
        "model_max_length": 512,
        "pad_token": None,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": added_token("<unk>"),
    }


def special_tokens_map() -> dict:
    return {
        "bos_token": {k: v for k, v in added_token("<s>").items() if k != "__type"},
        "eos_token": {k: v for k, v in added_token("</s>").items() if k != "__type"},
        "unk_token": {k: v for k, v in added_token("<unk>").items() if k != "__type"},
    }


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build(out_dir: Path, vocab_size: int = VOCAB_SIZE) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    model_bytes = train_model_bytes(vocab_size)
    processor = spm.SentencePieceProcessor(model_proto=model_bytes)
    base_vocab = processor.get_piece_size()
    (out_dir / "tokenizer.model").write_bytes(model_bytes)
    write_json(out_dir / "tokenizer_config.json", tokenizer_config())
    write_json(out_dir / "special_tokens_map.json", special_tokens_map())
    write_json(
        out_dir / "added_tokens.json",
        {token: base_vocab + i for i, token in enumerate(ADDED_TOKENS)},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(argv)
    build(args.out, args.vocab_size)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
