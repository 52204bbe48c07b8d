"""An independent implementation of the reference's label-map rules, written for the tests.

It follows LISA utils/sem_seg_dataset.py step by step on files, the way the reference
does (the init_* path lists built by string replacement on the full path, PIL to read
the label file, the per-source value rules, `np.unique` for the classes present), and
shares no code with `keyseg`. Only the random sampling is left out: every present class
is returned, in the reference's order.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
from PIL import Image

IGNORE_LABEL = 255


def init_ade20k(base_image_dir, classes_json):
    with open(classes_json, "r") as f:
        classes = np.array(json.load(f))
    names = sorted(os.listdir(os.path.join(base_image_dir, "ade20k/images", "training")))
    image_ids = [x[:-4] for x in names if x.endswith(".jpg")]
    images = [os.path.join(base_image_dir, "ade20k", "images", "training", "{}.jpg".format(i)) for i in image_ids]
    labels = [x.replace(".jpg", ".png").replace("images", "annotations") for x in images]
    return classes, images, labels


def init_cocostuff(base_image_dir, classes_txt):
    classes = []
    with open(classes_txt) as f:
        for line in f.readlines()[1:]:
            classes.append(line.strip().split(": ")[-1])
    classes = np.array(classes)
    labels = glob.glob(os.path.join(base_image_dir, "cocostuff", "train2017", "*.png"))
    images = [x.replace(".png", ".jpg").replace("cocostuff", "coco") for x in labels]
    return classes, images, labels


def init_mapillary(base_image_dir):
    root = os.path.join(base_image_dir, "mapillary")
    with open(os.path.join(root, "config_v2.0.json")) as f:
        config = json.load(f)["labels"]
    classes = np.array([x["readable"].lower() for x in config])
    labels = sorted(glob.glob(os.path.join(root, "training", "v2.0", "labels", "*.png")))
    images = [x.replace(".png", ".jpg").replace("v2.0/labels", "images") for x in labels]
    return classes, images, labels


def reference_label(ds: str, label_path, classes: np.ndarray) -> np.ndarray:
    """The label array after the reference's per-source rules."""
    label = np.array(Image.open(label_path))
    if ds == "ade20k":
        label[label == 0] = 255
        label -= 1
        label[label == 254] = 255
    elif ds == "cocostuff":
        class2index = {c: i for i, c in enumerate(classes)}
        for c, i in class2index.items():
            if "-" in c:
                label[label == i] = 255
    return label


def reference_classes(label: np.ndarray, classes: np.ndarray) -> tuple[list[int], list[str]]:
    """(unique labels without 255, their class names): raises IndexError as the reference."""
    unique_label = np.unique(label).tolist()
    if 255 in unique_label:
        unique_label.remove(255)
    return unique_label, [str(classes[class_id]) for class_id in unique_label]


def reference_masks(label: np.ndarray, classes: np.ndarray, sampled: list[str]) -> list[np.ndarray]:
    """One bool mask per sampled class name: the label equal to the name's first index."""
    return [label.astype(np.int64) == classes.tolist().index(name) for name in sampled]
