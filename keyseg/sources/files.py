"""Where an input file named by a data file may be read from.

An image path comes from a file somebody else wrote (instances.json's `file_name`, a
manifest's `image`). It is read only if it stays inside the folder its source keeps
images in, symbolic links resolved: an absolute path, a `..` or a link that leads out is
an error for that record, never a read. The folder itself may be a link (COCO images are
often linked in from a shared copy), so each known folder is its own root.
"""

from __future__ import annotations

import os
from pathlib import Path

from keyseg.paths import confined_path
from keyseg.sources.parts import PASCAL_PART
from keyseg.sources.reasonseg import REASONSEG_ROOT
from keyseg.sources.refer import COCO_IMAGE_DIR, SAIAPR_IMAGE_DIR
from keyseg.sources.semseg import ADE20K_IMAGES, COCOSTUFF_IMAGES, MAPILLARY_IMAGES

# The deepest folder first: a path under it is confined to it. `coco/train2017` holds the
# COCO-Stuff, PACO-LVIS and LLaVA images; `coco` catches a PACO `file_name` in another
# COCO folder.
IMAGE_ROOTS = (
    COCO_IMAGE_DIR.as_posix(),  # refer_seg/images/mscoco/images/train2014
    PASCAL_PART.image_dir,  # vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages
    SAIAPR_IMAGE_DIR.as_posix(),
    ADE20K_IMAGES,  # ade20k/images/training
    MAPILLARY_IMAGES,  # mapillary/training/images
    COCOSTUFF_IMAGES,  # coco/train2017
    REASONSEG_ROOT.as_posix(),
    "coco",
)


def data_file(data_dir: str | os.PathLike, relative: str, source: str | os.PathLike | None = None) -> Path:
    """`data_dir / relative`, confined to its image folder (or to `data_dir` for a path
    outside the known folders). `source` names the file the path came from; a path that
    escapes raises `keyseg.errors.DataError` naming it."""
    for root in IMAGE_ROOTS:
        if relative.startswith(root + "/"):
            return confined_path(Path(data_dir) / root, relative[len(root) + 1:], source)
    return confined_path(data_dir, relative, source)
