"""mine-keywords under hostile servers, hostile files and Ctrl-C.

Every test talks to the real loopback server (tests/helpers/openai_server.py) through the
real openai client; the Ctrl-C tests run the real CLI in a subprocess and synchronise on
requests the server holds and lines the run prints, never on a clock.
"""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from keyseg.keywords.backends import retry_after_seconds
from keyword_records import RECORDS, SECRET, keyword_responder, question_of
from openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[2]



def generate(explanatory, server, tmp_path, *extra, cache="cache"):
    out = tmp_path / "keywords.json"
    args = ["mine-keywords", "generate", "--input", str(explanatory), "--out", str(out), "--base-url", server.url,
            "--model", "fake-keyword-model", "--cache-dir", str(tmp_path / cache), "--no-progress",
            "--api-key-env", "KEYSEG_TEST_KEY", *extra]
    result = CliRunner().invoke(app, args, env={"KEYSEG_TEST_KEY": SECRET, "COLUMNS": "160"})
    return result, out


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def summary_of(out):
    return load(out.with_suffix(".report.json"))["summary"]


def questions(server):
    return [question_of(request["body"]) for request in server.requests if request["body"]]


# -- Retry-After: capped, announced, never a crash ------------------------------------------------

def test_a_long_retry_after_is_capped_and_announced(explanatory, tmp_path):
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        # 900 s is beyond what the client itself would wait; 90 s is within it (the client
        # would have slept 90 s without a word): both go through our capped wait.
        server.inject("429:900", "429:90")
        result, out = generate(explanatory, server, tmp_path, "--concurrency", "1", "--max-retry-wait", "0.1")
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    assert [record["keyword"] for record in load(out)] == [keyword for _, _, keyword in RECORDS]
    # The server saw both retries: the first record was asked three times.
    assert len(requests) == len(RECORDS) + 2
    assert [request["fault"] for request in requests[:3]] == ["429:900", "429:90", None]
    assert len({question_of(request["body"]) for request in requests[:3]}) == 1
    # Each retry is a fresh request from our loop, not one the client sent after sleeping.
    assert [request["headers"]["x-stainless-retry-count"] for request in requests[:3]] == ["0", "0", "0"]
    assert "server asked to wait 900 s (429); waiting 0.1 s, the cap" in result.output
    assert "server asked to wait 90 s (429); waiting 0.1 s, the cap" in result.output
    summary = summary_of(out)
    assert summary["retries"] == 2 and summary["client_retries"] == 0 and summary["calls"] == len(RECORDS)


@pytest.mark.parametrize("headers,expected", [
    ({"retry-after": "soon"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after": ""}, None),
    ({"retry-after": "-5"}, 0.0),
    ({"retry-after": "inf"}, math.inf),
    ({"retry-after": "1e999"}, math.inf),
    ({"retry-after-ms": "garbage", "retry-after": "3"}, 3.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ({"retry-after": "Mon, 99 Foo 2015 07:28:00 GMT"}, None),
])
def test_hostile_retry_after_values_are_read_or_ignored_never_raised(headers, expected):
    assert retry_after_seconds(headers) == expected


def test_unreadable_retry_after_is_retried_not_a_crash(explanatory, tmp_path):
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        # Three in a row: the client's two retries (it cannot read the wait either), then ours.
        server.inject("429-raw:soon", "429-raw:soon", "429-raw:soon")
        result, out = generate(explanatory, server, tmp_path, "--concurrency", "1")
        assert server.completion_requests == len(RECORDS) + 3
    assert result.exit_code == 0, result.output
    assert [record["keyword"] for record in load(out)] == [keyword for _, _, keyword in RECORDS]
    summary = summary_of(out)
    assert summary["client_retries"] == 2 and summary["retries"] == 1


def test_the_clients_own_retries_are_counted_in_the_report(explanatory, tmp_path):
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        server.inject("500")  # no Retry-After: the openai client retries it by itself
        result, out = generate(explanatory, server, tmp_path, "--concurrency", "1")
        assert server.completion_requests == len(RECORDS) + 1
    assert result.exit_code == 0, result.output
    summary = summary_of(out)
    assert summary["client_retries"] == 1 and summary["retries"] == 0 and summary["calls"] == len(RECORDS)
    assert "client retries" in result.output


# -- identical records: one request ---------------------------------------------------------------

@pytest.mark.parametrize("extra", [(), ("--no-cache",)])
def test_identical_records_in_one_run_share_one_request(tmp_path, extra):
    query, outputs, keyword = RECORDS[0]
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"image": f"img{i}.jpg", "json": f"img{i}.json", "query": query, "outputs": outputs}
                                for i in range(10)]))
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        result, out = generate(path, server, tmp_path, *extra)
        assert server.completion_requests == 1
    assert result.exit_code == 0, result.output
    assert [record["keyword"] for record in load(out)] == [keyword] * 10
    assert [record["image"] for record in load(out)] == [f"img{i}.jpg" for i in range(10)]
    summary = summary_of(out)
    assert summary["calls"] == 1 and summary["deduplicated"] == 9


