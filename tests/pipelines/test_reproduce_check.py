"""`make reproduce-check` catches what would fail `make reproduce` after hours of work."""

import subprocess
import sys
from pathlib import Path

from pipelines.reproduce_check import ReproduceCheckConfig, checks

ROOT = Path(__file__).resolve().parents[2]


def check(*arguments):
    """The check as the Makefile runs it: positional arguments, empty strings for unset."""
    arguments = list(arguments) + [""] * (7 - len(arguments))
    return subprocess.run([sys.executable, "-m", "pipelines.reproduce_check", *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_an_llm_model_without_a_base_url_fails_the_check_by_name():
    done = check("", "", "", "", "1", "", "some-model")
    assert done.returncode == 1
    assert "LLM_BASE_URL not set: set both LLM_BASE_URL and LLM_MODEL" in done.stdout


def test_unset_variables_are_said_to_be_unset_and_the_expected_files_are_named():
    from io import StringIO

    from rich.console import Console

    from pipelines.reproduce_check import run

    printed = StringIO()
    assert not run(ReproduceCheckConfig("", "", ""), console=Console(file=printed, width=300))
    done = printed.getvalue()
    assert "/nonexistent" not in done
    for expected in ("DATA_DIR not set", "LISA_CKPT not set", "CLIP_DIR not set", "refs(unc).p", "refs(umd).p",
                     "instances.json", "keyword_outputs.json", "tokenizer_config.json"):
        assert expected in done, expected


def test_a_data_dir_missing_the_published_keywords_is_caught(tmp_path):
    reason = tmp_path / "reason_seg" / "ReasonSeg"
    for split in ("train", "val", "test"):
        (reason / split).mkdir(parents=True)
        (reason / split / "a.json").write_text("{}")
    found = {what: (ok, detail) for what, ok, _, detail in checks(ReproduceCheckConfig(str(tmp_path), "", ""))}
    assert found["ReasonSeg train"][0] and not found["published keyword file (no LLM set)"][0]
    assert "missing keyword_outputs.json" in found["published keyword file (no LLM set)"][1]
    assert "missing refs(unc).p, instances.json" in found["refcoco refs + instances"][1]
    (reason / "explanatory_key").mkdir()
    (reason / "explanatory_key" / "keyword_outputs.json").write_text("[]")
    found = {what: ok for what, ok, _, _ in checks(ReproduceCheckConfig(str(tmp_path), "", ""))}
    assert found["published keyword file (no LLM set)"]


def test_the_release_preset_needs_the_sam_checkpoint_it_rebuilds_sam_from(tmp_path):
    found = {what: (ok, required, detail) for what, ok, required, detail
             in checks(ReproduceCheckConfig("", "", ""))}
    ok, required, detail = found["SAM_CKPT (sam_vit_h_4b8939.pth)"]
    assert not ok and required and "SAM_CKPT not set" in detail and "keyseg-7b-release" in detail
    paper = {what for what, *_ in checks(ReproduceCheckConfig("", "", "", preset="keyseg-7b"))}
    assert "SAM_CKPT (sam_vit_h_4b8939.pth)" not in paper  # keyseg-7b keeps LISA-7B-v1's SAM
    (tmp_path / "sam_vit_h_4b8939.pth").write_bytes(b"weights")
    given = {what: ok for what, ok, *_ in checks(ReproduceCheckConfig("", "", "", str(tmp_path / "sam_vit_h_4b8939.pth")))}
    assert given["SAM_CKPT (sam_vit_h_4b8939.pth)"]
