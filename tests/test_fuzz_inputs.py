"""Fuzzing `keyseg prepare` with hostile variants of the demo data set (part 1: raw data sets).

Each round copies a small demo data dir (ReasonSeg LabelMe JSON + JPEG pairs, refCOCO
instances.json + refs(unc).p + images), applies a handful of seeded mutations (dropped
keys, wrong types, huge or negative or NaN numbers, text that is not UTF-8, truncated
files, paths with `..` or absolute, decompression-bomb sizes, a pickle that would run
code) and runs `pipelines.prepare.run` in-process. The properties, every round:

- prepare returns: no exception, whatever the input;
- every record nobody touched is in its manifest (ReasonSeg images; refCOCO refs, as a
  target of their image's record);
- every touched record is either in a manifest or named by an error row (counted in the
  report's summary);
- every manifest record fits the manifest schema and its masks exist;
- the pickle payload's marker file never appears.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from keyseg.formats.manifest import check_record
from keyseg.sources.records import record_id
from pipelines import demo_data
from pipelines.prepare import PrepareConfig, run

ROUNDS = 36
MUTATIONS_PER_ROUND = 8
REASONSEG = Path("reason_seg/ReasonSeg")
REFCOCO = Path("refer_seg/refcoco")
COCO_IMAGES = "refer_seg/images/mscoco/images/train2014"

# Wrong types and hostile numbers, for any field.
VALUES = [None, [], ["x"], "x", {}, 10**30, -1, float("nan"), float("inf"), 1.5, True, "\ud800", [[[[]]]], 10**400]
HOSTILE_PATHS = ["/etc/passwd", "../../../../../../outside.jpg", "a/../../../../../../../outside.jpg", "[/]x.jpg",
                 "..", ""]


def bomb_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buffer, "JPEG", quality=50)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2
    return bytes(data)


class Payload:
    """Unpickling this with plain pickle runs a shell command that creates the marker."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz_base")
    demo_data.run(demo_data.DemoDataConfig(out=root / "data", images=8, width=64, height=48))
    return root / "data"


