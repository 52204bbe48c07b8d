"""The OpenAI Batch API files: requests for what the cache lacks, results into the cache."""

import json

import pytest

from keyseg.errors import DataError, UsageError
from keyseg.keywords.backends import HeuristicBackend, OpenAIBackend
from keyseg.keywords.batch_api import ENDPOINT, cache_entry, ingest_results, write_requests
from keyseg.keywords.cache import AnswerCache
from keyseg.keywords.miner import request_key
from keyseg.keywords.records import KeywordRecord

RECORDS = [KeywordRecord("What holds the soup?", "The spoon holds the soup.", "a.jpg", "a.json"),
           KeywordRecord("What shows when to stop?", "The traffic light does.", "b.jpg", "b.json")]


def result_line(custom_id, content='{"keyword": "spoon"}', status=200, usage=None):
    return {"id": "batch_req_1", "custom_id": custom_id, "error": None, "response": {
        "status_code": status, "request_id": "r1", "body": {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": usage if usage is not None else {"prompt_tokens": 50, "completion_tokens": 5}}}}


def test_requests_cover_only_what_the_cache_lacks_and_results_fill_it(tmp_path):
    backend = OpenAIBackend(model="some-model", api_key="unused", base_url="http://127.0.0.1:9/v1")
    cache = AnswerCache(tmp_path / "cache")
    cache.put(request_key(backend, RECORDS[1], None), {"content": '{"keyword": "traffic light"}'})
    requests = tmp_path / "requests.jsonl"
    assert write_requests(requests, RECORDS, backend, cache) == 1
    (line,) = [json.loads(text) for text in requests.read_text().splitlines()]
    assert line["custom_id"] == request_key(backend, RECORDS[0], None)
    assert line["method"] == "POST" and line["url"] == ENDPOINT and line["body"]["model"] == "some-model"

    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(result_line(line["custom_id"])) + "\n"
                       + json.dumps(result_line(line["custom_id"], status=500)) + "\n")
    assert ingest_results(results, cache) == (1, 1)
    assert cache.get(line["custom_id"]) == {"content": '{"keyword": "spoon"}', "prompt_tokens": 50,
                                            "completion_tokens": 5}
    assert write_requests(requests, RECORDS, backend, cache) == 0


def test_only_the_openai_backend_writes_requests(tmp_path):
    with pytest.raises(UsageError, match="heuristic"):
        write_requests(tmp_path / "requests.jsonl", RECORDS, HeuristicBackend(), AnswerCache(None))


def test_a_line_without_a_usable_answer_is_no_entry():
    key = "0" * 64
    assert cache_entry(result_line(key))[0] == key
    assert cache_entry(result_line("../escape")) is None  # the id names a cache file
    assert cache_entry(result_line(key, content=None)) is None
    assert cache_entry({"custom_id": key, "response": {"status_code": 200, "body": {"choices": []}}}) is None
    # Token counts that are not counts are read as zero, not trusted.
    _, entry = cache_entry(result_line(key, usage={"prompt_tokens": -3, "completion_tokens": True}))
    assert entry["prompt_tokens"] == 0 and entry["completion_tokens"] == 0


def test_a_file_that_is_not_results_stores_nothing(tmp_path):
    cache = AnswerCache(tmp_path / "cache")
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(result_line("1" * 64)) + "\n[1, 2]\n")
    with pytest.raises(DataError, match="line 2: expected a JSON object, found list"):
        ingest_results(results, cache)
    assert cache.get("1" * 64) is None
