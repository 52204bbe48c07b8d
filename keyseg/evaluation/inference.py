"""Masks, answers and keywords from a KeySeg model for evaluation and prediction.

Reference protocol (default): every query is teacher-forced on the evaluation conversation
("... ASSISTANT: [SEG]. [KEY].</s>", docs/fidelity.md "Evaluation"); its mask is the [SEG]
prompt's logits > 0. Each query row is fused with its own [KEY] only, so a mask never
depends on the other queries of the batch. The keyword the model would say is read by
continuing greedily after "[KEY]".
Free generation (`generate=True`): the answer is generated greedily, then run through the
model again (teacher-forced on its own answer) to get the masks of its [SEG] tokens; a
query whose answer has no [SEG] gets an empty mask.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from keyseg.data.conversation import EVAL_ANSWER, conversation, generation_prompt, with_image_markers
from keyseg.model.config import image_patches
from keyseg.model.tokens import KEY_TOKEN, SEG_TOKEN, as_reference_tokenizer


@dataclass
class RowPrediction:
    image_index: int  # position of the image in the batch
    row_index: int  # query row within its image
    mask: torch.Tensor  # bool (H, W)
    answer: str  # the answer the mask came from (teacher-forced or generated)
    keyword: str | None  # what the model says after [KEY]
    prompt: str = ""  # the exact conversation text the mask came from
    seg_positions: list[int] = field(default_factory=list)  # token positions of [SEG] (image = 1 position)
    key_positions: list[int] = field(default_factory=list)  # token positions of [KEY]
    state_offset: int = 0  # the hidden state of a token at position p is read at p + state_offset


def _row_images(offsets: torch.Tensor) -> list[tuple[int, int]]:
    pairs = []
    for image, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        pairs += [(image, index) for index in range(end - start)]
    return pairs


@torch.no_grad()
def greedy_continue(model, tokens, image_features: torch.Tensor, prefix: str, max_new_tokens: int,
                    stop_texts: tuple[str, ...] = ()) -> str:
    """Greedy continuation of one conversation prefix (with its image features), as text.

    One row at a time with a KV cache: rows have different lengths, and evaluation is
    dominated by the mask decoder and the prompt pass, not by these few tokens.
    """
    input_ids = torch.tensor([tokens.encode_with_image(prefix)], device=image_features.device)
    attention = torch.ones_like(input_ids)
    spliced = model.splice_image_features(input_ids, attention, None, image_features[None])
    llm = model.llm
    outputs = llm(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, use_cache=True)
    past, attention = outputs.cache, spliced.attention_mask
    generated: list[int] = []
    eos = tokens.tokenizer.eos_token_id
    for _ in range(max_new_tokens):
        next_id = int(outputs.logits[0, -1].argmax())
        if next_id == eos:
            break
        generated.append(next_id)
        text = tokens.decode(generated)
        if any(stop in text for stop in stop_texts):
            break
        attention = torch.cat([attention, attention.new_ones((1, 1))], dim=1)
        embeds = llm.get_input_embeddings()(torch.tensor([[next_id]], device=input_ids.device))
        outputs = llm(inputs_embeds=embeds, attention_mask=attention, cache=past, use_cache=True)
        past = outputs.cache
    return tokens.decode(generated)


def keyword_after_key(text: str) -> str | None:
    """The words after the last [KEY] up to the next '.', special token or end."""
    if KEY_TOKEN not in text:
        return None
    tail = text.rsplit(KEY_TOKEN, 1)[1]
    for stop in (".", SEG_TOKEN, KEY_TOKEN, "</s>", "\n"):
        tail = tail.split(stop, 1)[0]
    tail = " ".join(tail.split())
    return tail or None


def readable_answer(text: str) -> str:
    """An answer as people read it: spaces collapsed, none before punctuation or after an
    opening bracket, the first letter upper-case ("sure , [SEG] ." -> "Sure, [SEG].").
    Only for showing and reporting: the model's own text stays as it was in the prompt."""
    text = " ".join(text.replace("</s>", " ").split())
    text = re.sub(r"\s+([,.!?;:)])", r"\1", text)
    text = re.sub(r"([(])\s+", r"\1", text)
    return text[:1].upper() + text[1:]


def answer_of(conversation_text: str) -> str:
    """The assistant's part of a one-round conversation, without the closing </s>."""
    return conversation_text.rsplit(" ASSISTANT: ", 1)[-1].removesuffix("</s>")