@dataclass
class Round:
    """One mutated copy of the data dir and what was done to it."""

    base: Path
    data: Path
    rng: random.Random
    refs: list
    instances: dict
    reasonseg: list[tuple[str, str]]  # (split, name) of the unmutated data set
    touched_reasonseg: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # -> evidence
    touched_refs: dict[int, list[str]] = field(default_factory=dict)  # position in refs -> evidence
    extra_evidence: list[list[str]] = field(default_factory=list)  # new hostile records, each must be reported
    py2_markers: list[str] = field(default_factory=list)
    refer_file_broken: bool = False

    # -- ReasonSeg --------------------------------------------------------------------------------

    def reasonseg_record(self):
        split, name = self.rng.choice(self.reasonseg)
        folder = self.data / REASONSEG / split
        evidence = [str(REASONSEG / split / f"{name}.json"), str(REASONSEG / split / f"{name}.jpg")]
        self.touched_reasonseg.setdefault((split, name), []).extend(evidence)
        return folder / f"{name}.json", folder / f"{name}.jpg"

    def mutate_labelme(self):
        json_path, image_path = self.reasonseg_record()
        if not json_path.exists() or json_path.is_symlink():
            return
        rng = self.rng
        kind = rng.randrange(12)
        raw = json_path.read_bytes()
        if kind == 0 and raw:
            json_path.write_bytes(raw[: rng.randrange(len(raw))])  # truncated
            return
        if kind == 1:
            at = rng.randrange(len(raw) + 1)
            json_path.write_bytes(raw[:at] + b"\x81\xff" + raw[at:])  # neither UTF-8 nor cp1252
            return
        if kind == 2:
            json_path.write_bytes(b"[" * 100000)
            return
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):
            return  # an earlier mutation of this round broke it already
        if not isinstance(document, dict):
            return
        shapes = document.get("shapes")
        shape = rng.choice(shapes) if isinstance(shapes, list) and shapes else None
        points = shape.get("points") if isinstance(shape, dict) else None
        if kind == 3:
            document.pop(rng.choice(["text", "is_sentence", "shapes"]), None)
        elif kind == 4:
            document[rng.choice(["text", "is_sentence", "shapes"])] = rng.choice(VALUES)
        elif kind == 5:
            document["text"] = [rng.choice(VALUES), "fine"]
        elif kind == 6 and isinstance(shape, dict):
            shape.pop(rng.choice(["label", "points"]), None)
        elif kind == 7 and isinstance(shape, dict):
            shape[rng.choice(["label", "points"])] = rng.choice(VALUES)
        elif kind == 8 and isinstance(points, list) and points and isinstance(points[0], list) and len(points[0]) == 2:
            points[0][rng.randrange(2)] = rng.choice([*VALUES, 1e6, -1e6, 3e9, 1e300, -(2**31)])
        elif kind == 9 and isinstance(points, list) and points:
            points[rng.randrange(len(points))] = rng.choice(VALUES)
        elif kind == 10 and isinstance(shapes, list):
            shapes.append(rng.choice(VALUES))
        else:
            document["text"] = ["\ud800 broken"]
        json_path.write_text(json.dumps(document))

    def mutate_reasonseg_files(self, outside: Path):
        json_path, image_path = self.reasonseg_record()
        for path in (json_path, image_path):
            if path.is_symlink():  # an earlier mutation's link: never write through it
                path.unlink()
        kind = self.rng.randrange(7)
        if kind == 0:
            image_path.write_bytes(bomb_jpeg())
        elif kind == 1 and image_path.exists():
            image_path.write_bytes(image_path.read_bytes()[: self.rng.randrange(1, 400)])
        elif kind == 2:
            image_path.write_bytes(os.urandom(64))
        elif kind == 3:
            self.rng.choice([json_path, image_path]).unlink(missing_ok=True)
        elif kind == 4:
            image_path.unlink(missing_ok=True)
            image_path.symlink_to(outside / "outside.jpg")
        elif kind == 5:
            json_path.unlink(missing_ok=True)
            json_path.symlink_to(outside / "outside.json")
        else:
            image_path.write_bytes(b"")

    def add_undecodable_name(self):
        split = self.rng.choice(["train", "val", "test"])
        folder = os.fsencode(self.data / REASONSEG / split)
        stem = b"fuzz\xff%d" % self.rng.randrange(1000)
        source = self.base / REASONSEG / split / self.rng.choice([n for s, n in self.reasonseg if s == split])
        for extension in (".json", ".jpg"):
            shutil.copyfile(f"{source}{extension}", os.path.join(folder, stem + extension.encode()))
        self.extra_evidence.append([stem.decode("utf-8", "backslashreplace")])

    def mutate_explanatory(self):
        path = self.data / REASONSEG / "explanatory" / "train.json"
        document = json.loads(path.read_bytes())
        position = self.rng.randrange(len(document))
        value = self.rng.choice(VALUES)
        kind = self.rng.randrange(3)
        if kind == 0:
            document[position] = value
        elif not isinstance(document[position], dict):
            return
        elif kind == 1:
            key = self.rng.choice(["image", "query", "outputs"])
            document[position][key] = value
            if isinstance(value, str) and value.isascii():
                return  # a string is a valid value: nothing to report
        else:
            document[position].pop(self.rng.choice(["image", "query", "outputs"]), None)
        path.write_text(json.dumps(document))
        # Explanations are optional: a bad one is reported and its record is still written.
        self.extra_evidence.append([str(REASONSEG / "explanatory" / "train.json")])

    # -- refCOCO ----------------------------------------------------------------------------------

    def touch_refs(self, evidence: list[str], **match):
        for position, ref in enumerate(self.refs):
            if isinstance(ref, dict) and all(ref.get(key) == value for key, value in match.items()):
                self.touched_refs.setdefault(position, []).extend(evidence)

    def mutate_ref(self):
        rng = self.rng
        position = rng.randrange(len(self.refs))
        ref = self.refs[position]
        if not isinstance(ref, dict):
            return
        self.touched_refs.setdefault(position, []).extend([f"position {position}", f"ref {ref.get('ref_id')}"])
        sentences = ref.get("sentences") if isinstance(ref.get("sentences"), list) else []
        first = sentences[0] if sentences and isinstance(sentences[0], dict) else None
        kind = rng.randrange(6)
        if kind == 0:
            self.refs[position] = rng.choice(VALUES)
        elif kind == 1:
            ref.pop(rng.choice(["ref_id", "ann_id", "image_id", "split", "sentences"]), None)
        elif kind == 2:
            ref[rng.choice(["ref_id", "ann_id", "image_id", "split", "sentences"])] = rng.choice(VALUES)
        elif kind == 3 and sentences:
            sentences[rng.randrange(len(sentences))] = rng.choice(VALUES)
        elif kind == 4 and first is not None:
            first["sent"] = rng.choice(VALUES)
        elif first is not None:
            # Text stored the Python 2 way with a byte that is not UTF-8 (patched after pickling).
            marker = f"PYTWOMARK{len(self.py2_markers):03d}"
            self.py2_markers.append(marker)
            first["sent"] = marker

    def mutate_image_entry(self, outside: Path):
        rng = self.rng
        entry = rng.choice(self.instances["images"])
        image_id, file_name = entry.get("id"), entry.get("file_name")
        kind = rng.randrange(5)
        if kind == 0:
            entry.pop(rng.choice(["id", "file_name", "height", "width"]), None)
        elif kind == 1:
            entry[rng.choice(["id", "file_name", "height", "width"])] = rng.choice(VALUES)
        elif kind == 2:
            entry["height"] = entry["width"] = 30000  # 900 megapixels: over the bound
        elif kind == 3:
            entry["file_name"] = rng.choice(HOSTILE_PATHS)
        elif isinstance(file_name, str):
            image = self.data / COCO_IMAGES / file_name
            if image.is_symlink():
                image.unlink()
            what = rng.randrange(4)
            if what == 0:
                image.write_bytes(bomb_jpeg())
            elif what == 1:
                image.write_bytes(os.urandom(100))
            elif what == 2:
                image.unlink(missing_ok=True)
            else:
                image.unlink(missing_ok=True)
                image.symlink_to(outside / "outside.jpg")
        evidence = [f"image {image_id}", f"{COCO_IMAGES}/{file_name}", str(file_name)]
        if isinstance(entry.get("file_name"), str):
            evidence.append(entry["file_name"])
        self.touch_refs(evidence, image_id=image_id)

    def mutate_annotation(self):
        rng = self.rng
        annotation = rng.choice(self.instances["annotations"])
        self.touch_refs([f"annotation {annotation.get('id')}"], ann_id=annotation.get("id"))
        kind = rng.randrange(6)
        if kind == 0:
            annotation["segmentation"] = rng.choice(VALUES)
        elif kind == 1:
            annotation["segmentation"] = {"size": [30000, 30000], "counts": "PY"}
        elif kind == 2:
            annotation["segmentation"] = [[0, 0, rng.choice([1e7, -1e9, 3e9]), 0, 0, 1e7]]
        elif kind == 3:
            annotation["segmentation"] = [[0, 0, 10, 0, rng.choice(VALUES), 10]]
        elif kind == 4:
            annotation["segmentation"] = {"size": [48, 64], "counts": rng.choice(["\ud800", "!!!!", [99999], 5])}
        else:
            annotation["id"] = rng.choice(VALUES)

    def break_refer_file(self, marker: Path):
        """One whole-file problem: refCOCO cannot be read at all (reported once)."""
        self.refer_file_broken = True
        kind = self.rng.randrange(5)
        refs_path, instances_path = self.data / REFCOCO / "refs(unc).p", self.data / REFCOCO / "instances.json"
        if kind == 0:
            self.refs.insert(self.rng.randrange(len(self.refs)), Payload(marker))
        elif kind == 1:
            self.refs = {"not": "a list"}
        elif kind == 2:
            self.instances = None  # written below as a truncated file
        elif kind == 3:
            self.instances = {"images": "nope", "annotations": []}
        else:
            self.instances = b"\xff not UTF-8"

    # -- writing ----------------------------------------------------------------------------------

    def write_refer_files(self):
        data = pickle.dumps(self.refs, protocol=2)
        for marker in self.py2_markers:
            encoded = marker.encode()
            py2 = b"U" + bytes([len(encoded)]) + encoded[:-1] + b"\xff"
            data = data.replace(b"X" + struct.pack("<I", len(encoded)) + encoded, py2)
        (self.data / REFCOCO / "refs(unc).p").write_bytes(data)
        if self.instances is None:  # truncated
            instances = (self.data / REFCOCO / "instances.json").read_bytes()[:500]
        elif isinstance(self.instances, bytes):
            instances = self.instances
        else:
            instances = json.dumps(self.instances).encode("utf-8")
        (self.data / REFCOCO / "instances.json").write_bytes(instances)


