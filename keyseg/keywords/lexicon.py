"""Word-level facts for keyword checking: parts of speech, singular and plural forms.

Thin cached wrappers over lemminflect: a lemma dictionary that records which UPOS
tags each English word form can have, plus suffix rules for plurals and singulars of
words the dictionary does not know. (The `inflect` package would do the latter too,
but importing it takes seconds, which every CLI start would pay.) Nothing here looks at context: a word's tags are every
reading it can have, so "light" is NOUN, ADJ, ADV and VERB at once.

lemminflect only covers open classes (NOUN, VERB, ADJ, ADV, AUX, PROPN), and its
noun table contains odd entries for function words ("it", "this", "which" as NOUN).
The small closed-class sets below fill that gap and override those noun readings.
"""

from __future__ import annotations

import re
from functools import lru_cache

import lemminflect

# Closed classes that lemminflect has no tags for. They are closed: English does not
# grow new determiners or prepositions, so a complete-enough list is short.
_DETERMINERS = frozenset(
    "a an the this that these those my your his her its our their some any no every each all both "
    "either neither another other such what which whose much many few several enough".split()
)
_PRONOUNS = frozenset(
    "i me mine myself you yours yourself yourselves he him himself she hers herself it itself we us "
    "ours ourselves they them theirs themselves one ones someone somebody something anyone anybody "
    "anything everyone everybody everything nobody nothing who whom whoever whatever whichever "
    "that this these those which what".split()
)
_ADPOSITIONS = frozenset(
    "about above across after against along amid among around as at before behind below beneath beside "
    "besides between beyond by despite during except for from in inside into like near of off on onto "
    "out outside over past per since through throughout to toward towards under underneath until up "
    "upon via with within without".split()
)
_CONJUNCTIONS = frozenset(
    "and or but nor yet so because although though while whereas if unless whether than once".split()
)
_NUMERALS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty "
    "hundred thousand million".split()
)
# Interrogative/relative adverbs: lemminflect lists "where" and "how" as nouns too.
_WH_ADVERBS = frozenset("where when why how wherever whenever however".split())
_CLOSED_CLASSES: tuple[tuple[str, frozenset[str]], ...] = (
    ("DET", _DETERMINERS),
    ("PRON", _PRONOUNS),
    ("ADP", _ADPOSITIONS),
    ("CCONJ", _CONJUNCTIONS),
    ("NUM", _NUMERALS),
    ("ADV", _WH_ADVERBS),
)

# Nouns that never name a segmentable target: they refer to the picture itself, to a
# region or a position without saying what is there, or to the question ("which
# shape ...?"). Kept tiny on purpose.
GENERIC_WORDS = frozenset(
    "object thing item stuff picture image photo photograph scene view part area region section "
    "kind type sort form way answer example question option choice purpose shape "
    "left right center centre middle top bottom front".split()
)

_HAS_LETTER = re.compile(r"[^\W\d_]")


def _clean(word: str) -> str:
    return word.strip().lower()


@lru_cache(maxsize=65536)
def closed_class(word: str) -> frozenset[str]:
    """Closed-class tags (DET, PRON, ADP, CCONJ, NUM, wh-ADV) of ``word``; empty for open-class words."""
    w = _clean(word)
    tags = {tag for tag, members in _CLOSED_CLASSES if w in members}
    if w.isdigit():
        tags.add("NUM")
    return frozenset(tags)


@lru_cache(maxsize=65536)
def is_generic(word: str) -> bool:
    """True for words like "object" or "picture" (singular or plural) that name no target."""
    w = _clean(word)
    return w in GENERIC_WORDS or singular(w) in GENERIC_WORDS


@lru_cache(maxsize=65536)
def _lemmas(word: str) -> dict[str, tuple[str, ...]]:
    # Dictionary lookup only (no out-of-vocabulary guessing): an unknown word gets {}.
    return dict(lemminflect.getAllLemmas(word))


@lru_cache(maxsize=65536)
def word_pos(word: str) -> frozenset[str]:
    """UPOS tags the word can have: lemminflect's tags plus closed-class tags.

    Closed-class words lose lemminflect's NOUN/PROPN readings ("it", "this" are never
    target names). An unknown hyphenated word takes the tags of its last part, which
    is its head ("frisbee-like" -> tags of "like"). Other unknown words get no tags.
    """
    w = _clean(word)
    closed = closed_class(w)
    tags = set(_lemmas(w))
    if not tags and "-" in w:
        tags = set(_lemmas(w.rsplit("-", 1)[1]))
    if closed:
        tags -= {"NOUN", "PROPN"}
    return frozenset(tags | closed)


