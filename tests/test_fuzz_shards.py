"""Seeded fuzzing of shard samples and shard tars, in real tars written by ShardWriter.

Property: `check_sample_json`, `shards verify` and the loader either accept a sample or
report it with a reason, never raise; all three give the same reason for a sample the
schema check refuses; every unmutated sample is still verified and delivered.
"""

from __future__ import annotations

import copy
import io
import json
import random
import shutil
import tarfile

import pytest
from loader_rank_worker import build_shard_set, make_sample
from rich.console import Console
from typer.testing import CliRunner

from cli import app
from keyseg.data import SampleConfig, make_eval_pipeline, resolve_shards
from keyseg.shards.samples import BadSampleError, check_sample_json, read_sample_json
from pipelines import shards_verify

SEED = 20250117
SPLITS = ["reasonseg:val", "refcoco:val"]  # one target per sample, and several
JSON_SHARDS = {"reasonseg:val": [90, 90], "refcoco:val": [80, 80]}  # 340 samples
JSON_CASES = 300  # of which mutated
TAR_CASES = 40
CONFIG = SampleConfig(sam_size=32, clip_size=16, mode="eval")

ODD_VALUES = [None, True, False, 0, -1, 1, 2**31, 10**30, 1.5, float("nan"), float("inf"), "", "x", "[/]",
              "../../etc/passwd", [], [1], ["a", None], {}, {"size": [1, 1], "counts": "1"}, "a" * 500]


def planned_samples(shards: dict[str, list[int]]) -> list[dict]:
    """The samples `build_shard_set(root, shards)` writes, in order (it numbers them globally)."""
    samples = []
    for name, sizes in shards.items():
        source, split = name.split(":")
        samples += [make_sample(source, split, len(samples) + i) for i in range(sum(sizes))]
    return samples


def paths_in(value, prefix=()):
    """The path of every value inside a json document (dict keys and list indices)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        yield prefix + (key,)
        yield from paths_in(child, prefix + (key,))


def at(document, path):
    for step in path:
        document = document[step]
    return document


def mutate_counts(rng: random.Random, counts: str) -> str:
    choice = rng.randrange(5)
    if choice == 0:
        return counts[: rng.randrange(len(counts) + 1)]
    if choice == 1:
        return counts + "".join(chr(rng.randrange(32, 128)) for _ in range(rng.randint(1, 3)))
    if choice == 2:
        position = rng.randrange(len(counts))
        return counts[:position] + chr(rng.randrange(1, 256)) + counts[position + 1:]
    if choice == 3:
        return counts * 2
    return ""


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(3)
        if choice == 0:
            del data[rng.randrange(len(data) + 1):]
        elif choice == 1 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            position = rng.randrange(len(data) + 1)
            data[position:position] = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])
    return bytes(data)


def mutate_json(rng: random.Random, document: dict) -> bytes:
    """One seeded mutation of a good sample json: a dropped key, a wrong type, a huge or
    negative size, a bad RLE, non-UTF-8 or broken bytes, NaN, deep nesting."""
    document = copy.deepcopy(document)
    kind = rng.choice(["drop", "retype", "retype", "size", "rle", "bytes", "nan", "deep"])
    paths = list(paths_in(document))
    if kind == "drop":
        path = rng.choice([p for p in paths if isinstance(at(document, p[:-1]), dict)])
        del at(document, path[:-1])[path[-1]]
    elif kind == "retype":
        path = rng.choice(paths)
        at(document, path[:-1])[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif kind == "size":
        value = rng.choice([0, -5, 30000, 10**12, 2**31, 1, document["width"] + 1])
        where = rng.choice(["width", "height", "mask", "both"])
        if where == "both":  # a claimed bomb: 30000 x 30000
            document["width"] = document["height"] = 30000
        elif where == "mask":
            target = rng.choice(document["targets"])
            target["mask"][rng.choice(["target", "ignore"])]["size"][rng.randrange(2)] = value
        else:
            document[where] = value
    elif kind == "rle":
        rle = rng.choice(document["targets"])["mask"][rng.choice(["target", "ignore"])]
        rle["counts"] = mutate_counts(rng, rle["counts"])
    data = json.dumps(document, ensure_ascii=False).encode("utf-8")  # NaN from ODD_VALUES stays NaN
    if kind == "bytes":
        return mutate_bytes(rng, data)
    if kind == "nan":
        return data.replace(b'"width": ', b'"width": NaN, "w": ', 1)
    if kind == "deep":
        depth = rng.choice([10, 5000, 100000])
        return data.replace(b'"texts": ', b'"texts": ' + b"[" * depth + b"]" * depth + b', "t": ', 1)
    return data


def schema_reason(data: bytes) -> str | None:
    """The schema check's reason for a json member, or None; any other exception fails the test."""
    try:
        read_sample_json(data)
    except BadSampleError as error:
        return str(error)
    return None


@pytest.fixture(scope="module")
def json_fuzz(tmp_path_factory):
    """(root, {key: schema reason or None}, unmutated keys) of a set with 300 mutated jsons."""
    rng = random.Random(SEED)
    root = tmp_path_factory.mktemp("fuzz_json")
    samples = planned_samples(JSON_SHARDS)
    mutated = set(rng.sample(range(len(samples)), JSON_CASES))
    corrupt = {samples[i]["key"]: {"json": mutate_json(rng, samples[i]["json"])} for i in sorted(mutated)}
    written = build_shard_set(root, JSON_SHARDS, corrupt=corrupt)
    assert list(written) == [sample["key"] for sample in samples]
    reasons = {key: schema_reason(corrupt[key]["json"]) if key in corrupt else None for key in written}
    return root, reasons, set(written) - set(corrupt)


