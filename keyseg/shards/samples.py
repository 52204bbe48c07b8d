"""One shard sample per image: the original JPEG bytes and a JSON with every target.

Sample layout (WebDataset: members `<key>.jpg` and `<key>.json`; keys have no dots):

    jpg   the original image file, byte for byte (never re-encoded)
    json  {"id", "source", "split", "image", "width", "height", "targets": [
             {"texts": [str], "is_sentence": bool, "keyword": str | null,
              "explanatory": str | null, "explanatory_query": str | null,
              "ann_id": int | null, "ref_id": int | null,
              "mask": {"target": RLE, "ignore": RLE}}]}

RLE is COCO's compressed run-length encoding ({"size": [h, w], "counts": str}), lossless:
the target region (value 1) and the ignore region (value 255) each get their own, and
`decode_mask` gives back the prepared 0/1/255 mask exactly. Every sample has the same
fields (nulls where empty). Hugging Face `datasets` infers its schema from the first few
samples, so a load that mixes sources (ReasonSeg's null `ann_id`, refCOCO's integers)
should pass `features=hf_features()`; a single source loads without it.
"""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as coco_mask

from keyseg.masks.raster import IGNORE_VALUE, TARGET_VALUE

SAMPLE_FORMAT_VERSION = 1


def encode_region(region: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_region(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})


def encode_mask(mask: np.ndarray) -> dict:
    """A 0/1/255 mask as two RLEs; any other value is a bug upstream, so refuse it."""
    values = np.unique(mask)
    if not set(values.tolist()) <= {0, TARGET_VALUE, IGNORE_VALUE}:
        raise ValueError(f"mask values {values.tolist()} are not 0/1/255")
    return {"target": encode_region(mask == TARGET_VALUE), "ignore": encode_region(mask == IGNORE_VALUE)}


def decode_mask(encoded: dict) -> np.ndarray:
    """uint8 (h, w): 0 background, 1 target, 255 ignore."""
    target, ignore = decode_region(encoded["target"]), decode_region(encoded["ignore"])
    if target.shape != ignore.shape:
        raise ValueError(f"target RLE {target.shape} and ignore RLE {ignore.shape} differ in size")
    mask = target * np.uint8(TARGET_VALUE)
    mask[ignore.astype(bool)] = IGNORE_VALUE
    return mask


def build_sample_json(record: dict, masks: list[np.ndarray], keywords: list[str | None]) -> dict:
    """The json member of a sample, from a prepared manifest record and its decoded masks."""
    targets = []
    for target, mask, keyword in zip(record["targets"], masks, keywords):
        explanatory = target.get("explanatory") or None
        targets.append({
            "texts": list(target["texts"]),
            "is_sentence": bool(target["is_sentence"]),
            "keyword": keyword,
            "explanatory": explanatory["outputs"] if explanatory else None,
            "explanatory_query": explanatory["query"] if explanatory else None,
            "ann_id": target.get("ann_id"),
            "ref_id": target.get("ref_id"),
            "mask": encode_mask(mask),
        })
    return {"id": record["id"], "source": record["source"], "split": record["split"], "image": record["image"],
            "width": int(record["width"]), "height": int(record["height"]), "targets": targets}


def sample_json_bytes(sample: dict) -> bytes:
    # Sorted keys and no whitespace: the same sample always gives the same bytes.
    return json.dumps(sample, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def hf_features():
    """The Hugging Face `datasets` schema of a shard sample (`load_dataset("webdataset",
    ..., features=hf_features())`), so sources with nulls in different fields load together."""
    import datasets
    from datasets import Value

    rle = {"size": datasets.List(Value("int64")), "counts": Value("string")}
    target = {"texts": datasets.List(Value("string")), "is_sentence": Value("bool"), "keyword": Value("string"),
              "explanatory": Value("string"), "explanatory_query": Value("string"), "ann_id": Value("int64"),
              "ref_id": Value("int64"), "mask": {"target": rle, "ignore": rle}}
    document = {"id": Value("string"), "source": Value("string"), "split": Value("string"),
                "image": Value("string"), "width": Value("int64"), "height": Value("int64"),
                "targets": datasets.List(target)}
    return datasets.Features({"jpg": datasets.Image(), "json": document, "__key__": Value("string"),
                              "__url__": Value("string")})
