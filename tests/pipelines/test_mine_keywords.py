import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli import app
from keyword_records import RECORDS, SECRET, keyword_responder, question_of
from openai_server import FakeOpenAIServer




def generate(explanatory, server, tmp_path, *extra, cache="cache", env=None):
    out = tmp_path / "keywords.json"
    args = ["mine-keywords", "generate", "--input", str(explanatory), "--out", str(out), "--base-url", server.url,
            "--model", "fake-keyword-model", "--cache-dir", str(tmp_path / cache), "--no-progress",
            "--api-key-env", "KEYSEG_TEST_KEY", *extra]
    result = CliRunner().invoke(app, args, env={"KEYSEG_TEST_KEY": SECRET, "COLUMNS": "160", **(env or {})})
    return result, out


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_generate_writes_the_published_schema_and_a_report(explanatory, tmp_path):
    with FakeOpenAIServer(responder=keyword_responder(), required_api_key=SECRET) as server:
        result, out = generate(explanatory, server, tmp_path, "--price-per-mtok", "0.15,0.6")
    assert result.exit_code == 0, result.output
    records = load(out)
    assert [list(record) for record in records] == [["query", "outputs", "image", "json", "keyword"]] * len(RECORDS)
    assert [record["keyword"] for record in records] == [keyword for _, _, keyword in RECORDS]
    report = load(out.with_suffix(".report.json"))
    assert [row["index"] for row in report["records"]] == list(range(len(RECORDS)))
    first = report["records"][0]
    assert first["verdict"] == "ok" and first["evidence"][0]["field"] in ("query", "outputs")
    assert report["summary"]["calls"] == len(RECORDS) and report["summary"]["prompt_tokens"] > 0
    assert report["summary"]["estimated_cost_usd"] > 0
    assert report["prompt"]["version"] and report["prompt"]["schema"]["name"] == "keyword"
    assert all("response_format" in request["body"] for request in server.requests)
    assert (out.parent / "mine_keywords_config.json").is_file()


def test_faults_are_retried_and_every_record_ends_with_a_keyword(explanatory, tmp_path):
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        server.inject("429:0.1", "500", "malformed", "slow:3", "empty_choices", "500")
        result, out = generate(explanatory, server, tmp_path, "--timeout", "1", "--concurrency", "3")
        # Each fault cost one request that was then retried (by the client or by us).
        assert server.completion_requests == len(RECORDS) + 6 and not server.pending_faults
    assert result.exit_code == 0, result.output
    assert [record["keyword"] for record in load(out)] == [keyword for _, _, keyword in RECORDS]
    # The malformed body and the empty choices reach our own retry loop (the client retries the rest).
    assert load(out.with_suffix(".report.json"))["summary"]["retries"] >= 2


def test_server_without_structured_output_gets_plain_text_requests(explanatory, tmp_path):
    with FakeOpenAIServer(responder=keyword_responder(), accept_response_format=False) as server:
        result, out = generate(explanatory, server, tmp_path)
    assert result.exit_code == 0, result.output
    assert [record["keyword"] for record in load(out)] == [keyword for _, _, keyword in RECORDS]
    answered = [request for request in server.requests if request["body"] and "response_format" not in request["body"]]
    assert len(answered) == len(RECORDS)


def test_ungrounded_answer_gets_one_retry_with_the_reason_then_a_flag(explanatory, tmp_path):
    spoon_query, umbrella_query = RECORDS[0][0], RECORDS[2][0]
    overrides = {(spoon_query, False): "fork", (spoon_query, True): "spoon",  # fixed by the retry
                 (umbrella_query, False): "raincoat", (umbrella_query, True): "dry"}  # never fixed
    with FakeOpenAIServer(responder=keyword_responder(overrides)) as server:
        result, out = generate(explanatory, server, tmp_path)
    assert result.exit_code == 0, result.output
    records = load(out)
    assert records[0]["keyword"] == "spoon"
    assert records[2]["keyword"] is None
    row = load(out.with_suffix(".report.json"))["records"][2]
    assert row["verdict"] == "not_a_noun_phrase" and row["answers"] == ["raincoat", "dry"]
    retry = [r for r in server.requests if question_of(r["body"]) == spoon_query][-1]
    assert "'fork'" in retry["body"]["messages"][-1]["content"] and "rejected" in retry["body"]["messages"][-1]["content"]


def test_second_run_issues_zero_requests(explanatory, tmp_path):
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        generate(explanatory, server, tmp_path)
        first = server.completion_requests
        result, out = generate(explanatory, server, tmp_path)
        assert server.completion_requests == first
    assert load(out.with_suffix(".report.json"))["summary"]["cache_hits"] == len(RECORDS)
    assert result.exit_code == 0


