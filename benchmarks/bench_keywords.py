"""Keyword mining throughput: sequential requests against `--concurrency 16`.

400 records against the loopback OpenAI-compatible server with 150 ms simulated latency
per request, through the real `openai` client and our miner (cache off). The ideal
speed-up is 16; the issue asks for at least 80 % of it.

    python benchmarks/bench_keywords.py [--records 400] [--latency 0.15] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "helpers")]

from keyword_records import RECORDS, keyword_responder  # noqa: E402
from openai_server import FakeOpenAIServer  # noqa: E402

from keyseg.keywords.backends import OpenAIBackend  # noqa: E402
from keyseg.keywords.cache import AnswerCache  # noqa: E402
from keyseg.keywords.miner import KeywordMiner  # noqa: E402
from keyseg.keywords.records import KeywordRecord  # noqa: E402


def mine(url: str, records: list[KeywordRecord], concurrency: int) -> float:
    async def go() -> float:
        backend = OpenAIBackend(model="fake-keyword-model", api_key="benchmark", base_url=url, timeout=30)
        miner = KeywordMiner(backend, AnswerCache(None), concurrency=concurrency)
        started = time.perf_counter()
        results = await miner.mine_all(records)
        seconds = time.perf_counter() - started
        await backend.aclose()
        assert all(result.keyword for result in results), "every record should get its keyword"
        return seconds

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    records = [KeywordRecord(query=RECORDS[i % len(RECORDS)][0], outputs=RECORDS[i % len(RECORDS)][1],
                             image=f"{i}.jpg", json=f"{i}.json") for i in range(args.records)]
    with FakeOpenAIServer(responder=keyword_responder(), latency=args.latency) as server:
        sequential = mine(server.url, records, 1)
        concurrent = mine(server.url, records, args.concurrency)
    ratio = sequential / concurrent
    print(f"records: {args.records}, simulated latency: {args.latency * 1000:.0f} ms per request")
    print(f"sequential (concurrency 1): {args.records / sequential:7.1f} records/s ({sequential:.1f} s)")
    print(f"concurrency {args.concurrency}:            {args.records / concurrent:7.1f} records/s ({concurrent:.1f} s)")
    print(f"ratio: {ratio:.2f} (ideal {args.concurrency}; {100 * ratio / args.concurrency:.0f}% of ideal)")


if __name__ == "__main__":
    main()
