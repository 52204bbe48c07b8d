"""Is a keyword a grounded noun phrase naming something in the query or the answer?

`check_keyword` is the gate every mined keyword passes before it is written: the
keyword must be short, occur in the record's text (singular or plural), and be used
there as a noun phrase rather than as an adjective or as the first part of a longer
compound ("steering" out of "steering wheel").

Where noun phrases start and end is `noun_phrases`' job; this module decides what a
keyword's occurrences say about it. Without a tagger the noun test is context-light: word
classes come from a dictionary (see `lexicon`), and the text is only inspected right
around each occurrence.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from keyseg.keywords.lexicon import can_be_noun, closed_class, is_generic, singular, word_forms, word_pos
from keyseg.keywords.noun_phrases import is_possessive_at, modifies_next, opens_noun_phrase_before, phrase_extension

MAX_WORDS = 3

_QUOTES_AND_PUNCT = "\"'`\u2018\u2019\u201c\u201d.,;:!?()[]{}<>*_-\u2013\u2014 \t\r\n"

_TAG_NAMES = {
    "ADJ": "an adjective",
    "ADV": "an adverb",
    "VERB": "a verb form",
    "AUX": "an auxiliary verb",
    "DET": "a determiner",
    "PRON": "a pronoun",
    "ADP": "a preposition",
    "CCONJ": "a conjunction",
    "NUM": "a number",
}


@dataclass(frozen=True)
class Evidence:
    field: str  # "query" or "outputs"
    start: int  # character offsets into that field
    end: int
    text: str  # the matched text as it appears


@dataclass(frozen=True)
class Verdict:
    code: str  # "ok" | "empty" | "too_long" | "ungrounded" | "not_a_noun_phrase"
    reason: str
    evidence: tuple[Evidence, ...]

    @property
    def ok(self) -> bool:
        return self.code == "ok"


def normalize_keyword(raw: str | None) -> str:
    """Lower-case, trim quotes/punctuation, single spaces, no leading determiner.

    Underscores count as spaces ("traffic_light" is a label spelling of "traffic light").
    A lone determiner is kept so that the checker can say what is wrong with it.
    """
    if not raw:
        return ""
    words = raw.replace("_", " ").lower().strip(_QUOTES_AND_PUNCT).split()
    if len(words) > 1 and "DET" in closed_class(words[0]):
        words = words[1:]
    return " ".join(words)


@lru_cache(maxsize=4096)
def _phrase_pattern(keyword: str) -> re.Pattern[str] | None:
    # Hyphens separate words here so that "ice-cream" and "ice cream" match each other.
    words = keyword.replace("-", " ").split()
    if not words:
        return None
    parts = []
    for word in words:
        forms = sorted(word_forms(word), key=len, reverse=True)  # longest first: "knives" before "knife"
        parts.append("(?:" + "|".join(re.escape(f) for f in forms) + ")")
    # Phrase words are contiguous, separated by spaces or a hyphen. A hyphen is part of
    # a text word, so "cat" does not match inside "cat-like".
    body = r"(?:\s+|\s*-\s*)".join(parts)
    return re.compile(r"(?<![\w-])" + body + r"(?![\w-])", re.IGNORECASE)


def find_evidence(keyword: str, query: str, outputs: str) -> tuple[Evidence, ...]:
    """Every occurrence of the keyword (any singular/plural of each word) in query, then outputs."""
    pattern = _phrase_pattern(normalize_keyword(keyword))
    if pattern is None:
        return ()
    found = []
    for field, text in (("query", query or ""), ("outputs", outputs or "")):
        found.extend(Evidence(field, m.start(), m.end(), m.group(0)) for m in pattern.finditer(text))
    return tuple(found)


def _head_is_noun_here(keyword_words: list[str], ev: Evidence, text: str) -> bool:
    """For a head that is also an adjective ("orange", "light"), is it a noun at this occurrence?"""
    head = keyword_words[-1]
    if not (word_pos(head) & {"ADJ"}):
        return True
    surface = ev.text.lower().replace("-", " ").split()
    if surface[-1] != singular(surface[-1]):  # "oranges": only a noun has a plural
        return True
    if is_possessive_at(text, ev.end):
        return True
    if len(keyword_words) > 1:
        modifier = keyword_words[-2]
        if can_be_noun(modifier) and "ADJ" not in word_pos(modifier):  # "traffic light": noun-noun compound
            return True
    return opens_noun_phrase_before(text, ev.start)


def _describe(word: str) -> str:
    tags = sorted(word_pos(word) - {"NOUN", "PROPN"})
    names = [_TAG_NAMES[t] for t in tags if t in _TAG_NAMES]
    if not names:
        return "not a noun"
    if len(names) == 1:
        return f"only {names[0]}"
    return "only " + ", ".join(names[:-1]) + f" or {names[-1]}"


def _usage(keyword: str, evidence: tuple[Evidence, ...], texts: dict[str, str]) -> tuple[bool, Counter[str]]:
    """(used as a noun phrase somewhere, how it is extended where it only modifies a noun)."""
    words = keyword.split()
    extensions: Counter[str] = Counter()
    noun_use = False
    for ev in evidence:
        text = texts[ev.field]
        last = ev.text.lower().replace("-", " ").split()[-1]
        plural = singular(last) != last  # a plural is not a compound's modifier: "the cats climb"
        if not plural and modifies_next(text, ev.start, ev.end):
            extensions[phrase_extension(text, ev.start, ev.end)] += 1
        elif _head_is_noun_here(words, ev, text):
            noun_use = True
    return noun_use, extensions


def _not_noun_phrase(reason: str, evidence: tuple[Evidence, ...]) -> Verdict:
    return Verdict("not_a_noun_phrase", reason, evidence)


def check_keyword(keyword: str | None, query: str, outputs: str) -> Verdict:
    """Judge one keyword against its record (query and answer). Rules, first failure wins:

    1. "empty": nothing left after `normalize_keyword`.
    2. "too_long": more than three words.
    3. "ungrounded": not in the query or the answer (any singular/plural of each word).
    4. "not_a_noun_phrase": the head (last word) is a determiner, pronoun or other
       function word, a generic word ("object", "picture"), or has no noun reading
       ("wooden", "steering"); or, in the text, the keyword only ever modifies a
       following noun ("steering" in "steering wheel", "plastic" in "plastic lid") or,
       for adjective-noun words like "red", is only used as an adjective.
    """
    kw = normalize_keyword(keyword)
    if not kw:
        return Verdict("empty", "the keyword is empty", ())
    words = kw.split()
    if len(words) > MAX_WORDS:
        return Verdict("too_long", f"'{kw}' has {len(words)} words; a keyword has at most {MAX_WORDS}", ())
    evidence = find_evidence(kw, query, outputs)
    if not evidence:
        return Verdict("ungrounded", f"'{kw}' does not occur in the query or the answer", ())

    head = words[-1]
    texts = {"query": query or "", "outputs": outputs or ""}
    closed = closed_class(head)
    if closed:
        name = _TAG_NAMES[sorted(closed)[0]]
        return _not_noun_phrase(f"'{head}' is {name}, not a noun naming an object", evidence)
    if is_generic(head):
        return _not_noun_phrase(f"'{head}' is too generic to name the target object", evidence)

    noun_use, extensions = _usage(kw, evidence, texts)
    fragment = f"; in the text it is a fragment of '{extensions.most_common(1)[0][0]}'" if extensions else ""
    if not can_be_noun(head):
        what = f"'{kw}' is {_describe(head)}" if len(words) == 1 else f"its last word '{head}' is {_describe(head)}"
        return _not_noun_phrase(what + fragment, evidence)
    if not noun_use:
        if extensions:
            return _not_noun_phrase(
                f"'{kw}' only modifies a following noun: in the text it is a fragment of "
                f"'{extensions.most_common(1)[0][0]}'",
                evidence,
            )
        return _not_noun_phrase(f"'{kw}' is used as an adjective in the text, never as a noun", evidence)
    return Verdict("ok", f"'{kw}' is a noun phrase found {len(evidence)} time(s) in the text", evidence)


def _comparable(keyword: str) -> list[str]:
    return normalize_keyword(keyword).replace("-", " ").split()


def _same_word(a: str, b: str) -> bool:
    # Forms rather than singular(): "glass" and "glasses" agree although "glasses" is its own lemma.
    return a == b or singular(a) == singular(b) or b in word_forms(a) or a in word_forms(b)


def keywords_agree(a: str, b: str) -> bool:
    """Same keyword up to case/plural, or one names the head of the other ("light" ~ "traffic light").

    More generally the shorter must be the trailing words of the longer, so
    "traffic light" also agrees with "red traffic light".
    """
    wa, wb = _comparable(a), _comparable(b)
    if not wa or not wb:
        return False
    short, long_ = sorted((wa, wb), key=len)
    tail = long_[len(long_) - len(short) :]
    return all(_same_word(x, y) for x, y in zip(short, tail))
