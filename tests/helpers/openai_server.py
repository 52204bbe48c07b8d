"""A small OpenAI-compatible HTTP server for tests and benchmarks (standard library only).

It listens on a real socket on 127.0.0.1 and speaks just enough of the OpenAI REST API for the
official ``openai`` client to talk to it::

    with FakeOpenAIServer(responder=lambda body: '{"keyword": "cat"}') as server:
        client = openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

Endpoints
    POST /v1/chat/completions   a ``chat.completion`` object whose content is ``responder(body)``
    GET  /v1/models             a small model list
    anything else               404 with an OpenAI-style error body

Order of checks for a chat completion request
    1. the request is recorded in ``server.requests``;
    2. ``required_api_key``: a wrong or missing ``Authorization: Bearer <key>`` gets 401 and does
       NOT consume a queued fault;
    3. while ``hold()`` is on, the request waits here until ``release()`` (or ``stop()``);
       ``wait_for_held(n)`` blocks the test until n requests are waiting (no clock involved);
    4. ``latency`` is slept (every chat completion request, errors included);
    5. the next queued fault (if any) is taken, FIFO, and recorded in the request's ``"fault"``;
       error faults (429, 500, malformed, empty_choices) answer right away;
    6. a body that is not a JSON object gets 400;
    7. ``accept_response_format=False``: a ``response_format`` of type json_schema/json_object gets 400;
    8. ``slow:S`` sleeps S seconds; ``text:<content>`` replaces the responder's content.

Faults (``server.inject(...)``)
    "429"            429, headers ``Retry-After: 1`` and ``Retry-After-Ms: 1000``
    "429:SECONDS"    429, ``Retry-After-Ms: SECONDS*1000`` and ``Retry-After: ceil(SECONDS)``
                     (Retry-After must be an integer in HTTP; the openai client prefers Retry-After-Ms)
    "429-raw:VALUE"  429 with exactly ``Retry-After: VALUE`` (no Retry-After-Ms): dates, garbage
    "500"            500 with a server_error body
    "slow:SECONDS"   sleep SECONDS, then answer normally (to exceed a client timeout)
    "malformed"      200, Content-Type application/json, a body that is not valid JSON
    "empty_choices"  200, a valid chat.completion with ``"choices": []``
    "text:<content>" answer normally, with exactly <content> as the message content

Headers are recorded in ``server.requests`` (tests may check them) but never printed or logged.
``server.prompt_counts()`` counts the chat completion requests per prompt (first user message).

Standalone, for manual checks and benchmarks in another process::

    python tests/helpers/openai_server.py --port 8765 --latency 0.15

prints its base URL on stdout, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import socket
import threading
import time
import uuid
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

MODELS = ("fake-keyword-model", "gpt-4o-mini")
_FAULT = re.compile(r"^(?:429(?::\d+(?:\.\d+)?)?|429-raw:[^\r\n]*|500|malformed|empty_choices|slow:\d+(?:\.\d+)?"
                    r"|text:.*)$", re.S)


def default_responder(body: dict) -> str:
    return json.dumps({"keyword": "ball"})


def rough_tokens(text: str) -> int:
    """A rough token count: words * 1.3."""
    return int(len(text.split()) * 1.3)


def _message_text(messages: Any) -> str:
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # multi-part content: count the text parts only
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return " ".join(parts)


def _error(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address, handler, owner: "FakeOpenAIServer"):
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections, self.connections = list(self.connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):  # quiet: clients hanging up are expected
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    timeout = 30  # idle keep-alive connections are dropped after this
    server: _Server

    def log_message(self, format, *args):  # quiet, and never log anything that could carry the key
        pass

    # -- plumbing ---------------------------------------------------------------------------------
    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None):
        if self.server.owner._stopping.is_set():  # stopping: hang up instead of answering
            self.close_connection = True
            return
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. its timeout fired) or the server is stopping
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _record(self, body: Any) -> dict:
        entry = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                 "body": body, "fault": None}
        owner = self.server.owner
        with owner._lock:
            owner.requests.append(entry)
        return entry

    # -- routes -----------------------------------------------------------------------------------
    def do_GET(self):
        self._read_body()
        self._record(None)
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in MODELS]})
        else:
            self._not_found()

    def do_POST(self):
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        entry = self._record(body)
        if self.path.split("?", 1)[0].rstrip("/") == "/v1/chat/completions":
            self._chat_completion(entry, body, raw)
        else:
            self._not_found()

    def do_PUT(self):
        self.do_POST()

    def do_DELETE(self):
        self.do_POST()

    def _not_found(self):
        self._send(404, _error(f"Unknown request URL: {self.command} {self.path}", "invalid_request_error",
                               code="unknown_url"))

    def _chat_completion(self, entry: dict, body: Any, raw: bytes) -> None:
        owner = self.server.owner
        if owner.required_api_key is not None and \
                self.headers.get("Authorization") != f"Bearer {owner.required_api_key}":
            self._send(401, _error("Incorrect API key provided.", "invalid_request_error",
                                   code="invalid_api_key"))
            return
        owner._wait_while_held()
        if owner.latency > 0:
            owner._stopping.wait(owner.latency)
        fault = owner._next_fault()
        entry["fault"] = fault

        if fault is not None and fault.startswith("429-raw:"):
            self._send(429, _error("Rate limit reached", "rate_limit_error", code="rate_limit_exceeded"),
                       headers={"Retry-After": fault[len("429-raw:"):]})
            return
        if fault is not None and fault.startswith("429"):
            seconds = float(fault.split(":", 1)[1]) if ":" in fault else 1.0
            self._send(429, _error("Rate limit reached", "rate_limit_error", code="rate_limit_exceeded"),
                       headers={"Retry-After": str(math.ceil(seconds)),
                                "Retry-After-Ms": str(int(round(seconds * 1000)))})
            return
        if fault == "500":
            self._send(500, _error("The server had an error while processing your request.", "server_error"))
            return
        if fault == "malformed":
            self._send(200, None, raw=b'{"id": "x", "choices": [')
            return

        if not isinstance(body, dict):
            self._send(400, _error("We could not parse the JSON body of your request.", "invalid_request_error"))
            return
        response_format = body.get("response_format")
        if not owner.accept_response_format and isinstance(response_format, dict) \
                and response_format.get("type") in ("json_schema", "json_object"):
            self._send(400, _error(f"response_format of type {response_format['type']} is not supported by "
                                   "this server", "invalid_request_error", param="response_format",
                                   code="unsupported_parameter"))
            return

        if fault is not None and fault.startswith("slow:"):
            owner._stopping.wait(float(fault.split(":", 1)[1]))
        if fault is not None and fault.startswith("text:"):
            content = fault[len("text:"):]
        elif fault == "empty_choices":
            content = ""
        else:
            try:
                content = owner.responder(body)
            except Exception as exc:  # surface responder bugs to the test instead of hanging
                owner.errors.append(exc)
                self._send(500, _error(f"responder raised {type(exc).__name__}: {exc}", "server_error"))
                return
            if not isinstance(content, str):
                content = json.dumps(content)

        prompt_tokens = rough_tokens(_message_text(body.get("messages")))
        completion_tokens = rough_tokens(content)
        choices = [] if fault == "empty_choices" else [
            {"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
             "logprobs": None, "finish_reason": "stop"}]
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", MODELS[0]),
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


class FakeOpenAIServer:
    """Real socket server on 127.0.0.1 (port 0 -> ephemeral), run in a daemon thread. Context manager.

    Attributes: ``url`` ("http://127.0.0.1:PORT/v1", the openai ``base_url``), ``requests`` (every
    request received, in order: {"path", "headers" (lower-case keys), "body" (parsed JSON or None),
    "fault" (name or None)}), ``errors`` (exceptions raised by the responder).
    """

    def __init__(self, responder: Callable[[dict], str] | None = None, latency: float = 0.0,
                 accept_response_format: bool = True, required_api_key: str | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self.responder = responder or default_responder
        self.latency = float(latency)
        self.accept_response_format = accept_response_format
        self.required_api_key = required_api_key
        self.host, self.port = host, port
        self.requests: list[dict] = []
        self.errors: list[BaseException] = []
        self.url = ""
        self._lock = threading.Lock()
        self._faults: deque[str] = deque()
        self._stopping = threading.Event()
        self._hold = threading.Condition(self._lock)
        self._holding = False
        self._held = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def inject(self, *faults: str) -> None:
        """Queue faults; each incoming chat completion request consumes one, FIFO."""
        for fault in faults:
            if not isinstance(fault, str) or not _FAULT.match(fault):
                raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._faults.extend(faults)

    def _next_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def hold(self) -> None:
        """From now on, chat completion requests wait (recorded, unanswered) until `release()`."""
        with self._hold:
            self._holding = True

    def release(self) -> None:
        """Let every held request (and every later one) go on to be answered."""
        with self._hold:
            self._holding = False
            self._hold.notify_all()

    @property
    def held(self) -> int:
        """Requests waiting in `hold()` right now."""
        with self._hold:
            return self._held

    def wait_for_held(self, count: int, timeout: float = 60.0, give_up: Callable[[], bool] | None = None) -> None:
        """Block until `count` requests are held. TimeoutError after `timeout` seconds, or as
        soon as `give_up()` is true (e.g. the client process has exited): a broken test fails
        instead of hanging."""
        deadline = time.monotonic() + timeout
        with self._hold:
            while self._held < count:
                if give_up is not None and give_up():
                    raise TimeoutError(f"gave up with {self._held} request(s) held, expected {count}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._held} request(s) held, expected {count}")
                # Short waits only so that give_up() is asked again; a new hold wakes us at once.
                self._hold.wait(min(remaining, 0.1))

    def _wait_while_held(self) -> None:
        with self._hold:
            if not self._holding:
                return
            self._held += 1
            self._hold.notify_all()
            self._hold.wait_for(lambda: not self._holding or self._stopping.is_set())
            self._held -= 1

    def prompt_counts(self) -> Counter:
        """Chat completion requests per prompt: the text of each request's first user message."""
        counts: Counter = Counter()
        with self._lock:
            for request in self.requests:
                body = request["body"]
                if request["path"].split("?", 1)[0].rstrip("/") != "/v1/chat/completions" \
                        or not isinstance(body, dict):
                    continue
                users = [m.get("content") for m in body.get("messages") or []
                         if isinstance(m, dict) and m.get("role") == "user"]
                if users and isinstance(users[0], str):
                    counts[users[0]] += 1
        return counts

    @property
    def pending_faults(self) -> list[str]:
        with self._lock:
            return list(self._faults)

    @property
    def completion_requests(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].split("?", 1)[0].rstrip("/") == "/v1/chat/completions")

    def start(self) -> "FakeOpenAIServer":
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), _Handler, self)
        host, port = self._server.server_address[:2]
        self.port = port
        self.url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-openai-{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wake requests sleeping on latency / slow faults; they hang up unanswered
        with self._hold:  # and the held ones
            self._hold.notify_all()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible API until SIGINT/SIGTERM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept before each chat answer")
    parser.add_argument("--no-response-format", action="store_true",
                        help="reject json_schema/json_object response_format with 400")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")
    args = parser.parse_args(argv)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    server = FakeOpenAIServer(latency=args.latency, accept_response_format=not args.no_response_format,
                              required_api_key=args.api_key, host=args.host, port=args.port)
    with server:
        print(server.url, flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