def test_backend_that_gives_up_flags_the_record_and_exits_nonzero(explanatory, tmp_path):
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        server.inject("500", "500", "500")  # the client's two retries and ours: all fail
        result, out = generate(explanatory, server, tmp_path, "--concurrency", "1", "--max-attempts", "1")
    assert result.exit_code == 1
    rows = load(out.with_suffix(".report.json"))["records"]
    assert rows[0]["verdict"] == "failed" and rows[0]["keyword"] is None and "gave up" in rows[0]["reason"]
    assert [row["verdict"] for row in rows[1:]] == ["ok"] * (len(RECORDS) - 1)


def _files_text(folder):
    for path in folder.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_output_and_the_key_never_leaks(explanatory, tmp_path):
    # The server itself delivers the signal while it holds a request, so the run is always
    # interrupted mid-way, however slow or fast the machine is.
    answer = keyword_responder()
    kill = {"pid": None, "at": None, "signal": None, "seen": 0}

    def responder(body):
        kill["seen"] += 1
        if kill["pid"] is not None and kill["seen"] == kill["at"]:
            os.kill(kill["pid"], kill["signal"])
        return answer(body)

    with FakeOpenAIServer(responder=responder, latency=0.2) as server:
        (tmp_path / "ref").mkdir()
        result, reference = generate(explanatory, server, tmp_path / "ref", cache="ref-cache")
        assert result.exit_code == 0
        out = tmp_path / "resumed" / "keywords.json"
        command = [sys.executable, "-m", "cli", "mine-keywords", "generate", "--input", str(explanatory), "--out", str(out),
                   "--base-url", server.url, "--model", "fake-keyword-model", "--cache-dir",
                   str(tmp_path / "resumed-cache"), "--concurrency", "2", "--no-progress",
                   "--api-key-env", "KEYSEG_TEST_KEY"]
        env = {**os.environ, "KEYSEG_TEST_KEY": SECRET}
        logs = []
        for kill_signal, after in ((signal.SIGINT, 3), (signal.SIGKILL, 3)):
            # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored
            # SIGINT ignored: give the child the default, as a terminal's Ctrl-C would find it.
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            kill.update(pid=process.pid, at=kill["seen"] + after, signal=kill_signal)
            stdout, stderr = process.communicate(timeout=120)
            kill["pid"] = None
            logs += [stdout, stderr]
            assert process.returncode != 0, (kill_signal, stderr.decode()[-2000:])
            assert not out.exists()  # nothing half-written under the real name
        before_final = server.completion_requests
        final = subprocess.run(command, env=env, capture_output=True, timeout=120)
        logs += [final.stdout, final.stderr]
        assert final.returncode == 0, final.stderr.decode()
        assert server.completion_requests - before_final < len(RECORDS)  # earlier answers were kept
    assert out.read_bytes() == reference.read_bytes()
    for path, content in _files_text(tmp_path):
        assert SECRET.encode() not in content, path
    for log in logs + [result.output.encode()]:
        assert SECRET.encode() not in log


