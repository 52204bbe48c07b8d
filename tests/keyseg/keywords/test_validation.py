"""The verdict of a published keyword and what the fixed copy keeps."""

from keyseg.keywords.grounding import Verdict
from keyseg.keywords.miner import MinedKeyword
from keyseg.keywords.records import KeywordRecord
from keyseg.keywords.validation import generate_row, published_verdict, validate_row

QUERY, OUTPUTS = "What can be used to eat soup?", "The spoon on the table can be used to eat soup."
OK = Verdict("ok", "", ())


def record(keyword):
    return KeywordRecord(QUERY, OUTPUTS, "a.jpg", "a.json", keyword)


def mined(keyword, verdict=OK, error=None):
    return MinedKeyword(0, keyword, verdict, [keyword], False, error)


def test_a_grounded_keyword_is_kept():
    row = validate_row(0, record("spoon"), mined("spoon"), "openai")
    assert row["verdict"] == "ok" and row["fixed"] == "spoon" and not row["own_differs"]


def test_a_bad_keyword_is_replaced_by_our_own_or_null():
    assert published_verdict(record("wizard")).code == "ungrounded"
    assert validate_row(0, record("wizard"), mined("spoon"), "heuristic")["fixed"] == "spoon"
    flagged = Verdict("ungrounded", "not in the text", ())
    assert validate_row(0, record("wizard"), mined(None, flagged), "openai")["fixed"] is None


def test_a_keyword_that_is_not_a_string_is_that_records_verdict():
    row = validate_row(0, record(5), mined("spoon"), "openai")
    assert row["verdict"] == "not_a_string" and "int" in row["reason"] and row["fixed"] == "spoon"


def test_only_a_language_models_disagreement_is_a_verdict():
    by_llm = validate_row(0, record("table"), mined("spoon"), "openai")
    assert by_llm["verdict"] == "disagrees" and by_llm["fixed"] == "spoon"
    by_heuristic = validate_row(0, record("table"), mined("spoon"), "heuristic")
    assert by_heuristic["verdict"] == "ok" and by_heuristic["own_differs"] and by_heuristic["fixed"] == "table"


def test_a_generated_row_without_a_keyword_keeps_the_miners_verdict():
    failed = Verdict("failed", "the server gave up", ())
    row = generate_row(3, record(None), mined(None, failed, error="the server gave up"))
    assert row["index"] == 3 and row["keyword"] is None and row["verdict"] == "failed"
    assert generate_row(0, record(None), mined("spoon"))["verdict"] == "ok"