# -- Ctrl-C ---------------------------------------------------------------------------------------

def _start(explanatory, server, out, cache, *extra):
    command = [sys.executable, "-m", "cli", "mine-keywords", "generate", "--input", str(explanatory), "--out", str(out),
               "--base-url", server.url, "--model", "fake-keyword-model", "--cache-dir", str(cache),
               "--no-progress", "--api-key-env", "KEYSEG_TEST_KEY", *extra]
    env = {**os.environ, "KEYSEG_TEST_KEY": SECRET}
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT
    # ignored: give the child the default, as a terminal's Ctrl-C would find it.
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return command, env, process


def _wait_for_held(server, process, count: int) -> None:
    try:
        server.wait_for_held(count, timeout=120, give_up=lambda: process.poll() is not None)
    except TimeoutError:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"{count} requests never arrived; the run said: {stderr.decode()[-2000:]}")


def _stop(process) -> None:
    """Kill a run the test is done with (a failed assertion must not leave it behind)."""
    if process.poll() is None:
        process.kill()
        process.communicate()


def _read_until(process, marker: bytes) -> list[bytes]:
    """stderr lines up to and including the one holding `marker` (or to the end of the output)."""
    lines = []
    for line in process.stderr:
        lines.append(line)
        if marker in line:
            break
    return lines


@pytest.mark.slow
def test_ctrl_c_keeps_the_answers_in_flight_and_resume_does_not_ask_again(explanatory, tmp_path):
    out, cache = tmp_path / "keywords.json", tmp_path / "cache"
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        server.hold()
        # A long grace: the test, not a clock, decides when the held answers come back.
        command, env, process = _start(explanatory, server, out, cache, "--concurrency", "3",
                                       "--interrupt-grace", "600", "--timeout", "600")
        try:
            _wait_for_held(server, process, 3)
            in_flight = set(questions(server))
            assert len(in_flight) == 3
            process.send_signal(signal.SIGINT)
            lines = _read_until(process, b"interrupted:")
            assert lines and b"3 request(s) in flight" in lines[-1], b"".join(lines).decode()
        except BaseException:
            _stop(process)
            raise
        finally:
            server.release()
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130 and not out.exists()
        assert b"3 answer(s) received this run are in the cache" in stderr, stderr.decode()
        assert server.completion_requests == 3  # nothing new was sent after Ctrl-C

        resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr.decode()
        asked_again = questions(server)[3:]
    assert len(asked_again) == len(RECORDS) - 3 and not in_flight & set(asked_again)
    assert [record["keyword"] for record in load(out)] == [keyword for _, _, keyword in RECORDS]
    assert summary_of(out)["cache_hits"] == 3


def test_a_second_ctrl_c_stops_at_once(explanatory, tmp_path):
    out = tmp_path / "keywords.json"
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        server.hold()
        _, _, process = _start(explanatory, server, out, tmp_path / "cache", "--concurrency", "2",
                               "--interrupt-grace", "600", "--timeout", "600")
        try:
            _wait_for_held(server, process, 2)
            process.send_signal(signal.SIGINT)
            lines = _read_until(process, b"interrupted:")
            assert lines and b"interrupted:" in lines[-1], b"".join(lines).decode()
            process.send_signal(signal.SIGINT)
            # The held requests are never released: only the second Ctrl-C can end the run
            # before its 600 s grace.
            _, stderr = process.communicate(timeout=120)
            assert server.held == 2
        finally:
            _stop(process)
            server.release()
    assert process.returncode == 130 and not out.exists()
    assert b"stopping now" in stderr, stderr.decode()


# -- hostile input files --------------------------------------------------------------------------

BAD_FILES = {
    "not_json": (b"this is not JSON {", "invalid JSON"),
    "object": (b'{"query": "q", "outputs": "a", "image": "x.jpg"}', "expected a JSON list of records"),
    "numbers": (b"[1, 2]", "record 0 is a number, expected an object"),
    "image_number": (b'[{"query": "q", "outputs": "a", "image": 5}]', "record 0: image is a number"),
    "query_list": (b'[{"query": ["q"], "outputs": "a", "image": "x.jpg"}]', "record 0: query is a list"),
    "binary": (bytes(range(256)), "neither UTF-8 nor cp1252"),
}


