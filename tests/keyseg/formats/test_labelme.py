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


@pytest.mark.parametrize(
    "document,reason",
    [
        (dict(GOOD, text=[["nested"]]), r"`text` must be a non-empty list of strings \(item 0 is list\)"),
        (dict(GOOD, text=[]), r"\(found an empty list\)"),
        (dict(GOOD, text=None), r"\(found null\)"),
        (dict(GOOD, shapes={"a": 1}), "`shapes` must be a list, found dict"),
        (dict(GOOD, shapes=[{"label": 5, "points": []}]), "shape 0: `label` must be a string, found int"),
        (dict(GOOD, shapes=[{"label": "target", "points": [[1, 2], [10**400, 1]]}]), "finite numbers within"),
        (dict(GOOD, shapes=[{"label": "target", "points": [[1, 2], [3e9, 1]]}]), "finite numbers within"),
        (dict(GOOD, shapes=[{"label": "target", "points": [[1, 2], [True, 1]]}]), "finite numbers within"),
    ],
)
def test_wrong_types_name_the_key(document, reason):
    with pytest.raises(LabelMeError, match=reason):
        parse_labelme(json.dumps(document).encode())


@pytest.mark.parametrize("data,reason", [
    (b'{"text": ["\\ud800"], "is_sentence": false, "shapes": []}', r"item 0 is text that is not valid Unicode"),
    (b"[" * 100000, "nested too deeply"),
    (b'{"text": ' + b"1" * 5000 + b"}", "invalid JSON"),
    (b'{"text": NaN, "is_sentence": false, "shapes": []}', "found float"),
])
def test_hostile_json_is_a_labelme_error(data, reason):
    with pytest.raises(LabelMeError, match=reason):
        parse_labelme(data)