@lru_cache(maxsize=65536)
def can_be_noun(word: str) -> bool:
    """True when the word has a noun reading.

    Words the dictionary does not know ("tv", "selfie", "ipod") are assumed to be
    nouns: in image descriptions they are nearly always names of things.
    """
    w = _clean(word)
    if not w or closed_class(w) or not _HAS_LETTER.search(w):
        return False
    tags = word_pos(w)
    return not tags or bool(tags & {"NOUN", "PROPN"})


@lru_cache(maxsize=65536)
def is_participle(word: str) -> bool:
    """An -ing or past-participle verb form ("sitting", "placed", "made"), not a base form.

    After a noun such a word starts a clause ("the cat sitting"), before one it
    describes it ("a glowing lamp"). A past form that is also a noun in its own right
    ("ground", "left") is not counted, and neither are nouns that are verbs too ("bed",
    "string"): their verb lemma is the word itself. "-ing" nouns like "building" are
    caught; that is the price of having no tagger.
    """
    w = _clean(word)
    if "-" in w and not _lemmas(w):
        w = w.rsplit("-", 1)[1]
    lemmas = _lemmas(w)
    verb_lemmas = lemmas.get("VERB", ())
    if not verb_lemmas or w in verb_lemmas:
        return False
    if w.endswith("ing"):
        return True
    if w in lemmas.get("NOUN", ()):
        return False
    return any(w in _verb_forms(lemma, "VBN") or w in _verb_forms(lemma, "VBD") for lemma in verb_lemmas)


@lru_cache(maxsize=65536)
def _verb_forms(lemma: str, tag: str) -> frozenset[str]:
    return frozenset(lemminflect.getInflection(lemma, tag=tag) or ())


def _known_noun_split(word: str) -> tuple[str, str] | None:
    """Split an unknown closed compound into (prefix, known noun), longest noun first.

    "sunglasses" -> ("sun", "glasses"), "clownfish" -> ("clown", "fish"), so the known
    head decides the inflection instead of inflect's suffix rules ("sunglass").
    """
    for cut in range(2, len(word) - 2):
        head = word[cut:]
        if "NOUN" in _lemmas(head):
            return word[:cut], head
    return None


@lru_cache(maxsize=65536)
def singular(word: str) -> str:
    """Singular form of a noun (lower-case); other words and singulars come back unchanged.

    For a phrase only the last word (its head) is changed. Plural-only nouns that the
    dictionary lists as their own lemma stay as they are ("glasses", "scissors").
    """
    w = " ".join(_clean(word).split())
    if " " in w:
        rest, last = w.rsplit(" ", 1)
        return f"{rest} {singular(last)}"
    if not w or not can_be_noun(w):
        return w
    lemmas = _lemmas(w).get("NOUN", ())
    if lemmas:
        return w if w in lemmas else lemmas[0]
    if _lemmas(w):  # known, but only as a proper noun
        return w
    if "-" in w:
        rest, last = w.rsplit("-", 1)
        return f"{rest}-{singular(last)}"
    split = _known_noun_split(w)
    if split:
        return split[0] + singular(split[1])
    # Short unknown words are mostly acronyms ("gps"): suffix rules would cut their "s".
    if len(w) <= 3:
        return w
    # lemminflect's out-of-vocabulary rules (a dictionary-trained suffix model).
    guesses = lemminflect.getLemma(w, upos="NOUN", lemmatize_oov=True)
    return guesses[0].lower() if guesses else w


def _plurals(base: str) -> set[str]:
    lemmas = _lemmas(base).get("NOUN", ())
    if lemmas:
        forms: set[str] = set()
        for lemma in lemmas:
            for values in lemminflect.getAllInflections(lemma, upos="NOUN").values():
                forms.update(v.lower() for v in values)
        return forms
    if "-" in base:
        rest, last = base.rsplit("-", 1)
        return {f"{rest}-{form}" for form in _plurals(last)}
    split = _known_noun_split(base)
    if split:
        return {split[0] + form for form in _plurals(split[1])}
    if base.endswith("s"):  # an unknown word in -s: do not invent "gpss"
        return set()
    plurals = lemminflect.getInflection(base, tag="NNS", inflect_oov=True)
    return {plural.lower() for plural in plurals}


@lru_cache(maxsize=65536)
def word_forms(word: str) -> frozenset[str]:
    """The word with its singular and plural forms (lower-case), for matching in text.

    Words without a noun reading ("steering", "wooden") only match themselves.
    """
    w = _clean(word)
    if not w or not can_be_noun(w):
        return frozenset({w}) if w else frozenset()
    forms = {w}
    for lemma in set(_lemmas(w).get("NOUN", ())) | {singular(w)}:
        forms.add(lemma)
        forms |= _plurals(lemma)
    return frozenset(forms)
