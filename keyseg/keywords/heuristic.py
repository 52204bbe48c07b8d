"""Offline keyword extraction: the best-grounded noun phrase of the answer, no model.

Used when no language model is configured, and as a cross-check for published
keywords. The answer ("outputs") of a ReasonSeg record usually names the target
early and repeatedly ("In the image, the steering wheel ... The steering wheel is
..."), while the query mostly describes the situation around it. So the answer's
noun phrases are scored by how often and how early they occur and by a few answer
cues ("is the X", "X is the answer"). A phrase that also occurs in the query is
demoted: on the published ReasonSeg keyword file the query's nouns are mostly
context ("What part of the car ..."), not the target.

Finding the phrases (which words form one, which are used as nouns) is `noun_phrases`'
job; this module only scores them and keeps the best that passes `check_keyword`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from keyseg.keywords.grounding import check_keyword, find_evidence
from keyseg.keywords.lexicon import can_be_noun, is_generic, is_participle, singular, word_pos
from keyseg.keywords.noun_phrases import (
    Token,
    can_modify,
    token_gerund_modifier,
    token_in_adjective_run,
    token_is_noun,
    token_modifies_next,
    token_verb_with_object,
    tokenize,
)

HEURISTIC_LIMITS = (
    "The heuristic keyword extractor uses no model and no part-of-speech tagger. Word classes come "
    "from a dictionary (lemminflect) and are context-free, so it cannot really tell whether 'light' or "
    "'orange' is a noun or an adjective, or whether 'climbs' in 'the cat climbs' is a verb; it only "
    "looks at the neighbouring words (determiners, plurals, what follows). It returns a grounded noun "
    "phrase of the answer of 1-3 words: a head noun with noun modifiers only ('traffic light'), "
    "adjectives such as colours and sizes dropped ('the red triangle' gives 'triangle'). It prefers "
    "phrases named often, early, or in 'is the X' / 'X is the answer' patterns, and demotes phrases "
    "that also occur in the query. It does not understand the question: it may pick the wrong object "
    "when the answer names several (a context object, the whole instead of a part or the reverse), "
    "it cannot resolve pronouns, it assumes unknown words (brand names, acronyms) are nouns, and it "
    "keeps abstract nouns ('safety', 'purpose') out only by scoring, not by meaning. If the answer "
    "names no noun it falls back to the query, and otherwise returns None. Whatever it returns passes "
    "check_keyword. On the published ReasonSeg keyword file it agrees with about two thirds of the "
    "published keywords that pass check_keyword."
)

# "is the X", "are two large X": the answer restating what the target is.
_COPULAS = frozenset({"is", "are", "was", "were", "be", "being"})
# "The red triangle on the left is the answer": the cue goes to the sentence's subject,
# its first noun phrase (the demo explanations use this form).
_ANSWER_CLAUSE = re.compile(
    r"\b(?:is|are)\s+(?:the|a|an)\s+(?:[\w-]+\s+){0,2}?(?:answer|target|ones?\b|shapes?\s+being)", re.IGNORECASE
)

# Score weights, chosen on the published ReasonSeg keyword file (round numbers; the
# ranking barely changes around them).
_PER_MENTION = 2.0  # per mention in the answer, up to _MAX_MENTIONS
_MAX_MENTIONS = 4
_CUE = 2.0  # named in an "is the X" / "X is the answer" pattern
_FIRST_SENTENCE = 1.0
_EARLY = 0.5  # per rank among the first four distinct phrases of the answer
_IN_QUERY = -2.0  # the query's nouns are mostly context
_ADJECTIVE = -1.0  # heads that are adjectives too ("white", "present") are often misread
_ONLY_PARTITIVE = -1.0  # "a pair of shoes", "a pile of hay": the named thing is after "of"


def _after_copula(tokens: list[Token], first: int) -> bool:
    """Is the phrase starting at token ``first`` at most three words after "is"/"are"?"""
    for k in range(first - 1, max(first - 5, -1), -1):
        if not tokens[k + 1].joined:
            return False
        if tokens[k].word in _COPULAS:
            return True
    return False


def _sentence_of(tokens: list[Token], offset: int) -> int:
    """Sentence index at character ``offset`` (the sentence of the last token starting before it)."""
    sentence = 0
    for tok in tokens:
        if tok.start > offset:
            break
        sentence = tok.sentence
    return sentence


def _can_head(word: str) -> bool:
    tags = word_pos(word)
    return can_be_noun(word) and not is_generic(word) and "AUX" not in tags and not is_participle(word)


@dataclass
class _Candidate:
    head: str  # singular head word
    rank: int  # order of first appearance among the text's candidates
    mentions: int = 0
    first_sentence: bool = False
    cue: bool = False
    partitive: int = 0  # mentions as "a pile of ...", "a pair of ..."
    # how the head is named: normalised phrase (singular head) -> surface phrases seen
    variants: dict[tuple[str, ...], Counter[str]] = field(default_factory=dict)


def _candidates(text: str) -> dict[str, _Candidate]:
    """Noun phrases of ``text`` used as noun phrases, grouped by singular head word."""
    tokens = tokenize(text)
    # (sentence, offset) of each "... is the answer" clause
    answer_clauses = [(_sentence_of(tokens, m.start()), m.start()) for m in _ANSWER_CLAUSE.finditer(text)]
    subject_seen: set[int] = set()  # sentences whose first noun phrase has been found
    found: dict[str, _Candidate] = {}
    for i, tok in enumerate(tokens):
        if not _can_head(tok.word):
            continue
        if token_modifies_next(tokens, i):
            continue  # "steering" in "steering wheel": a modifier here, not a head
        if (token_in_adjective_run(tokens, i, text) or token_verb_with_object(tokens, i, prepositions=False)
                or not token_is_noun(tokens, i, text)):
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        first = i  # extend left over noun modifiers, at most three words in all
        while i - first < 2 and tokens[first].joined and not tokens[first - 1].possessive:
            if not (can_modify(tokens[first - 1].word) or token_gerund_modifier(tokens, first - 1)):
                break
            first -= 1
        head = singular(tok.word)
        cand = found.setdefault(head, _Candidate(head, len(found)))
        cand.mentions += 1
        cand.first_sentence |= tok.sentence == 0
        is_subject = tok.sentence not in subject_seen
        subject_seen.add(tok.sentence)
        answer_follows = any(sentence == tok.sentence and tok.end <= at for sentence, at in answer_clauses)
        cand.cue |= _after_copula(tokens, first) or (is_subject and answer_follows)
        cand.partitive += nxt is not None and nxt.joined and nxt.word == "of"
        words = [t.word for t in tokens[first : i + 1]]
        for k in range(len(words)):  # every suffix of the modifier chain names this mention
            key = (*words[k:-1], head)
            cand.variants.setdefault(key, Counter())[" ".join(words[k:])] += 1
    return found


def _score(cand: _Candidate, query: str) -> float:
    score = _PER_MENTION * min(cand.mentions, _MAX_MENTIONS)
    score += _CUE * cand.cue + _FIRST_SENTENCE * cand.first_sentence
    score += _EARLY * max(0, 4 - cand.rank)
    if query and find_evidence(cand.head, query, ""):
        score += _IN_QUERY
    if "ADJ" in word_pos(cand.head):
        score += _ADJECTIVE
    if cand.partitive == cand.mentions:
        score += _ONLY_PARTITIVE
    return score


def _phrase_choices(cand: _Candidate) -> list[tuple[str, ...]]:
    """Ways to name the candidate, best first.

    A compound ("swim cap") wins over its bare head when at least half of the mentions
    use it; a three-word compound must also occur twice ("green cartoon alarm clock"
    once is noise, "alarm clock" is the name).
    """
    need = (cand.mentions + 1) // 2

    def usable(key: tuple[str, ...]) -> bool:
        uses = sum(cand.variants[key].values())
        return uses >= need and (len(key) < 3 or uses >= 2)

    keys = sorted(filter(usable, cand.variants), key=lambda k: (-len(k), -sum(cand.variants[k].values())))
    return [*keys, (cand.head,)]


def _written_form(key: tuple[str, ...], cand: _Candidate, text: str) -> str:
    """The singular phrase if the text has it, else its most frequent spelling ("glasses", not "glass")."""
    phrase = " ".join(key)
    pattern = r"(?<![\w-])" + re.escape(phrase).replace(r"\ ", r"\s+") + r"(?![\w-])"
    if re.search(pattern, text, re.IGNORECASE):
        return phrase
    surfaces = cand.variants.get(key)
    return surfaces.most_common(1)[0][0] if surfaces else phrase


def _pick(text: str, query: str, outputs: str, penalise_query: bool) -> tuple[str, _Candidate, float] | None:
    """Best candidate of ``text`` (the answer, or the query as a fallback) that passes check_keyword."""
    scored = [(_score(c, query if penalise_query else ""), c) for c in _candidates(text).values()]
    scored.sort(key=lambda item: (-item[0], item[1].rank))
    for score, cand in scored:
        for key in _phrase_choices(cand):
            keyword = _written_form(key, cand, text)
            if check_keyword(keyword, query, outputs).ok:  # the contract: never return an unchecked keyword
                return keyword, cand, score
    return None


def heuristic_keyword(query: str, outputs: str) -> tuple[str | None, str]:
    """(keyword, reason): the best-grounded 1-3 word noun phrase of the answer, or (None, why not)."""
    query, outputs = query or "", outputs or ""
    picked = _pick(outputs, query, outputs, penalise_query=True)
    source = "the answer"
    if picked is None:
        # Short LISA-style answers ("Sure, [SEG].") name nothing; then the query is all there is.
        picked = _pick(query, query, outputs, penalise_query=False)
        source = "the query (the answer names no noun phrase)"
    if picked is None:
        return None, "neither the answer nor the query contains a noun phrase that could name the target"
    keyword, cand, score = picked
    why = [f"named {cand.mentions} time(s)"]
    if cand.cue:
        why.append("in an 'is the ...' pattern")
    if cand.first_sentence:
        why.append("in the first sentence")
    return keyword, f"'{keyword}' from {source}: " + ", ".join(why) + f" (score {score:.1f})"
