"""`keyseg train`: stream shards into the DeepSpeed KeySeg trainer.

One process per GPU (or one CPU process), launched plainly, by `deepspeed`, by torchrun,
or by `keyseg train --gpus N` (which runs torchrun). Outputs under OUT:

    OUT/train_config.json      the resolved config (also inside every checkpoint)
    OUT/deepspeed_config.json  what DeepSpeed was given
    OUT/tokenizer/             the tokenizer (built from the shards for tiny models)
    OUT/model_config.json      KeySegConfig with the token ids
    OUT/checkpoints/<tag>/     DeepSpeed checkpoints: step_XXXXXXXX every N steps and at
                               the end, best (by val gIoU); `latest` names the newest step
    OUT/tensorboard/           loss components, lr, samples/s, data wait, val gIoU/cIoU
    OUT/metrics.jsonl          one line per optimizer step and per validation, and a
                               "skips" line per epoch: samples skipped (shard, key, reason)
    OUT/train_summary.json     steps, losses, val, and every skipped sample (tokenizer,
                               train and val reading; a bad sample never stops the run)
    OUT/export/                the best (else the last) checkpoint exported (keyseg export)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from keyseg.errors import UsageError
from keyseg.io import atomic_write_json
from keyseg.shards.index import ShardSet
from keyseg.training.config import TrainConfig
from keyseg.training.engine import deepspeed_config, ensure_single_process_env, parameter_groups, rank_and_world
from keyseg.training.launch import filter_deepspeed_notices, leave_process_group, select_deepspeed_accelerator
from keyseg.training.loop import TrainResult


@dataclass
class TrainRun:
    config: TrainConfig
    shards: Path  # shard set folder with index.json
    out: Path
    max_steps: int | None = None  # stop after this many optimizer steps (for tests, smoke runs)
    resume: str | None = None  # "auto", a checkpoint tag folder, or None
    dry_run: bool = False  # resolve, build on the meta device, count, print; no weights, no data
    show_progress: bool = True


def _model_config(run: TrainRun, vocab_size: int):
    """The preset's KeySegConfig with the run's `model.*` overrides and precision."""
    from keyseg.model import KeySegConfig

    preset = run.config.model_preset
    if preset == "tiny":
        base = KeySegConfig.tiny(vocab_size=vocab_size)
    elif preset in ("lisa-7b", "keyseg-7b"):
        base = KeySegConfig.lisa_7b()
    else:
        raise UsageError(f"unknown model_preset {preset!r}: choose tiny or lisa-7b")
    values = {**base.to_dict(), **run.config.model}
    unknown = set(run.config.model) - set(base.to_dict())
    if unknown:
        raise UsageError(f"unknown model key(s) {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(sorted(base.to_dict()))}")
    if run.config.precision == "bf16":
        values["dtype"] = "bfloat16"
    elif run.config.precision == "fp16":
        values["dtype"] = "float16"
    return KeySegConfig.from_dict(values)


def _tokenizer(run: TrainRun, split_shards: dict[str, list[Path]]):
    """The tokenizer, and the samples skipped while reading the shards for it (tiny models)."""
    from keyseg.data.conversation import template_texts
    from keyseg.model.tokenizer import load_tokenizer, word_level_tokenizer
    from keyseg.training.tokenizer import shard_texts

    init = run.config.init
    if init.tokenizer or init.lisa or init.llava or init.llm:
        return load_tokenizer(init.tokenizer or init.lisa or init.llava or init.llm), []
    saved = run.out / "tokenizer"
    if saved.is_dir():  # resuming: the vocabulary must not change under the checkpoint
        return load_tokenizer(saved), []
    texts = template_texts()
    skipped: list = []
    for paths in split_shards.values():
        texts += shard_texts(paths, skipped)
    return word_level_tokenizer(texts), skipped


def _split_shards(shards: Path, names: list[str]) -> dict[str, list[Path]]:
    """Shard files per split, from index.json (paths confined to the shard set folder: an
    index never names a command, a URL or a file elsewhere); a missing shard is an error."""
    return ShardSet.open(shards).shard_paths(names, must_exist=True)


def build_model(run: TrainRun, tokenizer, console: Console):
    from keyseg.model import KeySegModel
    from keyseg.model.params import apply_lora, apply_trainability, print_parameter_table

    model_config = _model_config(run, len(tokenizer))
    model = KeySegModel.from_config(model_config, tokenizer)
    init = run.config.init
    if init.lisa or init.llava or init.llm or init.vision or init.sam:
        from keyseg.model import loading

        if init.lisa:
            report = loading.from_lisa(init.lisa, model, vision=init.vision, sam=init.sam, fresh=init.fresh)
        else:
            report = loading.from_parts(model, llm=init.llm, vision=init.vision, sam=init.sam, llava=init.llava)
        console.print(escape(report.format()))
    apply_trainability(model, model.config)
    model = apply_lora(model, model.config) or model
    if model.config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    print_parameter_table(model, console)
    return model


def dry_run(run: TrainRun, console: Console) -> dict:
    """Resolve the config, build the model on the meta device, count parameters, print DeepSpeed's config."""
    from keyseg.model import KeySegModel
    from keyseg.model.config import KEYSEG_7B_VOCAB, LISA_7B_V1_VOCAB
    from keyseg.model.params import apply_lora, apply_trainability, parameter_table, print_parameter_table

    # The tiny vocabulary comes from the shards, which a dry run does not read: any small
    # size shows the parameter counts. The 7B presets count at the vocabulary they train
    # with: LISA-7B-v1's tokenizer plus [KEY]; plain LISA (fusion none) at LISA's own, a
    # LLaVA-v1 tokenizer plus [SEG] (no [KEY]).
    model_config = _model_config(run, vocab_size=128)
    if run.config.model_preset != "tiny":
        model_config.llm["vocab_size"] = LISA_7B_V1_VOCAB if model_config.fusion == "none" else KEYSEG_7B_VOCAB
    with torch.device("meta"):
        model = KeySegModel(model_config)
    # The same steps as build_model after the weights are in.
    apply_trainability(model, model_config)
    model = apply_lora(model, model_config) or model
    print_parameter_table(model, console)
    trainable = sum(row[1] for row in parameter_table(model))
    console.print(f"trainable parameters: {trainable:,} (vocabulary {model_config.llm['vocab_size']:,})")
    print_mixture_table(run.config.data, console)
    groups = parameter_groups(model.named_parameters(), run.config.optim.lr_scales)
    ds = deepspeed_config(run.config, on_cpu=not torch.cuda.is_available(), groups=groups)
    console.print_json(json.dumps({"train_config": run.config.to_dict(), "deepspeed": ds}))
    return ds