def test_batch_file_then_batch_results_needs_no_requests(explanatory, tmp_path):
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        batch = tmp_path / "batch.jsonl"
        result, _ = generate(explanatory, server, tmp_path, "--batch-api-requests", str(batch))
        assert result.exit_code == 0 and server.completion_requests == 0
        requests = [json.loads(line) for line in batch.read_text().splitlines()]
        assert len(requests) == len(RECORDS)
        assert requests[0]["method"] == "POST" and requests[0]["url"] == "/v1/chat/completions"
        # What the Batch API returns: one line per request, answered by the same "model".
        respond = keyword_responder()
        results = tmp_path / "results.jsonl"
        results.write_text("".join(json.dumps({
            "id": f"batch_req_{i}", "custom_id": request["custom_id"], "error": None,
            "response": {"status_code": 200, "request_id": f"r{i}", "body": {
                "id": f"c{i}", "object": "chat.completion", "model": "fake-keyword-model",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": respond(request["body"])}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}}}) + "\n"
            for i, request in enumerate(requests)))
        result, out = generate(explanatory, server, tmp_path, "--batch-api-results", str(results))
        assert result.exit_code == 0, result.output
        assert server.completion_requests == 0
    assert [record["keyword"] for record in load(out)] == [keyword for _, _, keyword in RECORDS]


def test_heuristic_backend_is_the_offline_default(explanatory, tmp_path):
    out = tmp_path / "keywords.json"
    result = CliRunner().invoke(app, ["mine-keywords", "generate", "--input", str(explanatory), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = load(out)
    assert all(record["keyword"] for record in records)
    assert records[1]["keyword"] in ("traffic light", "light")
    report = load(out.with_suffix(".report.json"))
    assert report["config"]["backend_resolved"] == "heuristic" and report["backend_limits"]


def test_default_output_path_is_explanatory_key(explanatory):
    result = CliRunner().invoke(app, ["mine-keywords", "generate", "--input", str(explanatory), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (explanatory.parent.parent / "explanatory_key" / "keyword_outputs.json").is_file()


PUBLISHED_LIKE = [
    ("What is used for sitting at the dinner table?", "The wooden chair beside the table is used for sitting.", "wooden"),
    ("Which vehicle is the biggest here?", "The large truck on the right is the biggest vehicle.", "large"),
    ("What does the driver hold to turn the car?", "The driver holds the steering wheel to turn the car.", "steering"),
    ("What would you use to scoop soup?", "A spoon would be used to scoop the soup.", "spoon"),
    ("What tells drivers to stop?", "The traffic light tells drivers to stop.", "traffic light"),
    ("What keeps you dry?", "The umbrella keeps you dry.", "raincoat"),
]


def test_validate_flags_adjectives_and_fragments_and_fix_writes_a_copy(tmp_path):
    published = tmp_path / "keyword_outputs.json"
    published.write_text(json.dumps([{"query": q, "outputs": o, "image": f"{i}.jpg", "json": f"{i}.json",
                                      "keyword": k} for i, (q, o, k) in enumerate(PUBLISHED_LIKE)]))
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    fixed = tmp_path / "fixed.json"
    result = CliRunner().invoke(app, ["mine-keywords", "validate", "--keywords", str(published), "--fix", str(fixed),
                                      "--no-progress"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    rows = load(fixed.with_suffix(".report.json"))["records"]
    assert [row["verdict"] for row in rows] == ["not_a_noun_phrase", "not_a_noun_phrase", "not_a_noun_phrase",
                                                "ok", "ok", "ungrounded"]
    assert "steering wheel" in rows[2]["reason"]
    assert hashlib.sha256(published.read_bytes()).hexdigest() == digest
    corrected = [record["keyword"] for record in load(fixed)]
    assert corrected[3:5] == ["spoon", "traffic light"]
    assert corrected[0] == "chair" and corrected[1] == "truck" and corrected[5] == "umbrella"
    assert "wooden" in result.output and "not_a_noun_phrase" in result.output


def test_validate_reports_disagreement_with_an_llm(tmp_path):
    published = tmp_path / "keyword_outputs.json"
    published.write_text(json.dumps([{"query": RECORDS[5][0], "outputs": RECORDS[5][1], "image": "a.jpg",
                                      "json": "a.json", "keyword": "bread"}]))
    with FakeOpenAIServer(responder=keyword_responder()) as server:
        result = CliRunner().invoke(app, ["mine-keywords", "validate", "--keywords", str(published), "--base-url", server.url,
                                          "--model", "m", "--cache-dir", str(tmp_path / "c"), "--no-progress",
                                          "--report", str(tmp_path / "r.json"), "--fix", str(tmp_path / "f.json")])
    assert result.exit_code == 0, result.output
    (row,) = load(tmp_path / "r.json")["records"]
    assert row["verdict"] == "disagrees" and "'bread'" in row["reason"] and "'knife'" in row["reason"]
    assert load(tmp_path / "f.json")[0]["keyword"] == "knife"


@pytest.mark.parametrize("args,message", [
    (["--price-per-mtok", "cheap"], "expected IN or IN,OUT"),
    (["--backend", "gpt"], "unknown backend"),
    (["--backend", "hf", "--model", "/nonexistent/model"], "needs a local model folder"),
])
def test_bad_arguments_fail_before_any_work(explanatory, tmp_path, args, message):
    result = CliRunner().invoke(app, ["mine-keywords", "generate", "--input", str(explanatory), "--out",
                                      str(tmp_path / "k.json"), "--no-progress", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "k.json").exists()


def test_fix_refuses_to_overwrite_the_input(tmp_path):
    published = tmp_path / "keyword_outputs.json"
    published.write_text(json.dumps([{"query": "q", "outputs": "a spoon", "image": "a.jpg", "json": "a.json",
                                      "keyword": "spoon"}]))
    before = published.read_bytes()
    result = CliRunner().invoke(app, ["mine-keywords", "validate", "--keywords", str(published), "--fix",
                                      str(published)])
    assert result.exit_code == 2 and "never overwritten" in result.output and published.read_bytes() == before
