"""Masks, answers and keywords from a KeySeg model for evaluation and prediction.

Reference protocol (default): every query is answered with the teacher-forced
"[SEG]. [KEY]." (reference-semantics section 5); its mask is the [SEG] prompt's logits > 0.
The keyword the model would say is read by continuing greedily after "[KEY]".
Free generation (`generate=True`): the answer is generated greedily, then run through the
model again (teacher-forced on its own answer) to get the masks of its [SEG] tokens; a
query whose answer has no [SEG] gets an empty mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from keyseg.model.tokens import EVAL_ANSWER, build_prompt
from keyseg.training.batches import model_inputs

KEY_TOKEN = "[KEY]"
SEG_TOKEN = "[SEG]"


@dataclass
class RowPrediction:
    image_index: int  # position of the image in the batch
    target_index: int  # query row within its image (eval mode: one row per target)
    mask: torch.Tensor  # bool (H, W)
    answer: str  # the answer the mask came from (teacher-forced or generated)
    keyword: str | None  # what the model says after [KEY]


def _row_images(offsets: torch.Tensor) -> list[tuple[int, int]]:
    pairs = []
    for image, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        pairs += [(image, index) for index in range(end - start)]
    return pairs


@torch.no_grad()
def greedy_continue(model, tokenizer, image_features: torch.Tensor, prefix: str, max_new_tokens: int,
                    stop_texts: tuple[str, ...] = ()) -> str:
    """Greedy continuation of one conversation prefix (with its image features), as text.

    One row at a time with a KV cache: rows have different lengths, and evaluation is
    dominated by the mask decoder and the prompt pass, not by these few tokens.
    """
    encoded = tokenizer([prefix], add_special_tokens=True, return_tensors="pt")
    input_ids = encoded["input_ids"].to(image_features.device)
    attention = torch.ones_like(input_ids)
    spliced = model.splice_image_features(input_ids, attention, None, image_features[None])
    llm = model.llm
    outputs = llm(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, use_cache=True)
    past, attention = outputs.past_key_values, spliced.attention_mask
    generated: list[int] = []
    eos = tokenizer.eos_token_id
    for _ in range(max_new_tokens):
        next_id = int(outputs.logits[0, -1].argmax())
        if next_id == eos:
            break
        generated.append(next_id)
        text = tokenizer.decode(generated, skip_special_tokens=False)
        if any(stop in text for stop in stop_texts):
            break
        attention = torch.cat([attention, attention.new_ones((1, 1))], dim=1)
        embeds = llm.get_input_embeddings()(torch.tensor([[next_id]], device=input_ids.device))
        outputs = llm(inputs_embeds=embeds, attention_mask=attention, past_key_values=past, use_cache=True)
        past = outputs.past_key_values
    return tokenizer.decode(generated, skip_special_tokens=False)


def keyword_after_key(text: str) -> str | None:
    """The words after the last [KEY] up to the next '.', special token or end."""
    if KEY_TOKEN not in text:
        return None
    tail = text.rsplit(KEY_TOKEN, 1)[1]
    for stop in (".", SEG_TOKEN, KEY_TOKEN, "</s>", "\n"):
        tail = tail.split(stop, 1)[0]
    tail = " ".join(tail.split())
    return tail or None


@torch.no_grad()
def predict_batch(model, tokenizer, batch: dict, max_length: int = 512, generate: bool = False,
                  decode_keywords: bool = True, max_new_tokens: int = 32) -> list[RowPrediction]:
    """One RowPrediction per query row of an eval-mode loader batch."""
    device = next(model.parameters()).device
    dtype = model.dtype
    rows = _row_images(batch["offsets"])
    image_features = None
    if generate or decode_keywords:
        image_features = model.encode_images_clip(batch["image_clip"].to(device=device, dtype=dtype))
    answers = list(batch["answers"])
    if generate:
        answers = [greedy_continue(model, tokenizer, image_features[image], build_prompt(question),
                                   max_new_tokens).strip() or EVAL_ANSWER
                   for (image, _), question in zip(rows, batch["questions"])]
    forced = dict(batch, answers=answers)
    has_seg = [SEG_TOKEN in answer for answer in answers]
    if not all(has_seg):
        # Rows without [SEG] get an empty mask; the model still needs one [SEG] to run them.
        forced["answers"] = [answer if ok else f"{answer} {SEG_TOKEN}." for answer, ok in zip(answers, has_seg)]
    inputs = model_inputs(forced, tokenizer, max_length, device, dtype)
    inputs.pop("masks")
    inputs.pop("labels")
    inputs.pop("keyword_ids")
    outputs = model(**inputs, inference=True)
    first_seg_of_row = {}
    counts_seen = [0] * len(outputs["pred_masks"])
    for position, row in enumerate(outputs["seg_rows"].tolist()):
        image = rows[row][0]
        if row not in first_seg_of_row:
            first_seg_of_row[row] = (image, counts_seen[image])
        counts_seen[image] += 1
    predictions = []
    for row, (image, target_index) in enumerate(rows):
        logits_image, seg_index = first_seg_of_row[row]
        mask = outputs["pred_masks"][logits_image][seg_index] > 0
        if not has_seg[row]:
            mask = torch.zeros_like(mask)
        keyword = keyword_after_key(answers[row])
        if keyword is None and decode_keywords and not generate:
            prefix = build_prompt(batch["questions"][row]) + " " + answers[row].rsplit(KEY_TOKEN, 1)[0] + KEY_TOKEN
            keyword = keyword_after_key(KEY_TOKEN + greedy_continue(model, tokenizer, image_features[image], prefix,
                                                                    max_new_tokens=6, stop_texts=(".",)))
        predictions.append(RowPrediction(image, target_index, mask.cpu(), answers[row], keyword))
    return predictions
