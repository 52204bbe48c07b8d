import json

import pytest

from keyseg.formats.labelme import LabelMeError, parse_labelme

GOOD = {"text": ["the red circle"], "is_sentence": False,
        "shapes": [{"label": "target", "points": [[1, 2], [3.5, 4], [5, 1]]}], "imageData": None}


def test_utf8_file():
    parsed = parse_labelme(json.dumps(GOOD).encode("utf-8"))
    assert parsed.encoding == "utf-8" and parsed.texts == ["the red circle"] and parsed.shapes[0].label == "target"


def test_cp1252_fallback():
    document = dict(GOOD, text=["the caf\u00e9\u2019s sign"])
    data = json.dumps(document, ensure_ascii=False).encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    parsed = parse_labelme(data)
    assert parsed.encoding == "cp1252" and parsed.texts == ["the caf\u00e9\u2019s sign"]


def test_single_string_text_is_a_list_of_one():
    assert parse_labelme(json.dumps(dict(GOOD, text="one")).encode()).texts == ["one"]


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "top level is list"),
        (json.dumps({"text": ["a"], "shapes": []}).encode(), "missing key.*is_sentence"),
        (json.dumps(dict(GOOD, shapes=[{"label": "target"}])).encode(), "shape 0 lacks"),
        (json.dumps(dict(GOOD, shapes=[{"label": "target", "points": [[1, "x"]]}])).encode(), "shape 0: `points`"),
        (json.dumps(dict(GOOD, is_sentence="yes")).encode(), "is_sentence"),
        (b"\x81\x8d\x8f{}", "neither UTF-8 nor cp1252"),
    ],
)
def test_bad_files_name_the_reason(data, reason):
    with pytest.raises(LabelMeError, match=reason):
        parse_labelme(data)
