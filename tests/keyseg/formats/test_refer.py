import os
import pickle

import pytest

from keyseg.formats.refer import ReferError, UnsafePickleError, load_instances, load_refs

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
        (pickle.dumps([{"ref_id": 1}]), "lacks ann_id"),
    ],
)
def test_bad_refs(data, reason):
    with pytest.raises(ReferError, match=reason):
        load_refs(data)


def test_instances():
    instances = load_instances(b'{"images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 3}], "annotations": []}')
    assert instances.images[1]["width"] == 3
    with pytest.raises(ReferError, match="not a COCO instances file"):
        load_instances(b"{}")
