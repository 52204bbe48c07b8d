"""Mine one keyword per record: ask a backend, check the answer, retry once, or flag.

A keyword is accepted only when `check_keyword` passes (grounded in the query or the
answer, 1-3 words, a noun phrase). An answer that fails gets exactly one retry with the
reason fed back; if that fails too, the record keeps `keyword = None` and its verdict
says why: a record is never filled with garbage.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Callable

from keyseg.keywords.backends import BackendError
from keyseg.keywords.cache import AnswerCache, cache_key
from keyseg.keywords.grounding import Verdict, check_keyword, normalize_keyword
from keyseg.keywords.prompt import PROMPT_VERSION, parse_keyword
from keyseg.keywords.records import KeywordRecord


@dataclass
class MinedKeyword:
    index: int
    keyword: str | None  # None: flagged
    verdict: Verdict
    answers: list[str | None] = field(default_factory=list)  # raw keyword of each attempt
    cached: bool = False  # every answer came from the cache
    error: str | None = None  # the backend gave up


@dataclass
class MiningStats:
    records: int = 0
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0  # grounding retries plus transport retries
    failures: int = 0  # records whose backend gave up
    prompt_tokens: int = 0
    completion_tokens: int = 0


def request_key(backend, record: KeywordRecord, feedback) -> str:
    return cache_key(backend.name, backend.model, PROMPT_VERSION, record.query, record.outputs,
                     json.dumps(feedback))


class KeywordMiner:
    def __init__(self, backend, cache: AnswerCache, concurrency: int = 8):
        self.backend = backend
        self.cache = cache
        self.semaphore = asyncio.Semaphore(max(1, concurrency))
        self.stats = MiningStats()

    async def _answer(self, record: KeywordRecord, feedback) -> tuple[str | None, bool]:
        key = request_key(self.backend, record, feedback)
        entry = self.cache.get(key)
        if entry is not None:
            self.stats.cache_hits += 1
            return entry.get("content"), True
        async with self.semaphore:
            reply = await self.backend.complete(record.query, record.outputs, feedback)
        self.stats.calls += 1
        self.stats.retries += reply.transport_retries
        self.stats.prompt_tokens += reply.prompt_tokens
        self.stats.completion_tokens += reply.completion_tokens
        # Cached only once the reply is in hand: a crash before this line costs one call.
        self.cache.put(key, {"content": reply.content, "prompt_tokens": reply.prompt_tokens,
                             "completion_tokens": reply.completion_tokens})
        return reply.content, False

    async def mine(self, index: int, record: KeywordRecord) -> MinedKeyword:
        feedback, answers, all_cached = None, [], True
        verdict = None
        for attempt in range(2):
            try:
                content, cached = await self._answer(record, feedback)
            except BackendError as error:
                self.stats.failures += 1
                verdict = Verdict("failed", str(error), ())
                return MinedKeyword(index, None, verdict, answers, False, str(error))
            all_cached &= cached
            keyword = normalize_keyword(parse_keyword(content))
            answers.append(keyword or None)
            verdict = check_keyword(keyword, record.query, record.outputs)
            if verdict.ok:
                return MinedKeyword(index, keyword, verdict, answers, all_cached)
            if attempt == 0:
                self.stats.retries += 1
                feedback = [keyword or (content or ""), verdict.reason]
        return MinedKeyword(index, None, verdict, answers, all_cached)

    async def mine_all(self, records: list[KeywordRecord],
                       on_done: Callable[[MinedKeyword], None] | None = None) -> list[MinedKeyword]:
        self.stats.records = len(records)

        async def one(index: int, record: KeywordRecord) -> MinedKeyword:
            result = await self.mine(index, record)
            if on_done is not None:
                on_done(result)
            return result

        return list(await asyncio.gather(*(one(index, record) for index, record in enumerate(records))))
