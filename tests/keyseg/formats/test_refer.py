import json
import os
import pickle
import re
import struct

import pytest

from keyseg.formats.refer import (DEFAULT_SPLIT_BY, REFER_DATASETS, ReferError, UnsafePickleError, check_ref,
                                  load_instances, load_refs, splits_of_ref)

REF = {"ref_id": 1, "ann_id": 10, "image_id": 100, "split": "train", "category_id": 1,
       "file_name": "COCO_train2014_000000000100_10.jpg", "sent_ids": [7],
       "sentences": [{"sent": "red circle", "raw": "Red circle", "tokens": ["red", "circle"], "sent_id": 7}]}


def test_plain_refs_load_with_every_protocol():
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        assert load_refs(pickle.dumps([REF, {**REF, "ref_id": 2}], protocol=protocol))[1]["ref_id"] == 2


class _Payload:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps([REF, _Payload(marker)], protocol=2)
    with pytest.raises(UnsafePickleError, match="refused to load: .*(posix|os)\\.system"):
        load_refs(data)
    assert not marker.exists()
    # The same bytes do run code through plain pickle: the test's payload is real.
    pickle.loads(data)
    assert marker.exists()


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"garbage", "not a readable pickle"),
        (pickle.dumps({"a": 1}), "expected a list"),
    ],
)
def test_bad_refs_files(data, reason):
    with pytest.raises(ReferError, match=reason):
        load_refs(data)


@pytest.mark.parametrize(
    "ref,reason",
    [
        ({"ref_id": 1}, "lacks `ann_id`, `image_id`, `split`, `sentences`"),
        ("a string", "is a str, not a dict"),
        ({**REF, "ann_id": [10, 11]}, "`ann_id` is list, expected an integer"),
        ({**REF, "ref_id": True}, "`ref_id` is bool, expected an integer"),
        ({**REF, "split": ["train"]}, "`split` is list, expected a string"),
        ({**REF, "sentences": ["red circle"]}, r"`sentences\[0\]` is str, expected a dict with `sent`"),
        ({**REF, "sentences": "red circle"}, "`sentences` is str, expected a list"),
        ({**REF, "sentences": [{"sent": None}]}, r"`sentences\[0\].sent` is null, expected a string"),
    ],
)
def test_each_ref_is_checked_on_its_own(ref, reason):
    refs = load_refs(pickle.dumps([REF, ref], protocol=2))  # the file loads: one bad ref costs only itself
    assert check_ref(refs[0]) is None
    assert re.fullmatch(reason, check_ref(refs[1]))


def test_undecodable_bytes_cost_only_their_ref():
    # A Python 2 pickle stores text as bytes; build one with a byte that is not UTF-8.
    marker = "SENTINELXYZ"
    data = pickle.dumps([REF, {**REF, "ref_id": 2, "sentences": [{"sent": marker}]}], protocol=2)
    encoded = marker.encode()
    py2_text = b"U" + bytes([len(encoded)]) + encoded.replace(b"N", b"\xff", 1)
    data = data.replace(b"X" + struct.pack("<I", len(encoded)) + encoded, py2_text)
    first, second = load_refs(data)
    assert check_ref(first) is None
    assert check_ref(second) == "`sentences[0].sent` is text that is not valid Unicode, expected a string"


def test_instances():
    instances = load_instances(b'{"images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 3}], "annotations": []}')
    assert instances.images[1]["width"] == 3
    with pytest.raises(ReferError, match="not a COCO instances file"):
        load_instances(b"{}")


def test_each_image_entry_is_checked_on_its_own():
    document = {"images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 3},
                           {"id": 2, "file_name": "b.jpg", "width": 3},
                           {"id": 3, "file_name": ["c.jpg"], "height": 2, "width": 3},
                           {"id": 4, "file_name": "d.jpg", "height": 2.0, "width": 3},
                           {"id": 5, "file_name": "e.jpg", "height": 30000, "width": 30000},
                           {"id": "6", "file_name": "f.jpg", "height": 2, "width": 3},
                           "not an entry"],
                "annotations": [{"id": 9, "segmentation": []}, {"segmentation": []}]}
    instances = load_instances(json.dumps(document).encode())
    assert list(instances.images) == [1] and list(instances.annotations) == [9]
    assert instances.bad_images == {
        2: "lacks `height`",
        3: "`file_name` is list, expected a file name",
        4: "`height` is float, expected an integer",
        5: "`height`/`width`: image is 30000x30000 = 900,000,000 pixels, over the bound of 100,000,000 "
           "(--max-image-pixels)",
    }
    assert instances.problems == ["`images[5]` is an entry without an integer `id`", "`images[6]` is str",
                                  "`annotations[1]` is an entry without an integer `id`"]


@pytest.mark.parametrize("data,reason", [(b"[" * 100000, "nested too deeply"), (b"\xff\xfe{", "invalid JSON"),
                                         (b'{"images": {}, "annotations": []}', "`images` is dict"),
                                         (b'{"images": [], "annotations": [], "x": ' + b"9" * 5000 + b"}",
                                          "invalid JSON")])
def test_unusable_instances_files(data, reason):
    with pytest.raises(ReferError, match=reason):
        load_instances(data)


def test_refclef_split_bys_and_splits_as_refer_publishes_them():
    assert REFER_DATASETS["refclef"] == {"unc": ("train", "val", "testA", "testB", "testC"),
                                         "berkeley": ("train", "val", "test")}
    assert DEFAULT_SPLIT_BY["refclef"] == "unc"  # LISA utils/refer_seg_dataset.py:57-60: unc but for refcocog


@pytest.mark.parametrize("split,expected", [
    ("testC", ("testC",)), ("train", ("train",)), ("testAB", ("testA", "testB")), ("testCA", ("testC", "testA")),
    ("testAA", ()), ("testD", ()), ("testAD", ()), ("test", ()), ("Train", ()), ("", ()),
])
def test_a_ref_belongs_to_its_split_or_to_each_split_of_a_combined_test_value(split, expected):
    assert splits_of_ref(split, REFER_DATASETS["refclef"]["unc"]) == expected


def test_combined_values_need_every_named_split():
    assert splits_of_ref("testAB", REFER_DATASETS["refcoco"]["unc"]) == ("testA", "testB")
    assert splits_of_ref("testBC", REFER_DATASETS["refcoco"]["unc"]) == ()
    assert splits_of_ref("testA", REFER_DATASETS["refclef"]["berkeley"]) == ()
