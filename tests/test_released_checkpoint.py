"""README, "To evaluate a released checkpoint", end to end through the `keyseg` command.

A user evaluates LISA-7B-v1 (or a KeySeg release folder) by building the model from it
without training, `keyseg train --config keyseg-7b --max-steps 0 init.lisa=MODEL
init.vision=CLIP` (`model.fusion=none` for LISA-7B-v1), and evaluating the export. A 7B
model cannot run here, so this test runs the README's command with the tiny architecture
(`model_preset=tiny`; the rest of keyseg-7b stays: LoRA, bf16, ...) on a random tiny model
saved as the release ships it: pytorch_model-0000x-of-00002.bin shards with their index, a
LLaVA config.json, a slow LlamaTokenizer's files (SentencePiece tokenizer.model with LISA's
added tokens) and no vision tower, plus a CLIP vision folder. The export must hold the
released weights (loaded, not initialised fresh) and evaluation must score every query.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli import app
from lisa_checkpoints import KEYSEG_PREFIXES, build, write_release_folder, write_release_tokenizer

# The README's command at the tiny architecture: the demo shards have no refCOCO+ / refCOCOg
# train split (keyseg-7b's data.train), and nothing is trained, so one train split does.
TINY_7B = ["model_preset=tiny", 'data.train=[{split: "reasonseg:train", weight: 1.0}]', "data.workers=0"]


def keyseg_train(*args) -> subprocess.CompletedProcess:
    """`keyseg train` in its own process (DeepSpeed's process group is per process)."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "cli", "train", *args], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def released(exported: dict, expected: dict, name: str) -> bool:
    """The exported tensor is the checkpoint's, in the export's dtype. A LISA-7B-v1
    vocabulary has no [KEY], so the embedding matrices hold one new row after its rows."""
    want = expected[name]
    got = exported[name][:want.shape[0]] if name.endswith(("embed_tokens.weight", "lm_head.weight")) else exported[name]
    return torch.equal(got, want.to(got.dtype))


@pytest.mark.parametrize("release", ["lisa_7b_v1", "keyseg_release"])
def test_released_checkpoint_trains_zero_steps_and_evaluates(demo_shards, tmp_path, release):
    from keyseg.data.conversation import template_texts

    keyseg = release == "keyseg_release"
    model_dir = tmp_path / "MODEL"
    rows = write_release_tokenizer(model_dir, template_texts(), keyseg=keyseg)
    source = build(seed=11, vocab=rows)  # LISA-7B-v1: 32004 rows, its tokenizer's size
    write_release_folder(model_dir, source, keyseg=keyseg)
    clip_dir = tmp_path / "clip-vit-large-patch14"
    source.vision_tower.save_pretrained(clip_dir)

    out = tmp_path / "runs" / "released"
    trained = keyseg_train("--config", "keyseg-7b", "--shards", str(demo_shards), "--out", str(out),
                           "--max-steps", "0", f"init.lisa={model_dir}", f"init.vision={clip_dir}",
                           *([] if keyseg else ["model.fusion=none"]), "--no-progress", *TINY_7B)
    fresh = {"embedding_table_proj.*", "keyword_fusion.*", "keyword_text_proj.*"}
    report = " ".join(trained.stdout.split() + trained.stderr.split())
    assert ("initialised fresh" in report) == (not keyseg)  # only what LISA-7B-v1 lacks starts fresh
    assert all((name in report) == (not keyseg) for name in fresh)

    # The export holds the released weights (bf16, keyseg-7b's precision; LoRA merged, its
    # adapters untrained), not a fresh initialisation.
    export = out / "export"
    exported = load_file(str(export / "model.safetensors"))
    expected = source.state_dict()
    for name in ("llm.model.embed_tokens.weight", "llm.lm_head.weight", "llm.model.layers.1.self_attn.q_proj.weight",
                 "sam.mask_decoder.iou_token.weight", "sam.mask_decoder.mask_tokens.weight",
                 "sam.vision_encoder.patch_embed.projection.weight", "text_hidden_fcs.0.2.weight",
                 "mm_projector.weight", "vision_tower.embeddings.patch_embedding.weight"):
        assert released(exported, expected, name), name
    compared = [name for name in expected if keyseg or not name.startswith(KEYSEG_PREFIXES)]
    assert [name for name in compared if not released(exported, expected, name)] == []
    config = json.loads((export / "config.json").read_text())
    assert config["fusion"] == ("keyseg" if keyseg else "none") and config["lora_r"] == 0
    assert config["llm"]["vocab_size"] == exported["llm.model.embed_tokens.weight"].shape[0] == rows + (not keyseg)
    # [SEG] keeps the release tokenizer's id; [KEY] is the release's, or new after LISA-7B-v1's rows
    assert (config["seg_token_id"], config["key_token_id"]) == (rows - 1 - keyseg, rows - keyseg)

    evaluated = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--model", str(export), "--shards", str(demo_shards),
                                      "--split", "reasonseg:val", "--out", str(evaluated), "--no-progress"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    metrics = json.loads((evaluated / "metrics.json").read_text())
    scored = [json.loads(line) for line in (evaluated / "per_sample.jsonl").read_text().splitlines()]
    assert scored and all(row["split"] == "reasonseg:val" for row in scored)
    assert metrics["reasonseg:val"]["count"] == len(scored)