def print_mixture_table(data, console: Console) -> None:
    """The training mixture: each kind's rate, and each dataset's weight and share of samples."""
    from rich.table import Table

    from keyseg.training.config import mixture_rows

    table = Table(title="training mixture")
    for name, justify in (("kind", "left"), ("rate", "right"), ("kind share", "right"), ("dataset", "left"),
                          ("weight", "right"), ("share of samples", "right")):
        table.add_column(name, justify=justify)
    rows = mixture_rows(data)
    kind_share: dict[str, float] = {}
    for row in rows:
        kind_share[row.kind] = kind_share.get(row.kind, 0.0) + row.share
    for at, row in enumerate(rows):
        first = at == 0 or rows[at - 1].kind != row.kind
        last = at == len(rows) - 1 or rows[at + 1].kind != row.kind
        table.add_row(row.kind if first else "", f"{row.rate:g}" if first else "",
                      f"{100 * kind_share[row.kind]:.2f}%" if first else "", escape(row.split), f"{row.weight:g}",
                      f"{100 * row.share:.2f}%", end_section=last)
    console.print(table)


def _check_train_splits(config: TrainConfig, shards: Path) -> None:
    """Every training split must be in the shard set; the error names each missing split
    with its kind (sem_seg, refer_seg, vqa, reason_seg) before anything is built."""
    from keyseg.training.config import missing_mixture_splits

    available = ShardSet.open(shards).splits
    missing = missing_mixture_splits(config.data, available)
    if missing:
        listing = "; ".join(f"{kind}: {', '.join(splits)}" for kind, splits in missing.items())
        fix = " or set its kind's rate to 0 (data.mixture.<kind>.rate=0)" if config.data.mixture else ""
        raise UsageError(f"{shards} has no shards for training split(s) {listing} (has: "
                         f"{', '.join(sorted(available)) or 'none'}); prepare and shard the missing ones{fix}")