def test_schema_check_accepts_or_gives_a_reason(json_fuzz):
    _, reasons, good = json_fuzz
    assert all(reasons[key] is None for key in good)
    refused = [reason for reason in reasons.values() if reason]
    assert len(refused) > JSON_CASES * 0.8  # the fuzz mostly makes bad samples...
    categories = {reason.split(":")[0] for reason in refused}
    assert {"corrupt json", "bad json fields", "bad mask RLE", "mask size mismatch", "image too large"} <= categories
    assert check_sample_json(json.loads(json.dumps(make_sample("refcoco", "val", 0)["json"]))) is None


@pytest.fixture(scope="module")
def verified(json_fuzz):
    """`keyseg shards verify` over the fuzzed set: (CLI result, verify_report.json)."""
    root, _, _ = json_fuzz
    result = CliRunner().invoke(app, ["shards", "verify", "--shards", str(root), "--no-progress"])
    return result, json.loads((root / "verify_report.json").read_text())


def test_verify_reports_exactly_the_refused_samples(json_fuzz, verified):
    root, reasons, good = json_fuzz
    result, report = verified
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert report["samples"] == len(reasons)
    problems = {problem["key"]: problem["problem"] for problem in report["problems"]}
    assert None not in problems  # the tars themselves are sound
    assert not good & set(problems)
    for key, reason in reasons.items():
        if reason:  # the same check, the same words
            assert problems[key] == reason
    # An accepted mutation (e.g. another text) may still be caught later, with a reason.
    assert all(problems[key] for key in problems)


def test_loader_skips_exactly_what_the_schema_refuses_and_delivers_the_rest(json_fuzz, verified):
    root, reasons, good = json_fuzz
    delivered, skipped = [], {}
    for batch in make_eval_pipeline(resolve_shards(root, SPLITS), CONFIG, 8):
        delivered += batch["keys"]
        skipped.update((skip.key, skip.reason) for skip in batch["skipped"])
    assert len(delivered) == len(set(delivered))
    assert good <= set(delivered)
    assert set(delivered) | set(skipped) == set(reasons) and not set(delivered) & set(skipped)
    for key, reason in reasons.items():
        if reason:
            assert skipped[key] == reason
    # What verify accepts the loader delivers, and the reverse: they decode the same way.
    assert set(delivered) == set(reasons) - {problem["key"] for problem in verified[1]["problems"]}


# ---------------------------------------------------------------- tar bytes
def sample_ends(data: bytes) -> dict[str, int]:
    """Byte offset where each sample's last member (with its padding) ends in a tar."""
    ends = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            ends[member.name.split(".")[0]] = member.offset_data + -(-member.size // 512) * 512
    return ends


def mutate_tar(rng: random.Random, data: bytes) -> tuple[bytes, int]:
    """(mutated tar bytes, first changed offset)."""
    kind = rng.randrange(4)
    if kind == 0:  # truncate
        cut = rng.randrange(len(data))
        return data[:cut], cut
    mutated = bytearray(data)
    if kind == 1:  # flip a few bits
        offsets = [rng.randrange(len(data)) for _ in range(rng.randint(1, 3))]
        for offset in offsets:
            mutated[offset] ^= 1 << rng.randrange(8)
        return bytes(mutated), min(offsets)
    start = rng.randrange(len(data))
    if kind == 2:  # zero a header-sized block
        mutated[start:start + 512] = bytes(len(mutated[start:start + 512]))
        return bytes(mutated), start
    del mutated[start:start + rng.randint(1, 2000)]  # cut a chunk out
    return bytes(mutated), start


@pytest.fixture(scope="module")
def tar_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_tar_base")
    written = build_shard_set(root, {"reasonseg:val": [4], "refcoco:val": [4]})
    index = json.loads((root / "index.json").read_text())
    return root, index, written


def test_mutated_tars_are_reported_and_other_shards_are_untouched(tar_base, tmp_path):
    base, index, written = tar_base
    good_entry, target_entry = (index["splits"][name]["shards"][0] for name in SPLITS)
    good_keys = {key for key, sample in written.items() if sample["json"]["source"] == "reasonseg"}
    original = (base / target_entry["path"]).read_bytes()
    ends = sample_ends(original)
    rng = random.Random(SEED + 1)
    quiet = Console(quiet=True)
    for case in range(TAR_CASES):
        mutated, changed_at = mutate_tar(rng, original)
        if mutated == original:
            continue
        root = tmp_path / f"case{case}"
        shutil.copytree(base, root)
        (root / target_entry["path"]).write_bytes(mutated)

        result = shards_verify.run(shards_verify.VerifyConfig(shards=root, show_progress=False), console=quiet)
        shards_with_problems = {problem["shard"] for problem in result.bad}
        assert shards_with_problems == {target_entry["path"]}, (case, result.bad)
        assert all(problem["problem"] for problem in result.bad)
        intact = {key for key, end in ends.items() if end <= changed_at}
        assert not intact & {problem["key"] for problem in result.bad}, (case, result.bad)

        delivered, skipped = [], []
        for batch in make_eval_pipeline(resolve_shards(root, SPLITS), CONFIG, 4):
            delivered += batch["keys"]
            skipped += batch["skipped"]
        assert good_keys <= set(delivered), case
        assert set(delivered) <= set(written), case  # nothing made up from damaged bytes
        assert intact <= set(delivered), (case, changed_at, skipped)
        assert all(skip.reason for skip in skipped)