@torch.no_grad()
def predict_batch(model, tokenizer, batch: dict, generate: bool = False,
                  decode_keywords: bool = True, max_new_tokens: int = 32) -> list[RowPrediction]:
    """One RowPrediction per query row of an eval-mode loader batch.

    Each image is encoded alone and each query runs in its own forward, unpadded: a query's
    mask depends on its image and its text only, never on which other images or queries
    share its batch or how the samples are split over processes.
    """
    tokens = as_reference_tokenizer(tokenizer)
    device = next(model.parameters()).device
    dtype = model.dtype
    rows = _row_images(batch["offsets"])
    images_sam = batch["image_sam"].to(device=device, dtype=dtype)
    images_clip = batch["image_clip"].to(device=device, dtype=dtype)
    clip_features = [model.encode_images_clip(images_clip[i:i + 1]) for i in range(len(images_clip))]
    sam_embeddings = [model.encode_images_sam(images_sam[i:i + 1]) for i in range(len(images_sam))]
    state_offset = image_patches(model.config) - 2  # P patches replace 1 placeholder; the state before
    predictions = []
    for row, (image, row_index) in enumerate(rows):
        question, has_seg = batch["questions"][row], True
        text = batch["conversations"][row]
        if generate:
            answer = greedy_continue(model, tokens, clip_features[image][0], generation_prompt(question),
                                     max_new_tokens).strip() or EVAL_ANSWER
            has_seg = SEG_TOKEN in answer
            # A row without [SEG] gets an empty mask; the model still needs one [SEG] to run it.
            text = with_image_markers(conversation(question, answer if has_seg else f"{answer} {SEG_TOKEN}."))
        # Not cut: LISA's evaluation keeps the whole query (the release's evaluation cuts
        # at 512 - 255 and then fails on a query that lost its [SEG]; docs/fidelity.md D8).
        encoded = tokens.tokenize_conversations([text], None)
        input_ids = encoded["input_ids"].to(device)
        outputs = model(images_sam[image:image + 1], images_clip[image:image + 1], input_ids,
                        encoded["attention_mask"].to(device), resize=[batch["resize"][image]],
                        original_size=[batch["original_size"][image]], inference=True,
                        image_features=clip_features[image], sam_embeddings=sam_embeddings[image])
        mask = outputs["pred_masks"][0][0] > 0  # the first [SEG] of the answer
        if not has_seg:
            mask = torch.zeros_like(mask)
        answer = answer_of(text) if has_seg else answer  # what the model said, not the [SEG] added above
        keyword = keyword_after_key(answer)
        if keyword is None and decode_keywords and not generate and KEY_TOKEN in answer:
            prefix = generation_prompt(question) + " " + answer.rsplit(KEY_TOKEN, 1)[0].rstrip() + KEY_TOKEN
            keyword = keyword_after_key(KEY_TOKEN + greedy_continue(model, tokens, clip_features[image][0], prefix,
                                                                    max_new_tokens=6, stop_texts=(".",)))
        ids = input_ids[0].cpu()
        predictions.append(RowPrediction(
            image, row_index, mask.cpu(), answer, keyword, prompt=text,
            seg_positions=(ids == model.config.seg_token_id).nonzero()[:, 0].tolist(),
            key_positions=(ids == model.config.key_token_id).nonzero()[:, 0].tolist(),
            state_offset=state_offset))
    return predictions


def is_sentence_query(query: str) -> bool:
    """Reasoning queries are questions or full sentences; referring phrases are short."""
    return query.strip().endswith("?") or len(query.split()) > 8


@dataclass
class Segmentation:
    """One query's result for people: the mask, the answer as read, the keyword."""

    mask: np.ndarray  # bool (H, W), the image's size
    answer: str  # readable_answer of what the model said
    keyword: str | None
    prompt: str  # the exact conversation the mask came from
    seconds: float

    def save(self, rgb: np.ndarray, query: str, mask_path, overlay_path) -> None:
        """The mask as a 0/255 PNG and the overlay with query, answer and keyword in its banner."""
        from keyseg.io import atomic_write_bytes
        from keyseg.masks.overlay import overlay_png, prediction_overlay
        from keyseg.masks.png import encode_png

        atomic_write_bytes(mask_path, encode_png(self.mask.astype(np.uint8) * 255))
        atomic_write_bytes(overlay_path, overlay_png(prediction_overlay(rgb, self.mask, query, self.answer,
                                                                        self.keyword)))


class Segmenter:
    """A loaded model that answers one image and one query at a time (`keyseg predict`,
    `chat` and `serve`). Calls are serialised by a lock, so concurrent requests of a server
    never share a forward pass or mix their results."""

    def __init__(self, model, tokenizer, generate: bool = True):
        from keyseg.data.conversation import ConversationConfig
        from keyseg.data.transforms import ClipInput

        self.model, self.tokenizer, self.generate = model, tokenizer, generate
        self.clip = ClipInput(model.config.clip_image_size)
        self.conversation = ConversationConfig()
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray, query: str) -> Segmentation:
        """`rgb`: uint8 (H, W, 3). ValueError for an image the model cannot take (a sliver)."""
        from keyseg.data.conversation import eval_query
        from keyseg.data.transforms import sam_input

        started = time.perf_counter()
        image_sam, resize = sam_input(rgb, self.model.config.sam_image_size)
        image_clip = self.clip(rgb)
        built = eval_query(query, is_sentence_query(query), self.conversation)
        height, width = rgb.shape[:2]
        batch = {"image_sam": image_sam[None], "image_clip": image_clip[None], "questions": [built.question],
                 "conversations": [built.conversation], "keywords": [None], "offsets": torch.tensor([0, 1]),
                 "masks": [torch.zeros((1, height, width), dtype=torch.uint8)], "resize": [resize],
                 "original_size": [(height, width)]}
        with self._lock:
            (prediction,) = predict_batch(self.model, self.tokenizer, batch, generate=self.generate)
        return Segmentation(prediction.mask.numpy(), readable_answer(prediction.answer), prediction.keyword,
                            prediction.prompt, time.perf_counter() - started)
