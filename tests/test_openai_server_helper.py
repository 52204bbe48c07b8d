"""Tests for the fake OpenAI-compatible server in tests/helpers/openai_server.py.

They talk to it over real HTTP on 127.0.0.1 with the real ``openai`` client.
"""

import json
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai_server import FakeOpenAIServer

MESSAGES = [{"role": "system", "content": "Answer with one keyword."},
            {"role": "user", "content": "Which object is the dog chasing in the park?"}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "keyword", "strict": True, "schema": {
    "type": "object", "properties": {"keyword": {"type": "string"}}, "required": ["keyword"],
    "additionalProperties": False}}}


def client(server, **kwargs):
    options = {"base_url": server.url, "api_key": "test-key", "max_retries": 0, **kwargs}
    return openai.OpenAI(**options)


def ask(server, **kwargs):
    create = kwargs.pop("create", {})
    return client(server, **kwargs).chat.completions.create(model="fake-model", messages=MESSAGES, **create)


@pytest.fixture
def server():
    with FakeOpenAIServer() as running:
        yield running


def test_normal_completion_with_usage_and_responder_sees_messages():
    seen = []

    def responder(body):
        seen.append(body)
        return json.dumps({"keyword": "frisbee"})

    with FakeOpenAIServer(responder=responder) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
        response = ask(server, create={"response_format": SCHEMA})

    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    assert response.model == "fake-model"
    assert json.loads(response.choices[0].message.content) == {"keyword": "frisbee"}
    assert response.choices[0].message.role == "assistant" and response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert seen[0]["messages"] == MESSAGES and seen[0]["response_format"] == SCHEMA
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions" and request["fault"] is None
    assert request["headers"]["authorization"] == "Bearer test-key" and request["body"]["model"] == "fake-model"
    assert server.completion_requests == 1


def test_default_responder_models_list_and_unknown_path(server):
    assert json.loads(ask(server).choices[0].message.content) == {"keyword": "ball"}
    assert [m.id for m in client(server).models.list().data]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.url + "/nope", timeout=5)
    assert info.value.code == 404 and "error" in json.loads(info.value.read())
    assert server.completion_requests == 1 and len(server.requests) == 3


def test_response_format_rejected_when_unsupported():
    with FakeOpenAIServer(accept_response_format=False) as server:
        with pytest.raises(openai.BadRequestError) as info:
            ask(server, create={"response_format": SCHEMA})
        assert info.value.status_code == 400 and info.value.param == "response_format"
        assert info.value.code == "unsupported_parameter"
        with pytest.raises(openai.BadRequestError):
            ask(server, create={"response_format": {"type": "json_object"}})
        assert ask(server).choices[0].message.content == json.dumps({"keyword": "ball"})


def test_rate_limit_fault_and_retry_consumes_it(server):
    server.inject("429")
    with pytest.raises(openai.RateLimitError) as info:
        ask(server)
    assert info.value.status_code == 429 and info.value.response.headers["retry-after"] == "1"
    assert info.value.body["type"] == "rate_limit_error"

    server.inject("429:0.2")
    response = ask(server, max_retries=2)  # retries after Retry-After-Ms 200, then succeeds
    assert response.choices[0].message.content == json.dumps({"keyword": "ball"})
    assert [r["fault"] for r in server.requests] == ["429", "429:0.2", None]
    assert server.requests[1]["headers"].get("x-stainless-retry-count") == "0"
    assert server.pending_faults == []


def test_rate_limit_default_retry_after_is_honoured(server):
    server.inject("429")
    assert ask(server, max_retries=2).choices
    # The client retried once, after the 429 (which carried Retry-After: 1).
    assert [r["headers"].get("x-stainless-retry-count") for r in server.requests] == ["0", "1"]
    assert server.completion_requests == 2


def test_server_error_malformed_empty_choices_and_text_faults(server):
    server.inject("500", "malformed", "empty_choices", "text:the red ball, probably")
    with pytest.raises(openai.InternalServerError):
        ask(server)
    with pytest.raises(json.JSONDecodeError):  # the openai client does not wrap this one
        ask(server)
    assert ask(server).choices == []
    assert ask(server).choices[0].message.content == "the red ball, probably"
    assert [r["fault"] for r in server.requests] == ["500", "malformed", "empty_choices",
                                                      "text:the red ball, probably"]