def make_round(base: Path, tmp: Path, seed: int) -> Round:
    data = tmp / "data"
    shutil.copytree(base, data, symlinks=True)
    outside = tmp / "outside"
    outside.mkdir()
    shutil.copyfile(next((base / COCO_IMAGES).glob("*.jpg")), outside / "outside.jpg")
    shutil.copyfile(next((base / REASONSEG / "val").glob("*.json")), outside / "outside.json")
    reasonseg = sorted((path.parent.name, path.stem) for path in (data / REASONSEG).glob("*/*.json")
                       if path.parent.name != "explanatory")
    refs = pickle.loads((data / REFCOCO / "refs(unc).p").read_bytes())  # our own demo file
    instances = json.loads((data / REFCOCO / "instances.json").read_bytes())
    this = Round(base=base, data=data, rng=random.Random(seed), refs=refs, instances=instances, reasonseg=reasonseg)
    mutations = [this.mutate_labelme, this.mutate_labelme, lambda: this.mutate_reasonseg_files(outside),
                 this.add_undecodable_name, this.mutate_explanatory, this.mutate_ref, this.mutate_ref,
                 lambda: this.mutate_image_entry(outside), this.mutate_annotation]
    for _ in range(MUTATIONS_PER_ROUND):
        this.rng.choice(mutations)()
    if seed % 6 == 5:
        this.break_refer_file(tmp / "pwned")
    this.write_refer_files()
    return this


