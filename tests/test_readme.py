"""The README's Python example runs as written (on a tiny exported model and a small image)."""

import re
from pathlib import Path

import cv2
import numpy as np

from tiny_export import write_tiny_export

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_python_example_runs(tmp_path, monkeypatch):
    from keyseg.data.conversation import template_texts

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    export = write_tiny_export(tmp_path / "runs" / "demo" / "train" / "export",
                               [*template_texts(), "the red circle"], ["reasonseg:train"])
    assert export.is_dir()
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    cv2.circle(image, (30, 24), 12, (0, 0, 255), -1)
    cv2.imwrite(str(tmp_path / "my.jpg"), image)
    monkeypatch.chdir(tmp_path)  # the example's relative paths
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    prediction = namespace["result"].predictions[0]
    assert Path(prediction["mask"]).is_file() and Path(prediction["overlay"]).is_file()
    assert namespace["model"].config.seg_token_id is not None
