"""How a keyword gets its verdict, and what a corrected keyword file keeps.

generate: a mined keyword is "ok"; a record without one keeps the miner's verdict
          (ungrounded, not_a_noun_phrase, failed...) and a null keyword.
validate: a published keyword is checked against its own record's text. A language
          model that extracts a different keyword makes it "disagrees"; the heuristic's
          opinion never does (it picks the wrong noun too often, see HEURISTIC_LIMITS).
fix:      an "ok" keyword is kept; any other is replaced by our own mined keyword, which
          is null when ours failed its check too.
"""

from __future__ import annotations

from dataclasses import asdict

from keyseg.keywords.grounding import Verdict, check_keyword, keywords_agree, normalize_keyword
from keyseg.keywords.miner import MinedKeyword
from keyseg.keywords.records import KeywordRecord


def published_verdict(record: KeywordRecord) -> Verdict:
    """The check of a keyword file's own keyword; a non-string is this record's problem only."""
    published = record.keyword
    if published is None or isinstance(published, str):
        return check_keyword(published, record.query, record.outputs)
    return Verdict("not_a_string", f"the keyword is {type(published).__name__}, not a string or null", ())


def _evidence(verdict: Verdict) -> list[dict]:
    return [asdict(item) for item in verdict.evidence]


def generate_row(index: int, record: KeywordRecord, mined: MinedKeyword) -> dict:
    """The report row of one mined record."""
    return {"index": index, "image": record.image, "keyword": mined.keyword,
            "verdict": "ok" if mined.keyword else mined.verdict.code, "reason": mined.verdict.reason,
            "evidence": _evidence(mined.verdict), "answers": mined.answers, "cached": mined.cached}


def validate_row(index: int, record: KeywordRecord, own: MinedKeyword, backend_name: str) -> dict:
    """The report row of one published keyword: its verdict, our own keyword, and the fixed one."""
    published = record.keyword
    verdict = published_verdict(record)
    code, reason = verdict.code, verdict.reason
    differs = bool(verdict.ok and own.keyword and not keywords_agree(normalize_keyword(published), own.keyword))
    if differs and backend_name != "heuristic":
        code, reason = "disagrees", f"published {published!r}, {backend_name} extracts {own.keyword!r}"
    fixed = published if code == "ok" else own.keyword
    return {"index": index, "image": record.image, "keyword": published, "verdict": code, "reason": reason,
            "evidence": _evidence(verdict), "own_keyword": own.keyword, "own_verdict": own.verdict.code,
            "own_differs": differs, "fixed": fixed}
