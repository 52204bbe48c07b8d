"""Keyword grounding: evidence in the text, verdicts, agreement, and the word lexicon."""

from __future__ import annotations

import pytest

from keyseg.keywords.grounding import (
    Evidence,
    Verdict,
    check_keyword,
    find_evidence,
    keywords_agree,
    normalize_keyword,
)
from keyseg.keywords.lexicon import can_be_noun, singular, word_forms, word_pos

KITCHEN_Q = "When eating a bowl of soup, what kitchen tool would most likely be used to scoop the soup?"
KITCHEN_A = (
    "When eating a bowl of soup, a spoon would most likely be used. In the image, there is a spoon "
    "resting in the bowl, which is placed on a wooden dining table. Spoons are common tools for soup."
)
CAR_Q = "What part of the car in the picture is used by the driver to control the direction of the vehicle?"
CAR_A = "The part of the car used by the driver to control the direction is the steering wheel. Turning the steering wheel changes direction."


# --- lexicon ---------------------------------------------------------------------------


def test_word_pos_uses_dictionary_and_closed_classes():
    assert word_pos("wooden") == {"ADJ"}
    assert "NOUN" in word_pos("spoon")
    assert word_pos("steering") == {"VERB"}
    assert word_pos("the") == {"DET"}
    assert "NOUN" not in word_pos("it")  # lemminflect lists "it" as a noun; a pronoun it is
    assert word_pos("tv") == frozenset()  # unknown to the dictionary


def test_can_be_noun():
    assert can_be_noun("spoon") and can_be_noun("Light") and can_be_noun("tv")
    assert not can_be_noun("wooden") and not can_be_noun("steering")
    assert not can_be_noun("the") and not can_be_noun("it") and not can_be_noun("42")


@pytest.mark.parametrize(
    ("word", "expected"),
    [("knives", "knife"), ("teeth", "tooth"), ("buses", "bus"), ("spoon", "spoon"), ("glasses", "glasses"),
     ("sunglasses", "sunglasses"), ("traffic lights", "traffic light"), ("wooden", "wooden"), ("gps", "gps")],
)
def test_singular(word, expected):
    assert singular(word) == expected


def test_word_forms_cover_both_numbers():
    assert {"knife", "knives"} <= word_forms("knife")
    assert {"knife", "knives"} <= word_forms("Knives")
    assert {"tv", "tvs"} <= word_forms("tv")
    assert word_forms("steering") == {"steering"}


# --- normalisation and evidence ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [('  "The Cup." ', "cup"), ("Traffic   Light", "traffic light"), ("a spoon", "spoon"), ("the", "the"),
     ("'knife'", "knife"), ("traffic_light", "traffic light"), ("", ""), (None, "")],
)
def test_normalize_keyword(raw, expected):
    assert normalize_keyword(raw) == expected


def test_evidence_is_case_insensitive_with_exact_offsets():
    query, outputs = "Where is the CAT?", "The Cat sleeps. A cat."
    found = find_evidence("cat", query, outputs)
    assert [(e.field, e.text) for e in found] == [("query", "CAT"), ("outputs", "Cat"), ("outputs", "cat")]
    for e in found:
        text = query if e.field == "query" else outputs
        assert text[e.start : e.end] == e.text


def test_evidence_respects_word_boundaries():
    assert find_evidence("cat", "Which category?", "A catalogue and a bobcat-like toy.") == ()
    assert find_evidence("cat", "", "The cat's bowl.") == (Evidence("outputs", 4, 7, "cat"),)


def test_evidence_matches_singular_and_plural_both_ways():
    assert [e.text for e in find_evidence("knife", "", "Two knives and a knife.")] == ["knives", "knife"]
    assert [e.text for e in find_evidence("knives", "", "Use the knife.")] == ["knife"]


def test_evidence_matches_multiword_phrases_contiguously():
    outputs = "Two traffic lights. One traffic light. Traffic is light."
    found = find_evidence("traffic lights", "", outputs)
    assert [e.text for e in found] == ["traffic lights", "traffic light"]
    assert outputs[found[1].start : found[1].end] == "traffic light"
    assert [e.text for e in find_evidence("ice cream", "", "An ice-cream cone.")] == ["ice-cream"]


# --- verdicts -------------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["spoon", "Spoons", "the spoon", "bowl"])
def test_ok_kitchen(keyword):
    verdict = check_keyword(keyword, KITCHEN_Q, KITCHEN_A)
    assert verdict.ok and verdict.code == "ok"
    assert verdict.evidence


@pytest.mark.parametrize(
    ("keyword", "query", "outputs"),
    [
        ("traffic light", "What tells cars to stop?", "The traffic light at the corner turns red."),
        ("ice cream", "What is cold and sweet?", "The ice cream in the cone is melting."),
        ("tv", "Where can I watch the news?", "The TV on the wall can show the news."),
        ("laptop", "What could a student take notes on?", "She is typing on a laptop."),
        ("steering wheel", CAR_Q, CAR_A),
        ("orange", "What fruit is here?", "There is an orange on the plate."),
    ],
)
def test_ok_noun_phrases(keyword, query, outputs):
    assert check_keyword(keyword, query, outputs).code == "ok"


