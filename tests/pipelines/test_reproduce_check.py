"""`keyseg reproduce-check` catches what would fail `make reproduce` after hours of work."""

from io import StringIO

from rich.console import Console
from typer.testing import CliRunner

from cli import app
from keyseg.reproduce import Recipe, checks
from pipelines.reproduce_check import ReproduceCheckConfig, run


def test_an_llm_model_without_a_base_url_fails_the_check_by_name():
    # As the Makefile calls it: every option given, the unset ones empty.
    result = CliRunner().invoke(app, ["reproduce-check", "--data-dir", "", "--lisa-ckpt", "", "--clip-dir", "",
                                      "--sam-ckpt", "", "--gpus", "1", "--llm-base-url", "", "--llm-model",
                                      "some-model", "--preset", "keyseg-7b-release"], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "LLM_BASE_URL not set: set both LLM_BASE_URL and LLM_MODEL" in result.output


def test_unset_variables_are_said_to_be_unset_and_the_expected_files_are_named():
    printed = StringIO()
    result = run(ReproduceCheckConfig(), console=Console(file=printed, width=300))
    missing = [check for check in result.checks if check.required and not check.ok]
    assert result.failed == len(missing) > 0 and len(result.problems) == len(missing)
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
    found = {check.what: check for check in checks(Recipe(data_dir=str(tmp_path)))}
    assert found["ReasonSeg train"].ok and found["published keyword file (no LLM set)"].missing
    assert "missing keyword_outputs.json" in found["published keyword file (no LLM set)"].detail
    assert "missing refs(unc).p, instances.json" in found["refcoco refs + instances"].detail
    (reason / "explanatory_key").mkdir()
    (reason / "explanatory_key" / "keyword_outputs.json").write_text("[]")
    found = {check.what: check.ok for check in checks(Recipe(data_dir=str(tmp_path)))}
    assert found["published keyword file (no LLM set)"]


def test_the_release_preset_needs_the_sam_checkpoint_it_rebuilds_sam_from(tmp_path):
    found = {check.what: check for check in checks(Recipe())}
    sam = found["SAM_CKPT (sam_vit_h_4b8939.pth)"]
    assert sam.missing and "SAM_CKPT not set" in sam.detail and "keyseg-7b-release" in sam.detail
    paper = {check.what for check in checks(Recipe(preset="keyseg-7b"))}
    assert "SAM_CKPT (sam_vit_h_4b8939.pth)" not in paper  # keyseg-7b keeps LISA-7B-v1's SAM
    (tmp_path / "sam_vit_h_4b8939.pth").write_bytes(b"weights")
    given = {check.what: check.ok for check in checks(Recipe(sam_ckpt=str(tmp_path / "sam_vit_h_4b8939.pth")))}
    assert given["SAM_CKPT (sam_vit_h_4b8939.pth)"]


def test_free_disk_is_a_note_never_a_missing_item():
    found = checks(Recipe())
    disk = next(check for check in found if check.what.startswith("free disk"))
    assert not disk.required and not disk.missing


def test_the_lisa_recipe_needs_llava_sam_and_every_dataset_of_lisas_mixture_but_no_lisa_checkpoint():
    found = {check.what: check for check in checks(Recipe(recipe="lisa"))}
    for what in ("ADE20K (sem_seg)", "COCO-Stuff (sem_seg)", "PASCAL-Part (sem_seg)", "PACO-LVIS (sem_seg)",
                 "Mapillary Vistas (sem_seg)", "refCLEF (refer_seg)", "refcoco refs + instances",
                 "LLaVA-Instruct-150k (vqa)", "ReasonSeg train", "LLAVA_DIR weights", "LLAVA_DIR tokenizer",
                 "CLIP_DIR (clip-vit-large-patch14)", "SAM_CKPT (sam_vit_h_4b8939.pth)"):
        assert found[what].missing, what
    assert "LLAVA_DIR not set" in found["LLAVA_DIR weights"].detail
    assert "recipe lisa" in found["SAM_CKPT (sam_vit_h_4b8939.pth)"].detail
    assert "LISA_CKPT weights" not in found  # LISA is what this recipe makes
    assert not any(what.startswith(("LLM", "published keyword")) for what in found)  # LISA has no keywords
    both = {check.what for check in checks(Recipe(recipe="lisa+keyseg", preset="keyseg-7b"))}
    assert {"LLAVA_DIR weights", "ADE20K (sem_seg)", "published keyword file (no LLM set)",
            "SAM_CKPT (sam_vit_h_4b8939.pth)"} <= both and "LISA_CKPT weights" not in both
    keyseg = {check.what for check in checks(Recipe())}
    assert "LISA_CKPT weights" in keyseg and not keyseg & {"LLAVA_DIR weights", "ADE20K (sem_seg)"}


def test_a_lisa_data_dir_names_exactly_the_missing_files(tmp_path):
    (tmp_path / "ade20k" / "images" / "training").mkdir(parents=True)
    (tmp_path / "ade20k" / "images" / "training" / "a.jpg").write_bytes(b"")
    (tmp_path / "llava_dataset").mkdir()
    (tmp_path / "llava_dataset" / "llava_instruct_150k.json").write_text("[]")
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "coco" / "train2017" / "b.jpg").write_bytes(b"")
    found = {check.what: check for check in checks(Recipe(recipe="lisa", data_dir=str(tmp_path)))}
    assert found["ADE20K (sem_seg)"].detail.endswith("missing ade20k/annotations/training/*.png")
    assert found["LLaVA-Instruct-150k (vqa)"].ok
    assert "missing vlpart/paco/annotations/paco_lvis_v1_train.json" in found["PACO-LVIS (sem_seg)"].detail


def test_the_recipe_is_passed_as_the_makefile_passes_it():
    result = CliRunner().invoke(app, ["reproduce-check", "--data-dir", "", "--lisa-ckpt", "", "--clip-dir", "",
                                      "--sam-ckpt", "", "--gpus", "0", "--llm-base-url", "", "--llm-model", "",
                                      "--preset", "keyseg-7b-release", "--recipe", "lisa", "--llava-dir", ""],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "LLAVA_DIR not set" in result.output and "Mapillary Vistas (sem_seg)" in result.output
    unknown = CliRunner().invoke(app, ["reproduce-check", "--recipe", "llava"], env={"COLUMNS": "300"})
    assert unknown.exit_code == 1 and "'llava' is not one of keyseg, lisa, lisa+keyseg" in unknown.output