def run(run: TrainRun, console: Console | None = None) -> TrainResult:
    console = console or Console(stderr=True)
    if run.dry_run:
        dry_run(run, console)
        return TrainResult()
    config = run.config
    out, shards = Path(run.out), Path(run.shards)
    # Checked before anything starts: an unknown split or a bad index fails in a second.
    _check_train_splits(config, shards)
    train_names = [source["split"] for source in config.data.train]
    split_shards = _split_shards(shards, train_names + ([config.data.val] if config.data.val else []))
    ensure_single_process_env()
    select_deepspeed_accelerator()
    import deepspeed

    filter_deepspeed_notices()

    rank, world = rank_and_world()
    torch.manual_seed(run.config.seed + rank)
    tokenizer, tokenizer_skips = _tokenizer(run, split_shards)
    if tokenizer_skips and rank == 0:
        console.print(f"[yellow]warning:[/] {len(tokenizer_skips)} bad sample(s) or shard(s) skipped while "
                      f"building the tokenizer (listed in {escape(str(out / 'train_summary.json'))})")
    model = build_model(run, tokenizer, console if rank == 0 else Console(quiet=True))
    on_cpu = not torch.cuda.is_available()
    groups = parameter_groups(model.named_parameters(), config.optim.lr_scales)
    ds_config = deepspeed_config(config, on_cpu, groups=groups)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "train_config.json", config.to_dict())
        atomic_write_json(out / "deepspeed_config.json", ds_config)
        atomic_write_json(out / "model_config.json", model.config.to_dict() if hasattr(model, "config")
                          else model.base_model.model.config.to_dict())
        tokenizer.save_pretrained(out / "tokenizer")
        _save_provenance(shards, out)
    param_groups = [{"params": group["params"]} for group in groups]
    from keyseg.training.loop import Trainer

    try:
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups, config=ds_config)
        trainer = Trainer(run=run, engine=engine, tokenizer=tokenizer, split_shards=split_shards,
                          rank=rank, world=world, console=console, tokenizer_skips=tokenizer_skips)
        result = trainer.fit()
    except BaseException:
        leave_process_group(synchronise=False)  # the others may be stuck in a collective: no barrier
        raise
    leave_process_group(synchronise=True)
    if config.export and rank == 0:
        # Every rank has saved its ZeRO shards (fit ends with a barrier): consolidate them.
        from keyseg.training.export import export_checkpoint

        best = out / "checkpoints" / "best"
        source = best if (best / "train_state.json").is_file() else out
        info = export_checkpoint(source, out / "export")
        console.print(f"exported {escape(info['checkpoint'])} (step {info['step']}) to {escape(str(out / 'export'))}",
                      soft_wrap=True)
    if rank == 0:
        console.print(f"trained {result.steps} steps: {result.samples_per_second:.1f} images/s, "
                      f"data wait {100 * result.data_wait_fraction:.0f}%, best val gIoU {result.best_giou}")
    return result


def _save_provenance(shards: Path, out: Path) -> None:
    shard_set = ShardSet.open(shards)
    atomic_write_json(out / "data_provenance.json", {
        "shards": str(shards.resolve()), "inputs": shard_set.index.get("inputs"),
        "splits": {name: {"samples": shard_set.sample_count(name),
                          "shards": [entry.get("sha256") for entry in shard_set.entries(name)]}
                   for name in shard_set.splits},
    })
