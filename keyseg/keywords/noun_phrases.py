"""Where the noun phrases of a text are, from a word dictionary and the words around them.

The parser shared by the keyword check (`grounding.check_keyword`: is this occurrence of a
keyword used as a noun phrase?) and the offline extractor (`heuristic.heuristic_keyword`:
which noun phrases does the answer name?). There is no tagger: word classes come from
`lexicon` and are context-free, so each decision looks only at the neighbouring words
(determiners, possessives, plurals, what follows).

Two views of the same text: character offsets (`modifies_next`, `opens_noun_phrase_before`,
`phrase_extension`), for judging a match found by a regular expression, and a token list
(`tokenize` and the `token_*` tests), for walking all phrases of an answer.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from functools import lru_cache

from keyseg.keywords.lexicon import can_be_noun, closed_class, is_participle, singular, word_pos

# A word of the text: letters/digits, hyphenated parts kept together ("t-shirt").
WORD = r"[^\W_]+(?:-[^\W_]+)*"
_NEXT_WORD = re.compile(r"(\s+)(" + WORD + r")")
# The word before a position, matched on the reversed text so that the match is
# anchored at the position (a "$"-anchored search would try every start).
_PREV_WORD_REVERSED = re.compile(r"\s+(,?)((?:s?['\u2019])?)((?:[^\W_]+-)*[^\W_]+)")
_POSSESSIVE = re.compile(r"['\u2019](?:s(?![^\W_])|(?![^\W_]))")
# A word, with an optional possessive ("dog's", "dogs'"); words in [brackets] are
# special tokens such as [SEG] and are skipped.
_TOKEN = re.compile(r"(\[)?(" + WORD + r")(['\u2019]s?(?![^\W_]))?(\])?")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


@lru_cache(maxsize=65536)
def continues_noun_phrase(word: str) -> bool:
    """Could ``word``, right after a noun phrase, be the head that phrase modifies?

    True for nouns ("wheel" after "steering"); false for function words, auxiliaries
    ("can", "will" have noun readings too) and participles ("the cat sitting").
    """
    w = word.lower()
    return can_be_noun(w) and "AUX" not in word_pos(w) and not is_participle(w)


# Determiners that announce a plural: "two traffic lights at the corner" is a compound.
_PLURAL_DETERMINERS = frozenset("these those many several few both all some".split())


def verb_with_object(word: str, after: str | None, determiner: str | None = None, *, prepositions: bool = True) -> bool:
    """Is ``word`` (followed by ``after``) a verb in -s rather than a plural noun?

    "keeps" in "the umbrella keeps you dry", "serves" in "the dome serves as a roof":
    an -s form that is also a verb, followed by a pronoun, determiner, number or "as".
    With ``prepositions`` a preposition counts too ("the spoon rests in the bowl"),
    unless the ``determiner`` before the phrase announces a plural ("two traffic
    lights at the corner"); "the traffic lights at the corner" is still misread.
    """
    w = word.lower()
    if after is None or singular(w) == w or "VERB" not in word_pos(w):
        return False
    a = after.lower()
    closed = closed_class(a)
    if a == "as" or closed & {"DET", "PRON", "NUM"}:
        return True
    if not prepositions or "ADP" not in closed:
        return False
    d = (determiner or "").lower()
    return not (d in _PLURAL_DETERMINERS or ("NUM" in closed_class(d) and d != "one"))


def _next_words(text: str, end: int) -> tuple[str | None, str | None]:
    """The two words after ``end`` when only spaces separate them (punctuation ends a phrase)."""
    if _POSSESSIVE.match(text, end):
        return None, None
    first = _NEXT_WORD.match(text, end)
    if not first:
        return None, None
    second = None if _POSSESSIVE.match(text, first.end()) else _NEXT_WORD.match(text, first.end())
    return first.group(2), second.group(2) if second else None


def modifies_next(text: str, start: int, end: int) -> bool:
    """Does the phrase at ``start:end`` modify a noun right after it ("steering| wheel")?"""
    following, after = _next_words(text, end)
    if following is None or not continues_noun_phrase(following):
        return False
    before = _previous_word(text, start)
    return not verb_with_object(following, after, before[0] if before else None)


def is_possessive_at(text: str, end: int) -> bool:
    return bool(_POSSESSIVE.match(text, end))


# Words that look like determiners or prepositions but usually start a clause or an
# infinitive instead of a noun phrase ("which helps", "used to scoop").
_NOT_PHRASE_OPENERS = frozenset({"to", "which", "that", "what", "who"})


def _previous_word(text: str, cursor: int) -> tuple[str, bool, bool, int] | None:
    """(word, possessive, comma after it, start) of the word before ``cursor``; None at punctuation."""
    window = text[max(0, cursor - 48) : cursor][::-1]
    m = _PREV_WORD_REVERSED.match(window)
    if not m:
        return None
    return m.group(3)[::-1], bool(m.group(2)), bool(m.group(1)), cursor - m.end()


def opens_noun_phrase_before(text: str, start: int) -> bool:
    """Does the text before ``start`` open a noun phrase?

    Yes after a determiner, number, possessive or preposition, and after an -ing/-ed
    verb form ("wearing sunglasses", "a glowing lamp"). Walks back over up to four
    describing words or noun modifiers ("the only large red ...", "a traffic ...").
    An auxiliary ("is red"), another verb or punctuation on the way means no.
    """
    cursor = start
    for _ in range(5):
        prev = _previous_word(text, cursor)
        if prev is None:
            return False
        raw, possessive, comma, cursor = prev
        word = raw.lower()
        closed = closed_class(word)
        tags = word_pos(word)
        if comma:  # "a small, old garage": only a describing word may stand before a comma
            if closed or "ADJ" not in tags:
                return False
            continue
        if possessive:  # "the dog's ..." - a possessive opens a noun phrase
            return True
        if closed:
            return bool(closed & {"DET", "NUM", "ADP"}) and word not in _NOT_PHRASE_OPENERS
        if "AUX" in tags:
            return False
        if is_participle(word):
            return True
        if not (tags & {"ADJ", "ADV"} or continues_noun_phrase(word)):
            return False
    return False


def phrase_extension(text: str, start: int, end: int) -> str:
    """The phrase at ``start:end`` plus the noun(s) it modifies: "steering" -> "steering wheel"."""
    words = [text[start:end].lower()]
    cursor = end
    for _ in range(2):
        m = _NEXT_WORD.match(text, cursor)
        if not m or not modifies_next(text, start, cursor):
            break
        words.append(m.group(2).lower())
        cursor = m.end()
    return " ".join(words)


# --------------------------------------------------------------------------- tokens


@dataclass(slots=True)
class Token:
    """A word of the text and what the parser needs to know about its neighbours."""

    word: str  # lower-case
    start: int
    end: int
    joined: bool  # only whitespace between this token and the previous one
    possessive: bool  # followed by 's or '
    sentence: int  # index of the sentence the token is in


def tokenize(text: str) -> list[Token]:
    """The words of ``text`` in order; model tokens such as [SEG] are left out."""
    sentence_ends = [m.start() for m in _SENTENCE_END.finditer(text)]
    tokens: list[Token] = []
    prev_end = 0
    for m in _TOKEN.finditer(text):
        if m.group(1) and m.group(4):  # [SEG], [KEY]: model tokens, not words
            prev_end = m.end()
            continue
        gap = text[prev_end : m.start(2)]
        joined = bool(tokens) and not gap.strip() and not tokens[-1].possessive
        sentence = bisect.bisect_left(sentence_ends, m.start())
        tokens.append(Token(m.group(2).lower(), m.start(2), m.end(2), joined, bool(m.group(3)), sentence))
        prev_end = m.end()
    return tokens


def is_plural(word: str) -> bool:
    return singular(word) != word


def can_modify(word: str) -> bool:
    """A noun modifier of a compound ("traffic" in "traffic light"); adjectives are dropped."""
    tags = word_pos(word)
    return "ADJ" not in tags and not is_plural(word) and continues_noun_phrase(word)


def token_verb_with_object(tokens: list[Token], i: int, prepositions: bool) -> bool:
    """"keeps" in "the umbrella keeps you dry": a verb, not a plural (`verb_with_object` on tokens)."""
    after = tokens[i + 1] if i + 1 < len(tokens) and tokens[i + 1].joined else None
    determiner = tokens[i - 2] if i >= 2 and tokens[i - 1].joined else None  # before the word ahead of it
    return verb_with_object(
        tokens[i].word, after.word if after else None, determiner.word if determiner else None, prepositions=prepositions
    )


def token_gerund_modifier(tokens: list[Token], i: int) -> bool:
    """"steering" in "the steering wheel": an -ing word inside a noun phrase modifies the noun.

    Only when the -ing word is no adjective itself, and a determiner, number,
    possessive or plain adjective comes before it:
    "is wearing sunglasses" and "the man holding flowers" are verbs with objects.
    """
    word = tokens[i].word
    if not word.endswith("ing") or "ADJ" in word_pos(word) or i == 0 or not tokens[i].joined:
        return False  # "a refreshing treat": an adjective, dropped like the others
    prev = tokens[i - 1]
    if prev.possessive or closed_class(prev.word) & {"DET", "NUM"}:
        return prev.word not in ("that", "which", "what")
    tags = word_pos(prev.word)
    return "ADJ" in tags and "NOUN" not in tags and "VERB" not in tags


def token_modifies_next(tokens: list[Token], i: int) -> bool:
    """Does token ``i`` modify the noun right after it ("steering wheel")?"""
    tok = tokens[i]
    if i + 1 >= len(tokens):
        return False
    nxt = tokens[i + 1]
    if not nxt.joined or tok.possessive:
        return False
    if is_plural(tok.word) or token_verb_with_object(tokens, i + 1, prepositions=True):
        return False  # compounds take a singular modifier: "these antlers serve" is a clause
    if continues_noun_phrase(nxt.word):
        return True
    # after an adjective an -ing word is usually a noun: "a high rating", "a tall building"
    return "ADJ" in word_pos(tok.word) and nxt.word.endswith("ing") and "NOUN" in word_pos(nxt.word)


def token_in_adjective_run(tokens: list[Token], i: int, text: str) -> bool:
    """"long" in "a long wooden bench", "red" in "red, white and blue balloon": adjectives, not heads."""
    if "ADJ" not in word_pos(tokens[i].word) or i + 1 >= len(tokens):
        return False
    nxt = tokens[i + 1]
    if nxt.word in ("and", "or") and i + 2 < len(tokens):
        nxt = tokens[i + 2]
    elif not nxt.joined and text[tokens[i].end : nxt.start].strip() != ",":
        return False
    return "ADJ" in word_pos(nxt.word) and not closed_class(nxt.word)


def token_is_noun(tokens: list[Token], i: int, text: str) -> bool:
    """Is token ``i`` used as a noun? Many nouns are verbs too ("use", "help", "serve")."""
    tok = tokens[i]
    prev = tokens[i - 1] if i > 0 and tok.joined else None
    if is_plural(tok.word) and (prev is None or not closed_class(prev.word)):
        return True  # "swim caps are ...", but not "it helps"
    return opens_noun_phrase_before(text, tok.start)
