"""Where keywords come from: an OpenAI-compatible server, a local transformers model, or
the offline heuristic. Each backend answers one record at a time with a `Reply`."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from dataclasses import dataclass

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


class HeuristicBackend:
    """Offline and deterministic; see keyseg.keywords.heuristic for what it can't do."""

    name = "heuristic"
    model = "heuristic-v1"

    async def complete(self, query: str, outputs: str, feedback=None) -> Reply:
        keyword, reason = heuristic_keyword(query, outputs)
        return Reply(json.dumps({"keyword": keyword, "reason": reason}))

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
    """Seconds a 429/503 asks us to wait (`retry-after-ms`, `retry-after` seconds or date)."""
    if headers is None:
        return None
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return float(value)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if value else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    return None


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint through the official `openai` client.

    The client retries on its own (`client_retries`); on top of that we retry 429s after
    their Retry-After, 5xx, timeouts and malformed bodies up to `max_attempts` times, with
    exponential backoff. Structured output (`response_format` with our JSON schema) is
    asked for until the server says it does not support it; then plain text is parsed.
    """

    name = "openai"

    def __init__(self, model: str, api_key: str, base_url: str | None = None, timeout: float = 60.0,
                 client_retries: int = 2, max_attempts: int = 4, requests_per_minute: float | None = None,
                 backoff: float = 0.5, max_tokens: int = 32):
        import openai

        self._openai = openai
        self.model = model
        self.client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout,
                                         max_retries=client_retries)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.limiter = RateLimiter(requests_per_minute)
        self.structured_output = True

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
            delay = self.backoff * (2 ** (attempt - 1))
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
                delay = retry_after_seconds(error.response.headers) or delay
                last_problem = "rate limited (429)"
            except openai.APITimeoutError:
                last_problem = "timed out"
            except openai.APIConnectionError as error:
                last_problem = f"connection failed ({_short(error)})"
            except openai.APIStatusError as error:
                if error.status_code < 500:
                    raise BackendError(f"HTTP {error.status_code}: {_short(error)}") from None
                last_problem = f"server error {error.status_code}"
            except (ValueError, openai.APIResponseValidationError) as error:  # malformed bodies
                last_problem = f"malformed reply ({_short(error)})"
            retries += 1
            if attempt < self.max_attempts:
                await asyncio.sleep(delay)
        raise BackendError(f"gave up after {self.max_attempts} attempts: {last_problem}")

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
            return await asyncio.to_thread(self._generate, self._prompt(query, outputs, feedback))

    async def aclose(self) -> None:
        pass
