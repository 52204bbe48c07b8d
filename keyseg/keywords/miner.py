"""Mine one keyword per record: ask a backend, check the answer, retry once, or flag.

A keyword is accepted only when `check_keyword` passes (grounded in the query or the
answer, 1-3 words, a noun phrase). An answer that fails gets exactly one retry with the
reason fed back; if that fails too, the record keeps `keyword = None` and its verdict
says why: a record is never filled with garbage.

Identical requests in one run (same record text, prompt, model and feedback) are sent
once and their answer shared. Ctrl-C (`interrupt`) sends nothing new and gives the
requests in flight a grace period to land in the cache; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Callable

from keyseg.keywords.backends import BackendError, Stopped
from keyseg.keywords.cache import AnswerCache, cache_key
from keyseg.keywords.grounding import Verdict, check_keyword, normalize_keyword
from keyseg.keywords.prompt import PROMPT_VERSION, parse_keyword
from keyseg.keywords.records import KeywordRecord

DEFAULT_INTERRUPT_GRACE = 5.0  # seconds the requests in flight get after a Ctrl-C


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
    calls: int = 0  # requests this run paid for (each may include the client's own retries)
    cache_hits: int = 0
    deduplicated: int = 0  # answers shared with an identical request of this run
    retries: int = 0  # grounding retries plus our transport retries
    client_retries: int = 0  # retries the openai client made inside a call
    failures: int = 0  # records whose backend gave up
    prompt_tokens: int = 0
    completion_tokens: int = 0


class MiningInterrupted(Exception):
    """Ctrl-C stopped the run; every answer received before the stop is in the cache."""


def request_key(backend, record: KeywordRecord, feedback) -> str:
    return cache_key(backend.name, backend.model, PROMPT_VERSION, record.query, record.outputs,
                     json.dumps(feedback))


class KeywordMiner:
    def __init__(self, backend, cache: AnswerCache, concurrency: int = 8,
                 interrupt_grace: float = DEFAULT_INTERRUPT_GRACE, notify: Callable[[str], None] | None = None):
        self.backend = backend
        self.cache = cache
        self.semaphore = asyncio.Semaphore(max(1, concurrency))
        self.interrupt_grace = max(0.0, interrupt_grace)
        self.notify = notify or (lambda text: None)
        self.stats = MiningStats()
        self._requests: dict[str, asyncio.Task] = {}  # one per distinct request of this run
        self._records: list[asyncio.Task] = []
        self._in_flight = 0
        self._interrupted = False
        self._grace_timer: asyncio.TimerHandle | None = None

    async def _answer(self, record: KeywordRecord, feedback) -> tuple[str | None, bool]:
        key = request_key(self.backend, record, feedback)
        request = self._requests.get(key)
        if request is None:
            entry = self.cache.get(key)
            if entry is not None and isinstance(entry.get("content"), (str, type(None))):
                self.stats.cache_hits += 1
                return entry.get("content"), True
            request = self._requests[key] = asyncio.ensure_future(self._request(key, record, feedback))
        else:
            self.stats.deduplicated += 1
        # Shielded: a record that stops waiting must not cancel a request others share.
        return await asyncio.shield(request), False

    async def _request(self, key: str, record: KeywordRecord, feedback) -> str | None:
        async with self.semaphore:
            if self._interrupted:
                raise Stopped()
            self._in_flight += 1
            try:
                reply = await self.backend.complete(record.query, record.outputs, feedback)
            finally:
                self._in_flight -= 1
        self.stats.calls += 1
        self.stats.retries += reply.transport_retries
        self.stats.prompt_tokens += reply.prompt_tokens
        self.stats.completion_tokens += reply.completion_tokens
        # Cached the moment the reply is in hand, whatever happens to the records waiting
        # for it: only a request still on the wire when the process dies is paid twice.
        self.cache.put(key, {"content": reply.content, "prompt_tokens": reply.prompt_tokens,
                             "completion_tokens": reply.completion_tokens})
        return reply.content

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
        """Every record's result, in order. Raises MiningInterrupted after `interrupt`."""
        self.stats.records = len(records)

        async def one(index: int, record: KeywordRecord) -> MinedKeyword:
            result = await self.mine(index, record)
            if on_done is not None:
                on_done(result)
            return result

        self._records = [asyncio.ensure_future(one(index, record)) for index, record in enumerate(records)]
        try:
            outcomes = await asyncio.gather(*self._records, return_exceptions=True)
            # Requests cancelled by a second Ctrl-C finish unwinding before the client closes.
            await asyncio.gather(*self._requests.values(), return_exceptions=True)
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            self.stats.client_retries = getattr(self.backend, "retries_by_client", 0)
        if self._interrupted:
            raise MiningInterrupted()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes

    def interrupt(self) -> None:
        """Ctrl-C: send nothing new; let what is in flight land for `interrupt_grace` seconds.

        A second call (a second Ctrl-C) cancels everything at once. Call it on the loop."""
        if self._interrupted:
            self.notify("interrupted again: stopping now; the answers still in flight are lost")
            self._cancel_all()
            return
        self._interrupted = True
        self.backend.stop_sending()
        if self._in_flight:
            self.notify(f"interrupted: waiting up to {self.interrupt_grace:g} s for {self._in_flight} "
                        f"request(s) in flight so their answers are kept; Ctrl-C again to stop now")
            self._grace_timer = asyncio.get_running_loop().call_later(self.interrupt_grace, self._cancel_all)
        else:
            self.notify("interrupted: no request in flight; stopping")

    def _cancel_all(self) -> None:
        for task in (*self._records, *self._requests.values()):
            task.cancel()
