"""Where keywords come from: an OpenAI-compatible server, a local transformers model, or
the offline heuristic. Each backend answers one record at a time with a `Reply`."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from dataclasses import dataclass
from datetime import timezone

from keyseg.keywords.heuristic import heuristic_keyword
from keyseg.keywords.prompt import KEYWORD_SCHEMA, build_messages


@dataclass
class Reply:
    content: str | None  # the model's raw text
    prompt_tokens: int = 0
    completion_tokens: int = 0
    transport_retries: int = 0  # 429 / 5xx / timeouts / malformed bodies we retried


class BackendError(RuntimeError):
    """No usable reply after every attempt; the record is flagged, not filled."""


class Stopped(Exception):
    """The run was interrupted: no new request (or retry) is sent."""


# The longest wait a server's Retry-After gets by default before we retry anyway.
DEFAULT_MAX_RETRY_WAIT = 60.0


class HeuristicBackend:
    """Offline and deterministic; see keyseg.keywords.heuristic for what it can't do."""

    name = "heuristic"
    model = "heuristic-v1"

    async def complete(self, query: str, outputs: str, feedback=None) -> Reply:
        keyword, reason = heuristic_keyword(query, outputs)
        return Reply(json.dumps({"keyword": keyword, "reason": reason}))

    def stop_sending(self) -> None:
        pass  # nothing is ever in flight

    async def aclose(self) -> None:
        pass


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart (None: no limit)."""

    def __init__(self, requests_per_minute: float | None):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = max(0.0, self._next - now)
            self._next = max(now, self._next) + self.interval
        if delay:
            await asyncio.sleep(delay)


def retry_after_seconds(headers) -> float | None:
    """Seconds a 429/503 asks us to wait (`retry-after-ms`, `retry-after` seconds or date).

    None when no wait is named or it cannot be read (a hostile header is ignored, never
    raised); "inf" comes back as inf and a date in the past as 0: callers cap the wait.
    """
    if headers is None:
        return None
    milliseconds = _non_negative_number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _non_negative_number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # HTTP dates are GMT
    return max(0.0, when.timestamp() - time.time())


def _non_negative_number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else max(0.0, value)


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or math.isinf(value) else f"{value:.3g}"


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint through the official `openai` client.

    The client retries on its own (`client_retries`: 5xx, timeouts, connection errors);
    those retries are counted (`retries_by_client`, from the retry-count header it sends).
    On top of that we retry up to `max_attempts` times, with exponential backoff: 429s,
    5xx, timeouts and malformed bodies. A reply that names a wait (Retry-After) is always
    ours, never the client's: the client would sleep up to two minutes without a word, we
    cap the wait at `max_retry_wait` and say so through `notify`. Structured output
    (`response_format` with our JSON schema) is asked for until the server says it does
    not support it; then plain text is parsed.
    """

    name = "openai"

    def __init__(self, model: str, api_key: str, base_url: str | None = None, timeout: float = 60.0,
                 client_retries: int = 2, max_attempts: int = 4, requests_per_minute: float | None = None,
                 backoff: float = 0.5, max_tokens: int = 32, max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
                 notify=None):
        import openai

        self._openai = openai
        self.model = model
        self.retries_by_client = 0  # retries the client made inside our calls
        http_client = openai.DefaultAsyncHttpxClient(event_hooks={"request": [self._count_client_retry],
                                                                  "response": [self._keep_server_waits]})
        self.client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout,
                                         max_retries=client_retries, http_client=http_client)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.max_retry_wait = max(0.0, max_retry_wait)
        self.notify = notify or (lambda text: None)
        self.limiter = RateLimiter(requests_per_minute)
        self.structured_output = True
        self._stop = asyncio.Event()

    async def _count_client_retry(self, request) -> None:
        # The client numbers its own attempts in this header; 0 is the first.
        try:
            if int(request.headers.get("x-stainless-retry-count", "0")) > 0:
                self.retries_by_client += 1
        except ValueError:
            pass

    async def _keep_server_waits(self, response) -> None:
        # The client obeys `x-should-retry`; "false" hands the reply to our loop, which
        # caps the wait and prints it.
        if (response.status_code == 429 or response.status_code >= 500) and \
                retry_after_seconds(response.headers) is not None:
            response.headers["x-should-retry"] = "false"

    def stop_sending(self) -> None:
        """Interrupted: requests on the wire may finish; nothing new (no retry) is sent."""
        self._stop.set()

    def request_body(self, query: str, outputs: str, feedback=None) -> dict:
        body = {"model": self.model, "messages": build_messages(query, outputs, feedback), "temperature": 0,
                "max_tokens": self.max_tokens}
        if self.structured_output:
            body["response_format"] = {"type": "json_schema", "json_schema": KEYWORD_SCHEMA}
        return body

    async def complete(self, query: str, outputs: str, feedback=None) -> Reply:
        openai = self._openai
        retries, last_problem = 0, "no attempt made"
        attempt = 0
        while attempt < self.max_attempts:
            attempt += 1
            await self.limiter.wait()
            if self._stop.is_set():
                raise Stopped()
            delay = self.backoff * (2 ** (attempt - 1))
            asked, status = None, ""  # the wait the server named, if any, and the HTTP status naming it
            body = self.request_body(query, outputs, feedback)
            try:
                response = await self.client.chat.completions.create(**body)
                if not response.choices:
                    raise ValueError("the reply has no choices")
                usage = response.usage
                return Reply(response.choices[0].message.content,
                             getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0,
                             retries)
            except openai.BadRequestError as error:
                if "response_format" in body and "response_format" in str(error):
                    # The server does not do structured output: from now on every request
                    # (this one included) asks in plain text.
                    self.structured_output = False
                    attempt -= 1
                    continue
                raise BackendError(f"the server rejected the request: {_short(error)}") from None
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as error:
                raise BackendError(f"{type(error).__name__}: {_short(error)}") from None
            except openai.RateLimitError as error:
                asked, status = retry_after_seconds(error.response.headers), "429"
                last_problem = "rate limited (429)"
            except openai.APITimeoutError:
                last_problem = "timed out"
            except openai.APIConnectionError as error:
                last_problem = f"connection failed ({_short(error)})"
            except openai.APIStatusError as error:
                if error.status_code < 500:
                    raise BackendError(f"HTTP {error.status_code}: {_short(error)}") from None
                asked, status = retry_after_seconds(error.response.headers), str(error.status_code)
                last_problem = f"server error {error.status_code}"
            except (ValueError, openai.APIResponseValidationError) as error:  # malformed bodies
                last_problem = f"malformed reply ({_short(error)})"
            retries += 1
            if attempt < self.max_attempts:
                await self._wait_before_retry(delay, asked, status)
        raise BackendError(f"gave up after {self.max_attempts} attempts: {last_problem}")

    async def _wait_before_retry(self, backoff: float, asked: float | None, status: str) -> None:
        wait = min(backoff if asked is None else asked, self.max_retry_wait)
        # A server-named wait is announced when it is long enough to look like a hang.
        if asked is not None and (asked > wait or wait >= 1):
            capped = ", the cap (--max-retry-wait)" if asked > wait else ""
            self.notify(f"server asked to wait {_seconds(asked)} s ({status}); waiting {_seconds(wait)} s{capped}")
        try:  # an interrupt ends the wait at once
            await asyncio.wait_for(self._stop.wait(), wait)
        except asyncio.TimeoutError:
            pass

    async def aclose(self) -> None:
        await self.client.close()


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]