@pytest.mark.parametrize(
    ("keyword", "outputs"),
    [
        ("wooden", "The crew stands on a wooden deck."),
        ("large", "The large glowing object is a furnace."),
        ("red", "The red triangle is the answer."),
        ("red", "The car on the left is red."),
    ],
)
def test_adjectives_are_not_noun_phrases(keyword, outputs):
    verdict = check_keyword(keyword, "What is it?", outputs)
    assert verdict.code == "not_a_noun_phrase"
    assert not verdict.ok
    assert f"'{keyword}'" in verdict.reason


def test_adjective_only_reason():
    verdict = check_keyword("wooden", "", "The crew stands on a wooden deck.")
    assert "only an adjective" in verdict.reason


@pytest.mark.parametrize(("keyword", "kind"), [("it", "pronoun"), ("the", "determiner"), ("they", "pronoun")])
def test_function_words_are_not_noun_phrases(keyword, kind):
    verdict = check_keyword(keyword, "Is it the one they want?", "Yes, it is the one they want.")
    assert verdict.code == "not_a_noun_phrase"
    assert kind in verdict.reason


@pytest.mark.parametrize("keyword", ["object", "thing", "item", "picture", "objects"])
def test_generic_words_are_not_noun_phrases(keyword):
    outputs = "The object in the picture is a thing, an item among other objects."
    verdict = check_keyword(keyword, "", outputs)
    assert verdict.code == "not_a_noun_phrase"
    assert "generic" in verdict.reason


def test_fragment_of_a_compound_is_flagged_with_the_compound():
    verdict = check_keyword("steering", CAR_Q, CAR_A)
    assert verdict.code == "not_a_noun_phrase"
    assert "fragment" in verdict.reason and "'steering wheel'" in verdict.reason
    assert len(verdict.evidence) == 2


def test_noun_fragment_is_flagged():
    verdict = check_keyword("plastic", "What covers the cup?", "The cup has a plastic lid. The plastic lid keeps it warm.")
    assert verdict.code == "not_a_noun_phrase"
    assert "'plastic lid'" in verdict.reason


def test_plural_followed_by_verb_is_not_a_fragment():
    assert check_keyword("cats", "What climbs?", "Cats climb trees.").ok


@pytest.mark.parametrize(
    ("keyword", "outputs"),
    [("umbrella", "The umbrella keeps you dry."), ("spoon", "The spoon rests in the bowl."),
     ("dome", "The dome serves as a roof.")],
)
def test_subject_before_a_verb_in_s_is_not_a_fragment(keyword, outputs):
    assert check_keyword(keyword, "What is it?", outputs).ok


def test_plural_compound_before_a_preposition_after_a_number():
    verdict = check_keyword("traffic", "What is red?", "Two traffic lights at the corner are red.")
    assert verdict.code == "not_a_noun_phrase"
    assert "'traffic lights'" in verdict.reason


def test_too_long():
    verdict = check_keyword("big red kitchen spoon", KITCHEN_Q, KITCHEN_A)
    assert verdict.code == "too_long"
    assert verdict.evidence == ()


@pytest.mark.parametrize("keyword", ["fork", "ladle", "spoon holder"])
def test_ungrounded(keyword):
    verdict = check_keyword(keyword, KITCHEN_Q, KITCHEN_A)
    assert verdict.code == "ungrounded"
    assert verdict.evidence == ()


@pytest.mark.parametrize("keyword", [None, "", "   ", "''", "."])
def test_empty(keyword):
    assert check_keyword(keyword, KITCHEN_Q, KITCHEN_A).code == "empty"


def test_rule_order_empty_then_too_long_then_ungrounded():
    assert check_keyword("", "", "").code == "empty"
    assert check_keyword("one two three four", "", "").code == "too_long"
    assert check_keyword("wooden", "", "").code == "ungrounded"


def test_verdict_is_a_frozen_value():
    verdict = Verdict("ok", "fine", ())
    assert verdict.ok and not Verdict("empty", "", ()).ok
    with pytest.raises(AttributeError):
        verdict.code = "empty"  # type: ignore[misc]


# --- agreement ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [("light", "traffic light"), ("traffic light", "light"), ("Spoon", "spoons"), ("the knife", "knives"),
     ("glass", "glasses"), ("traffic lights", "Traffic Light"), ("ice-cream", "ice cream")],
)
def test_keywords_agree(a, b):
    assert keywords_agree(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [("car", "license plate"), ("steering", "steering wheel"), ("traffic", "traffic light"), ("", "spoon"),
     ("spoon", "fork")],
)
def test_keywords_disagree(a, b):
    assert not keywords_agree(a, b)
