"""`keyseg predict`: one image and a query (or a JSONL batch of them) -> answer, keyword,
mask PNG and overlay PNG."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from keyseg.io import atomic_write_bytes, atomic_write_jsonl


@dataclass
class PredictConfig:
    model: Path  # exported model or training checkpoint
    out: Path  # folder for masks, overlays and predictions.jsonl
    image: Path | None = None
    query: str | None = None
    batch: Path | None = None  # JSONL of {"image": path, "query": str, "id": optional}
    generate: bool = True  # free generation (else the teacher-forced "[SEG]. [KEY].")
    max_length: int = 512


def _requests(config: PredictConfig) -> list[dict]:
    if config.batch is not None:
        lines = [json.loads(line) for line in Path(config.batch).read_text().splitlines() if line.strip()]
        for number, line in enumerate(lines, start=1):
            if "image" not in line or "query" not in line:
                raise ValueError(f"{config.batch}:{number}: each line needs image and query")
        return [{"id": line.get("id") or Path(line["image"]).stem, **line} for line in lines]
    if config.image is None or config.query is None:
        raise ValueError("give --image and --query, or --batch FILE.jsonl")
    return [{"id": Path(config.image).stem, "image": str(config.image), "query": config.query}]


def _is_sentence(query: str) -> bool:
    # Reasoning queries are questions or full sentences; referring phrases are short.
    return query.strip().endswith("?") or len(query.split()) > 8


def run(config: PredictConfig, console: Console | None = None) -> list[dict]:
    console = console or Console(stderr=True)
    from keyseg.data.conversation import ConversationConfig, eval_pair
    from keyseg.data.transforms import ClipInput, decode_rgb, sam_input
    from keyseg.evaluation.inference import predict_batch
    from keyseg.masks.overlay import overlay_panel
    from keyseg.masks.png import encode_png
    from keyseg.model.pretrained import load_for_evaluation

    requests = _requests(config)
    model, tokenizer, _ = load_for_evaluation(config.model)
    clip = ClipInput(model.config.clip_image_size)
    conversation = ConversationConfig()
    out = Path(config.out)
    results = []
    for request in requests:
        image_path = Path(request["image"])
        try:
            rgb = decode_rgb(image_path.read_bytes())
        except (OSError, ValueError) as error:
            raise ValueError(f"{image_path}: cannot read the image ({error})") from None
        image_sam, resize = sam_input(rgb, model.config.sam_image_size)
        question, answer = eval_pair(request["query"], _is_sentence(request["query"]), conversation)
        height, width = rgb.shape[:2]
        batch = {"image_sam": image_sam[None], "image_clip": clip(rgb)[None], "questions": [question],
                 "answers": [answer], "keywords": [None], "offsets": torch.tensor([0, 1]),
                 "masks": [torch.zeros((1, height, width), dtype=torch.uint8)], "resize": [resize],
                 "original_size": [(height, width)]}
        (prediction,) = predict_batch(model, tokenizer, batch, config.max_length, generate=config.generate)
        mask = prediction.mask.numpy()
        mask_path = out / f"{request['id']}_mask.png"
        overlay_path = out / f"{request['id']}_overlay.png"
        atomic_write_bytes(mask_path, encode_png(mask.astype(np.uint8) * 255))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        atomic_write_bytes(overlay_path, encode_png(overlay_panel(bgr, mask.astype(np.uint8), [], request["query"]),
                                                    params=[]))
        result = {"id": request["id"], "image": str(image_path), "query": request["query"],
                  "answer": prediction.answer, "keyword": prediction.keyword, "mask": str(mask_path),
                  "overlay": str(overlay_path), "foreground_pixels": int(mask.sum())}
        results.append(result)
        console.print(f"[bold]{request['id']}[/]: {request['query']}\n  answer: {prediction.answer}\n"
                      f"  keyword: {prediction.keyword}\n  mask: {mask_path} ({result['foreground_pixels']} px)")
    atomic_write_jsonl(out / "predictions.jsonl", results)
    return results