class HFBackend:
    """A local transformers model (seq2seq or causal) from a folder; greedy decoding.

    Loaded with `local_files_only`, so nothing is downloaded. Generation runs in a worker
    thread, one record at a time (a CPU or single GPU gains nothing from more).
    """

    name = "hf"

    def __init__(self, model_path: str, max_new_tokens: int = 10, device: str = "cpu"):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        self._torch = torch
        self.model = str(model_path)
        config = AutoConfig.from_pretrained(model_path, local_files_only=True)
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        loader = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.network = loader.from_pretrained(model_path, local_files_only=True).to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        self._lock = asyncio.Lock()
        self._stopped = False

    def _prompt(self, query: str, outputs: str, feedback) -> str:
        messages = build_messages(query, outputs, feedback)
        if not self.seq2seq and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(message["content"] for message in messages) + "\nKeyword:"

    def _generate(self, prompt: str) -> Reply:
        torch = self._torch
        inputs = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            generated = self.network.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                              num_beams=1, pad_token_id=pad)
        # A decoder's output starts with its start token; a causal LM's with the prompt.
        prompt_length = 1 if self.seq2seq else inputs["input_ids"].shape[1]
        new_tokens = generated[0, prompt_length:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return Reply(text, int(inputs["input_ids"].shape[1]), int(len(new_tokens)))

    async def complete(self, query: str, outputs: str, feedback=None) -> Reply:
        async with self._lock:
            if self._stopped:
                raise Stopped()
            return await asyncio.to_thread(self._generate, self._prompt(query, outputs, feedback))

    def stop_sending(self) -> None:
        self._stopped = True  # the generation under way finishes; queued ones do not start

    async def aclose(self) -> None:
        pass