@pytest.mark.parametrize("mode", ["generate", "validate"])
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_keyword_file_that_is_not_records_is_one_line_and_exit_1(tmp_path, mode, name):
    content, reason = BAD_FILES[name]
    path = tmp_path / "keyword_outputs.json"
    path.write_bytes(content)
    out = tmp_path / "out"
    args = ["mine-keywords", mode, "--input" if mode == "generate" else "--keywords", str(path), "--no-progress"]
    args += ["--out", str(out / "k.json")] if mode == "generate" else ["--fix", str(out / "k.json")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    (line,) = result.output.strip().splitlines()
    assert str(path) in line and reason in line
    assert not out.exists()


@pytest.mark.parametrize("line,reason", [
    (b"[1, 2]", "line 1 is a list, expected an object"),
    (b'{"image": "a.jpg", "targets": {"explanatory": 1}}', "line 1: expected a string image and a list of targets"),
    (b'{"image": "a.jpg", "targets": [{"explanatory": {"query": "q"}}]}', "line 1: outputs is null"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_a_manifest_that_is_not_a_manifest_is_one_line_and_exit_1(tmp_path, line, reason):
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(line + b"\n")
    result = CliRunner().invoke(app, ["mine-keywords", "generate", "--input", str(path), "--out", str(tmp_path / "k.json"),
                                      "--no-progress"], env={"COLUMNS": "80"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    (printed,) = result.output.strip().splitlines()
    assert str(path) in printed and reason in printed


def test_validate_judges_a_bad_keyword_and_prints_data_as_text(tmp_path):
    query, outputs, _ = RECORDS[0]
    published = tmp_path / "keyword_outputs.json"
    published.write_text(json.dumps([
        {"query": query, "outputs": outputs, "image": "a.jpg", "json": "a.json", "keyword": 5},
        {"query": query, "outputs": outputs, "image": "b.jpg", "json": "b.json", "keyword": "[/]"},
        {"query": query, "outputs": outputs, "image": "c.jpg", "json": "c.json", "keyword": "[blink]spoon"},
        {"query": query, "outputs": outputs, "image": "d.jpg", "json": "d.json", "keyword": "spoon"},
    ]))
    fixed = tmp_path / "fixed.json"
    result = CliRunner().invoke(app, ["mine-keywords", "validate", "--keywords", str(published), "--fix", str(fixed),
                                      "--no-progress"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = load(fixed.with_suffix(".report.json"))["records"]
    assert [row["verdict"] for row in rows] == ["not_a_string", "ungrounded", "ungrounded", "ok"]
    assert [record["keyword"] for record in load(fixed)] == ["spoon"] * 4
    # Markup in the data is printed as itself, not interpreted (nor a crash on "[/]").
    assert "[/]" in result.output and "[blink]spoon" in result.output


# -- hostile --batch-api-results files ----------------------------------------------------------------

def _batch_line(custom_id, content='{"keyword": "spoon"}'):
    return json.dumps({"id": "batch_req_1", "custom_id": custom_id, "error": None, "response": {
        "status_code": 200, "request_id": "r1", "body": {
            "id": "c1", "object": "chat.completion", "model": "fake-keyword-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}}}) + "\n"


@pytest.mark.parametrize("content,reason", [
    (b"not json at all\n", "line 1: not JSON"),
    (b"[1, 2]\n", "line 1: expected a JSON object, found list"),
    (b"\xff\xfe\xfa\n", "not UTF-8"),
])
def test_batch_results_that_are_not_batch_output_are_one_line_and_exit_1(explanatory, tmp_path, content, reason):
    results = tmp_path / "results.jsonl"
    results.write_bytes(content)
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        result, out = generate(explanatory, server, tmp_path, "--batch-api-results", str(results))
        assert server.completion_requests == 0
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    (line,) = result.output.strip().splitlines()
    assert str(results) in line and reason in line
    assert not out.exists()


def test_batch_result_ids_never_name_a_file_outside_the_cache(explanatory, tmp_path):
    cache = tmp_path / "a" / "b" / "cache"
    results = tmp_path / "results.jsonl"
    # Used as cache keys unchecked, these ids would be written to a/marker.json and a/b/marker.json
    # (only relative ones here, so that even the unchecked code writes inside tmp_path).
    results.write_text(_batch_line("../marker") + _batch_line("ab/../../../marker") + json.dumps({"custom_id": 5})
                       + "\n")
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        result, out = generate(explanatory, server, tmp_path, "--batch-api-results", str(results),
                               cache="a/b/cache")
        assert server.completion_requests == len(RECORDS)  # nothing usable was ingested
    assert result.exit_code == 0, result.output
    assert "ingested 0 batch results" in result.output and "skipped 3" in result.output
    assert not (tmp_path / "a" / "marker.json").exists() and not (tmp_path / "a" / "b" / "marker.json").exists()
    assert all(path.is_relative_to(cache) for path in (tmp_path / "a").rglob("*") if path.is_file())
    assert [record["keyword"] for record in load(out)] == [keyword for _, _, keyword in RECORDS]