def error_texts(out: Path) -> list[str]:
    report = json.loads((out / "prepare_report.json").read_text(encoding="utf-8"))
    errors = [row for row in report["issues"] if row["severity"] == "error"]
    assert report["summary"]["errors"] == len(errors)  # every error is counted
    return [f"{row['file']} {row['code']} {row['reason']}" for row in errors]


def named(evidence: list[str], texts: list[str]) -> bool:
    patterns = [re.compile(rf"(?<!\w){re.escape(item)}(?!\w)") for item in evidence if item]
    return any(pattern.search(text) for pattern in patterns for text in texts)


def manifest_records(out: Path) -> dict[str, list[dict]]:
    records = {}
    for manifest in out.glob("*/*/manifest.jsonl"):
        lines = manifest.read_text(encoding="utf-8").splitlines()
        records[f"{manifest.parent.parent.name}:{manifest.parent.name}"] = [json.loads(line) for line in lines]
    return records


@pytest.mark.parametrize("seed", range(ROUNDS))
def test_prepare_reports_or_accepts_every_mutated_record(base, tmp_path, seed):
    this = make_round(base, tmp_path, seed)
    out = tmp_path / "out"
    result = run(PrepareConfig(data_dir=this.data, out=out, workers=1, show_progress=False),
                 console=Console(file=io.StringIO(), width=200))  # the summary is printed (and escaped) too
    assert not (tmp_path / "pwned").exists()
    texts = error_texts(out)
    assert result.failed == len(texts)
    records = manifest_records(out)
    for name, split_records in records.items():
        for record in split_records:
            assert check_record(record) is None, (name, record)
            assert all((out / target["mask"]).is_file() for target in record["targets"])

    # ReasonSeg: untouched images are all written; touched ones are written or reported.
    written = {record["id"] for records_of_split in records.values() for record in records_of_split}
    for split, name in this.reasonseg:
        rid = record_id("reasonseg", split, name)
        evidence = this.touched_reasonseg.get((split, name))
        if evidence is None:
            assert rid in written, f"untouched {rid} is missing"
        else:
            assert rid in written or named(evidence, texts), f"touched {rid} neither written nor reported"
    for evidence in this.extra_evidence:
        assert named(evidence, texts), f"nothing reported for {evidence}"

    # refCOCO: each ref is a target of its image's record.
    targets = {(record["split"], record["image_id"], target["ref_id"])
               for split_records in records.values() for record in split_records if "image_id" in record
               for target in record["targets"]}
    if this.refer_file_broken:
        assert any(" bad_refer_file " in text for text in texts)
        return
    original = pickle.loads((base / REFCOCO / "refs(unc).p").read_bytes())
    for position, ref in enumerate(original):
        key = (ref["split"], ref["image_id"], ref["ref_id"])
        evidence = this.touched_refs.get(position)
        if evidence is None:
            assert key in targets, f"untouched ref {ref['ref_id']} is missing"
            continue
        mutated = this.refs[position]
        mutated_key = tuple(mutated.get(k) for k in ("split", "image_id", "ref_id")) if isinstance(mutated, dict) \
            else None
        written_ref = key in targets or (mutated_key is not None and _hashable(mutated_key) and mutated_key in targets)
        assert written_ref or named(evidence, texts), f"touched ref {ref['ref_id']} neither written nor reported"


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