def test_slow_fault_exceeds_client_timeout(server):
    server.inject("slow:2")
    with pytest.raises(openai.APITimeoutError):
        ask(server, timeout=0.5)
    assert server.requests[0]["fault"] == "slow:2"
    assert ask(server).choices  # the next request is answered normally


def test_unknown_fault_is_rejected(server):
    with pytest.raises(ValueError):
        server.inject("503")


def test_requests_are_served_concurrently():
    # Every responder waits until all 16 are inside at once: only a concurrent server
    # gets past the barrier (a serial one breaks it and answers 500). No clock involved.
    barrier = threading.Barrier(16, timeout=30)

    def responder(body):
        barrier.wait()
        return json.dumps({"keyword": "ball"})

    with FakeOpenAIServer(responder=responder) as server:
        results, errors = [], []

        def one():
            try:
                results.append(ask(server).choices[0].message.content)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors and len(results) == 16
    assert not barrier.broken and server.errors == []


def test_required_api_key():
    with FakeOpenAIServer(required_api_key="secret") as server:
        with pytest.raises(openai.AuthenticationError) as info:
            ask(server)  # sends "test-key"
        assert info.value.status_code == 401
        assert ask(server, api_key="secret").choices


def test_stop_is_prompt_with_a_request_in_flight():
    server = FakeOpenAIServer().start()
    server.inject("slow:30")
    outcome = []

    def one():
        try:
            ask(server, timeout=10)
            outcome.append("answered")
        except openai.APIConnectionError as exc:
            outcome.append(type(exc))

    thread = threading.Thread(target=one, daemon=True)
    thread.start()
    while server.completion_requests == 0:
        time.sleep(0.01)
    server.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()  # stop() hung up instead of waiting out the 30 s fault
    assert outcome == [openai.APIConnectionError]  # hung up, not answered


def test_raw_retry_after_fault_sends_exactly_that_header(server):
    server.inject("429-raw:Wed, 21 Oct 2099 07:28:00 GMT", "429-raw:soon")
    for expected in ("Wed, 21 Oct 2099 07:28:00 GMT", "soon"):
        with pytest.raises(openai.RateLimitError) as info:
            ask(server)
        assert info.value.response.headers["retry-after"] == expected
        assert "retry-after-ms" not in info.value.response.headers
    with pytest.raises(ValueError):
        server.inject("429-raw:two\nlines")


def test_prompt_counts_count_requests_per_first_user_message(server):
    other = [MESSAGES[0], {"role": "user", "content": "What is on the table?"}]
    ask(server)
    ask(server)
    client(server).chat.completions.create(model="m", messages=other)
    assert server.prompt_counts() == {MESSAGES[1]["content"]: 2, "What is on the table?": 1}


def _ask_in_threads(server, count):
    outcomes = []

    def one():
        try:
            outcomes.append(ask(server, timeout=30).choices[0].message.content)
        except openai.APIError as exc:
            outcomes.append(type(exc))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, outcomes


def test_held_requests_are_answered_only_after_release(server):
    server.hold()
    threads, outcomes = _ask_in_threads(server, 3)
    server.wait_for_held(3)
    assert server.held == 3 and outcomes == [] and server.completion_requests == 3
    server.release()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == [json.dumps({"keyword": "ball"})] * 3 and server.held == 0
    assert ask(server).choices  # released: later requests are not held


def test_stop_hangs_up_on_held_requests():
    server = FakeOpenAIServer().start()
    server.hold()
    threads, outcomes = _ask_in_threads(server, 1)
    server.wait_for_held(1)
    server.stop()
    threads[0].join(timeout=10)
    assert not threads[0].is_alive() and outcomes == [openai.APIConnectionError]


def test_wait_for_held_times_out_instead_of_hanging(server):
    server.hold()
    with pytest.raises(TimeoutError):
        server.wait_for_held(1, timeout=0.05)


def test_wait_for_held_gives_up_when_told(server):
    server.hold()
    with pytest.raises(TimeoutError, match="gave up"):
        server.wait_for_held(1, timeout=60, give_up=lambda: True)
