"""The noun-phrase parser shared by the keyword check and the offline extractor."""

from __future__ import annotations

from keyseg.keywords.noun_phrases import (
    modifies_next,
    opens_noun_phrase_before,
    phrase_extension,
    tokenize,
    token_is_noun,
    token_modifies_next,
    verb_with_object,
)


def span(text: str, word: str) -> tuple[int, int]:
    start = text.index(word)
    return start, start + len(word)


def test_a_modifier_is_extended_to_the_noun_it_modifies():
    text = "Turn the steering wheel to the left."
    assert modifies_next(text, *span(text, "steering"))
    assert phrase_extension(text, *span(text, "steering")) == "steering wheel"
    assert not modifies_next(text, *span(text, "wheel"))  # a preposition follows
    assert not modifies_next("the dog's bowl", *span("the dog's bowl", "dog"))  # a possessive ends the phrase


def test_noun_phrase_openers():
    text = "There is a small, old garage and it is red."
    assert opens_noun_phrase_before(text, text.index("garage"))  # determiner, then describing words
    assert not opens_noun_phrase_before(text, text.index("red"))  # after an auxiliary


def test_verb_in_s_with_an_object_is_not_a_plural():
    assert verb_with_object("keeps", "you")
    assert verb_with_object("rests", "in", "the")
    assert not verb_with_object("lights", "at", "two")  # "two traffic lights at the corner"
    assert not verb_with_object("spoon", "in")  # not an -s form


def test_tokens_skip_model_tokens_and_mark_possessives_and_sentences():
    tokens = tokenize("Sure, [SEG]. The dog's bowl.")
    assert [t.word for t in tokens] == ["sure", "the", "dog", "bowl"]
    assert tokens[2].possessive and not tokens[3].joined  # nothing joins across a possessive
    assert [t.sentence for t in tokens] == [0, 1, 1, 1]


def test_token_and_offset_views_agree_on_a_compound():
    text = "In the image, the steering wheel is on the left."
    tokens = tokenize(text)
    steering = [t.word for t in tokens].index("steering")
    assert token_modifies_next(tokens, steering) == modifies_next(text, tokens[steering].start, tokens[steering].end)
    assert token_is_noun(tokens, steering + 1, text)
