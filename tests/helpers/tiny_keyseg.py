"""A tiny KeySeg model, a locally built tokenizer and synthetic batches (nothing downloaded)."""

from __future__ import annotations

import torch

from keyseg.data.conversation import IMAGE_PREFIX, SYSTEM_PROMPT, conversation, with_image_markers
from keyseg.data.transforms import sam_resize_shape
from keyseg.model import KeySegConfig, KeySegModel, ReferenceTokenizer

# Words of the test conversations; any other word becomes <unk>, which is fine too.
DEFAULT_TEXTS = [
    SYSTEM_PROMPT,
    "USER: ASSISTANT: Sure, it is . What is the red car in this image? Please segment the dog.",
    "Where can I sit? the chair next to the table. Which object holds water? cup glass bottle",
]


def make_tiny_tokenizer(texts: list[str] | tuple[str, ...] = ()):
    """The library's word-level tokenizer over DEFAULT_TEXTS and `texts` ("<pad>" 0, "<unk>" 1, "</s>" 2)."""
    from keyseg.model.tokenizer import word_level_tokenizer

    return word_level_tokenizer([*DEFAULT_TEXTS, *texts])


def tiny_config(tokenizer, **overrides) -> KeySegConfig:
    """KeySegConfig.tiny sized for `tokenizer` (before the special tokens are added)."""
    return KeySegConfig.tiny(vocab_size=len(tokenizer), **overrides)


def build_tiny_model(seed: int = 0, texts=(), **overrides):
    """(model, tokenizer): a random tiny KeySegModel whose tokenizer has the special tokens."""
    tokenizer = make_tiny_tokenizer(texts)
    torch.manual_seed(seed)
    model = KeySegModel.from_config(tiny_config(tokenizer, **overrides), tokenizer)
    return model, tokenizer


def make_batch(model: KeySegModel, tokenizer, image_sizes=((40, 60), (70, 50)), rows_per_image=(2, 1),
               answers=None, questions=None, keywords=None, seed: int = 0, max_length: int = 128) -> dict:
    """Keyword arguments for `model.forward`: random images and masks, tokenised conversations.

    Each row's answer holds one [SEG] (so image i has rows_per_image[i] masks) and one [KEY].
    Masks are uint8 with values 0, 1 and 255 (ignore) at the original image size.
    """
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    num_rows = sum(rows_per_image)
    questions = questions or [f"What is the red car in this image? {i}" for i in range(num_rows)]
    answers = answers or ["Sure, it is [SEG]. [KEY] car", "Sure, it is [SEG]. [KEY] dog",
                          "[SEG]. [KEY] chair", "it is [SEG]. [KEY] cup"][:num_rows]
    keywords = keywords or (["car", "dog", "chair", "cup"] * num_rows)[:num_rows]
    tokens = ReferenceTokenizer(tokenizer)
    conversations = [with_image_markers(conversation(IMAGE_PREFIX + q, a)) for q, a in zip(questions, answers)]
    encoded = tokens.tokenize_conversations(conversations, max_length)

    size = config.sam_image_size
    images_sam = torch.zeros(len(image_sizes), 3, size, size)
    resize, masks = [], []
    for index, ((height, width), rows) in enumerate(zip(image_sizes, rows_per_image)):
        resized = sam_resize_shape(height, width, size)
        # Like the real SAM input: the image in the top-left corner, zero padding elsewhere.
        images_sam[index, :, :resized[0], :resized[1]] = torch.randn(3, *resized, generator=generator)
        resize.append(resized)
        mask = torch.randint(0, 2, (rows, height, width), generator=generator).to(torch.uint8)
        mask[:, : height // 8] = 255
        masks.append(mask)
    offsets = [0]
    for rows in rows_per_image:
        offsets.append(offsets[-1] + rows)
    return {
        "images_sam": images_sam,
        "images_clip": torch.randn(len(image_sizes), 3, config.clip_image_size, config.clip_image_size,
                                   generator=generator),
        **encoded,
        "offsets": torch.tensor(offsets),
        "masks": masks,
        "resize": resize,
        "original_size": list(image_sizes),
        "keyword_ids": tokens.keyword_target_ids(keywords),
    }
