import pytest

from keyseg.keywords.cache import AnswerCache, cache_key
from keyseg.keywords.prompt import build_messages, parse_keyword


@pytest.mark.parametrize(
    "content,expected",
    [
        ('{"keyword": "spoon"}', "spoon"),
        ('Sure! {"keyword": "traffic light"} is my answer.', "traffic light"),
        ("umbrella\nbecause it keeps you dry", "umbrella"),
        ("Keyword: knife", "knife"),
        ('{"keyword": ""}', None),
        ("", None),
        (None, None),
    ],
)
def test_parse_keyword(content, expected):
    assert parse_keyword(content) == expected


def test_retry_messages_carry_the_reason():
    messages = build_messages("q?", "a.", feedback=("wooden", "'wooden' is only an adjective"))
    assert messages[-1]["role"] == "user" and "only an adjective" in messages[-1]["content"]
    assert messages[1]["content"].startswith("Question: q?\nAnswer: a.")


def test_cache_round_trip_and_damaged_entries(tmp_path):
    cache = AnswerCache(tmp_path)
    key = cache_key("openai", "m", "v1", "q", "a", "null")
    assert cache.get(key) is None
    cache.put(key, {"content": "x"})
    assert cache.get(key) == {"content": "x"}
    path = next(tmp_path.rglob("*.json"))
    path.write_text("{half")
    assert cache.get(key) is None
    assert cache_key("a", "b") != cache_key("ab", "")
    assert AnswerCache(None).get(key) is None


def test_cache_keys_that_are_not_digests_never_name_a_file(tmp_path):
    folder = tmp_path / "a" / "b" / "cache"
    cache = AnswerCache(folder)
    # Relative traversals only: even an unchecked cache would write inside tmp_path.
    for key in ("../marker", "ab/../../../marker", "A" * 64, "", None):
        with pytest.raises(ValueError):
            cache.put(key, {"content": "x"})
        assert cache.get(key) is None
    assert not (tmp_path / "a").exists()


def test_a_cache_entry_that_is_not_an_object_is_a_miss(tmp_path):
    cache = AnswerCache(tmp_path)
    key = cache_key("openai", "m", "v1", "q", "a", "null")
    cache.put(key, {"content": "x"})
    next(tmp_path.rglob("*.json")).write_text("[1, 2]")
    assert cache.get(key) is None
