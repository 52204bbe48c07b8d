"""Build tiny data sets in the native ReasonSeg and REFER layouts, file by file.

Tests use these to put exactly the good and bad inputs they need on disk.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

REASONSEG = Path("reason_seg") / "ReasonSeg"
COCO_IMAGES = Path("refer_seg") / "images" / "mscoco" / "images" / "train2014"


def jpeg(width: int, height: int, orientation: int | None = None, seed: int = 0) -> bytes:
    """A JPEG that displays as width x height; with orientation 5-8 the stored pixels are transposed."""
    stored = (height, width) if orientation not in (5, 6, 7, 8) else (width, height)
    pixels = np.random.default_rng(seed).integers(0, 255, (*stored, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85, **kwargs)
    return buffer.getvalue()


def square(x, y, size, label="target"):
    return {"label": label, "points": [[x, y], [x + size, y], [x + size, y + size], [x, y + size]],
            "group_id": None, "shape_type": "polygon", "flags": {}}


def write_reasonseg(root: Path, split: str, name: str, shapes: list[dict], width=64, height=48,
                    orientation=None, texts=("the red square",), is_sentence=False, encoding="utf-8",
                    extra: dict | None = None) -> tuple[Path, Path]:
    folder = root / REASONSEG / split
    folder.mkdir(parents=True, exist_ok=True)
    image_path, json_path = folder / f"{name}.jpg", folder / f"{name}.json"
    image_path.write_bytes(jpeg(width, height, orientation, seed=len(name)))
    document = {"version": "4.5.6", "flags": {}, "shapes": shapes, "imagePath": f"{name}.jpg", "imageData": None,
                "imageHeight": height, "imageWidth": width, "text": list(texts), "is_sentence": is_sentence,
                **(extra or {})}
    json_path.write_bytes(json.dumps(document, ensure_ascii=False).encode(encoding))
    return json_path, image_path


def write_explanatory(root: Path, records: list[dict]) -> None:
    folder = root / REASONSEG / "explanatory"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(records), encoding="utf-8")


def write_refer(root: Path, dataset: str, split_by: str, images: list[dict], annotations: list[dict],
                refs: list[dict], write_images: bool = True) -> None:
    folder = root / "refer_seg" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                       "categories": [{"id": 1, "name": "shape"}]}))
    (folder / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
    if write_images:
        (root / COCO_IMAGES).mkdir(parents=True, exist_ok=True)
        for image in images:
            (root / COCO_IMAGES / image["file_name"]).write_bytes(jpeg(image["width"], image["height"], seed=image["id"]))


def coco_image(image_id: int, width=60, height=40) -> dict:
    return {"id": image_id, "file_name": f"COCO_train2014_{image_id:012d}.jpg", "width": width, "height": height}


def rle_of_box(x, y, w, h, width, height) -> dict:
    mask = np.zeros((height, width), np.uint8)
    mask[y:y + h, x:x + w] = 1
    rle = coco_mask.encode(np.asfortranarray(mask))
    return {"size": [height, width], "counts": rle["counts"].decode()}


def ref(ref_id: int, ann_id: int, image_id: int, split: str, sents=("red box",)) -> dict:
    return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "category_id": 1,
            "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg", "sent_ids": list(range(len(sents))),
            "sentences": [{"sent": s, "raw": s, "tokens": s.split(), "sent_id": i} for i, s in enumerate(sents)]}
