"""The OpenAI Batch API file format: the requests file we write, the results file we read.

A request line's `custom_id` is the answer-cache key of its request, so a results file
fills the cache and the next live run finds every answer there (and pays for none).
"""

from __future__ import annotations

from pathlib import Path

from keyseg.errors import DataError, UsageError
from keyseg.io import atomic_write_jsonl, json_lines
from keyseg.keywords.cache import AnswerCache, is_cache_key
from keyseg.keywords.miner import request_key
from keyseg.keywords.records import KeywordRecord

ENDPOINT = "/v1/chat/completions"


def can_write_requests(backend) -> bool:
    """Only a backend that builds OpenAI request bodies (the openai one) can fill a requests file."""
    return hasattr(backend, "request_body")


def write_requests(path: Path, records: list[KeywordRecord], backend, cache: AnswerCache) -> int:
    """One chat request per record whose first question is not in the cache yet; returns how many."""
    if not can_write_requests(backend):
        raise UsageError(f"the {backend.name} backend cannot write OpenAI Batch API requests")
    lines = []
    for record in records:
        key = request_key(backend, record, None)
        if cache.get(key) is None:
            lines.append({"custom_id": key, "method": "POST", "url": ENDPOINT,
                          "body": backend.request_body(record.query, record.outputs)})
    atomic_write_jsonl(path, lines)
    return len(lines)


def ingest_results(path: Path, cache: AnswerCache) -> tuple[int, int]:
    """Store the answers of a results file in the cache; returns (ingested, skipped).

    A line that is not a JSON object means the file is not a results file: DataError,
    before anything is stored. A line without a usable answer (a failed request, an id
    that is not one of our cache keys, a reply of the wrong shape) is skipped: its record
    is asked live.
    """
    path = Path(path)
    answers, skipped = [], 0
    for number, item, problem in json_lines(path):
        if problem:
            raise DataError(path, f"line {number}: {problem}; expected Batch API output lines")
        if not isinstance(item, dict):
            raise DataError(path, f"line {number}: expected a JSON object, found {type(item).__name__}")
        answer = cache_entry(item)
        if answer is None:
            skipped += 1
        else:
            answers.append(answer)
    for key, entry in answers:
        cache.put(key, entry)
    return len(answers), skipped


def cache_entry(item: dict) -> tuple[str, dict] | None:
    """(cache key, cache entry) of one results line, or None when it holds no answer."""
    key, response = item.get("custom_id"), item.get("response")
    # The id names a cache file: only a key we could have made is used.
    if not is_cache_key(key) or not isinstance(response, dict) or response.get("status_code") != 200:
        return None
    body = response.get("body")
    choices = body.get("choices") if isinstance(body, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        return None
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}

    def tokens(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    return key, {"content": content, "prompt_tokens": tokens("prompt_tokens"),
                 "completion_tokens": tokens("completion_tokens")}
