"""An independent implementation of the reference's PACO-LVIS / PASCAL-Part rules, for the tests.

It follows LISA utils/sem_seg_dataset.py step by step with pycocotools' COCO, as the
reference does (init_paco_lvis :88-109, init_pascal_part :112-124, the `__getitem__`
branch :192-236 and :306-313), and shares no code with `keyseg`. For each image the
reference can draw it gives the image path, every annotation's class name (a string or an
(object, part) tuple) and its `annToMask` mask; an image the reference redraws on
(no annotations) is left out, and an annotation whose `annToMask` raises gets mask None.
"""

from __future__ import annotations

import contextlib
import io
import os

from pycocotools.coco import COCO

PACO_JSON = os.path.join("vlpart", "paco", "annotations", "paco_lvis_v1_train.json")
PASCAL_JSON = os.path.join("vlpart", "pascal_part", "train.json")


def _coco(path: str) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
        return COCO(path)


def paco_class_map(coco: COCO) -> dict:
    class_map = {}
    for cat in coco.loadCats(coco.getCatIds()):
        cat_split = cat["name"].strip().split(":")
        if len(cat_split) == 1:
            name = cat_split[0].split("_(")[0]
        else:
            assert len(cat_split) == 2
            obj, part = cat_split
            name = (obj.split("_(")[0], part.split("_(")[0])
        class_map[cat["id"]] = name
    return class_map


def pascal_class_map(coco: COCO) -> dict:
    class_map = {}
    for cat in coco.loadCats(coco.getCatIds()):
        cat_main, cat_part = cat["name"].strip().split(":")
        class_map[cat["id"]] = (cat_main, cat_part)
    return class_map


def reference_images(base_image_dir: str, ds: str) -> list[dict]:
    """[{"id", "image_path", "names", "masks"}] in getImgIds order, images with annotations only."""
    if ds == "paco_lvis":
        coco = _coco(os.path.join(base_image_dir, PACO_JSON))
        class_map = paco_class_map(coco)
    else:
        coco = _coco(os.path.join(base_image_dir, PASCAL_JSON))
        class_map = pascal_class_map(coco)
    out = []
    for img_id in coco.getImgIds():
        image_info = coco.loadImgs([img_id])[0]
        file_name = image_info["file_name"]
        if ds == "pascal_part":
            file_name = os.path.join("VOCdevkit", "VOC2010", "JPEGImages", file_name)
            image_path = os.path.join(base_image_dir, "vlpart", ds, file_name)
        else:
            image_path = os.path.join(base_image_dir, "coco", file_name)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"]))
        if len(anns) == 0:
            continue  # the reference redraws
        masks = []
        for ann in anns:
            try:
                masks.append(coco.annToMask(ann))
            except Exception:
                masks.append(None)
        out.append({"id": img_id, "image_path": image_path,
                    "names": [class_map[ann["category_id"]] for ann in anns], "masks": masks})
    return out


def reference_phrase(name, draw: float) -> str:
    """The class name as the reference phrases it, given its `random.random()` draw."""
    if isinstance(name, tuple):
        obj, part = name
        if draw < 0.5:
            return obj + " " + part
        return "the {} of the {}".format(part, obj)
    return name
