"""The training loop: epochs of a fixed number of optimizer steps, validation, checkpoints.

Every rank runs exactly `steps_per_epoch * grad_accum` micro-batches per epoch (the
loader resamples shards to guarantee it), so collective operations never wait on a rank
that ran out of data. Resuming restores the step, the optimizer, the scheduler and the
RNG, and skips the micro-batches of the interrupted epoch that were already consumed;
the data of an epoch depends only on (seed, epoch, rank), so the resumed run sees the
same batches as an uninterrupted one.

Bad samples never stop a run: the loader skips them, and every skip (shard, key, reason)
is recorded, per epoch in metrics.jsonl ("skips" lines, all ranks together) and in total
in train_summary.json, with those skipped while building the tokenizer and validating.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from keyseg.data.conversation import ConversationConfig
from keyseg.data.loader import make_eval_pipeline, make_loader, make_train_pipeline
from keyseg.data.samples import SampleConfig
from keyseg.data.skips import LoaderStats, SkipLog
from keyseg.metrics import IoUStats, intersection_union
from keyseg.model.tokens import ReferenceTokenizer
from keyseg.runner import StageResult
from keyseg.training import checkpoints
from keyseg.training.batches import model_inputs
from keyseg.training.engine import parameter_groups

LOSS_NAMES = ("loss", "ce", "bce", "dice", "key")


@dataclass
class TrainResult(StageResult):
    steps: int = 0
    epochs: int = 0
    losses: list[float] = field(default_factory=list)  # total loss per optimizer step (rank 0)
    val: list[dict] = field(default_factory=list)  # per validation: {"epoch", "giou", "ciou", "count"}
    samples_per_second: float = 0.0
    data_wait_fraction: float = 0.0
    best_giou: float | None = None


class Trainer:
    def __init__(self, run, engine, tokenizer, split_shards: dict[str, list[Path]], rank: int, world: int,
                 console: Console, tokenizer_skips: list | None = None):
        self.run, self.engine, self.tokenizer = run, engine, tokenizer
        self.tokens = ReferenceTokenizer(tokenizer)
        self.config = run.config
        self.rank, self.world, self.console = rank, world, console
        self.out = Path(run.out)
        self.checkpoint_dir = self.out / "checkpoints"
        self.model_config = _unwrap(engine.module).config
        self.sample_config = SampleConfig(
            sam_size=self.model_config.sam_image_size, clip_size=self.model_config.clip_image_size,
            num_queries=self.config.data.num_queries, seed=self.config.seed,
            conversation=ConversationConfig(explanatory=self.config.data.explanatory))
        self.split_shards = split_shards
        self.micro_per_epoch = self.config.optim.steps_per_epoch * self.config.optim.grad_accum
        self.writer = None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))
        # The engine's optimizer groups, in order: it was given `parameter_groups` of this
        # model and config, so the same call names them.
        self.lr_group_names = [group["name"] for group in
                               parameter_groups(engine.module.named_parameters(), self.config.optim.lr_scales)]
        self.state = {"step": 0, "epoch": 0, "micro_in_epoch": 0, "best_giou": None, "bad_epochs": 0}
        self.resumed_from: Path | None = None  # the checkpoint tag folder this run resumed from
        # Samples skipped while reading data, over all ranks (this run, not resumed ones).
        self.skips = {"tokenizer": SkipLog(), "train": SkipLog(), "val": SkipLog()}
        tokenizer_skips = tokenizer_skips or []
        self.skips["tokenizer"].add(len(tokenizer_skips), [skip.to_dict() for skip in tokenizer_skips])

    # ------------------------------------------------------------------ data
    def _train_loader(self):
        sources = [([str(p) for p in self.split_shards[source["split"]]], float(source["weight"]))
                   for source in self.config.data.train]
        # Seeded per rank: ranks sample different shards; the loader seeds workers and epochs.
        pipeline = make_train_pipeline(sources, self.sample_config, batch_size=self.config.optim.micro_batch,
                                       batches_per_epoch=self.micro_per_epoch, workers=self.config.data.workers,
                                       seed=self.config.seed * 1000 + self.rank)
        return make_loader(pipeline, workers=self.config.data.workers)

    def _val_loader(self):
        urls = [str(p) for p in self.split_shards[self.config.data.val]]
        pipeline = make_eval_pipeline(urls, replace(self.sample_config, mode="eval"),
                                      batch_size=self.config.data.val_batch_size, workers=0)
        return make_loader(pipeline, workers=0)

    # ------------------------------------------------------------------ loop
    def fit(self):
        self._maybe_resume()
        result = TrainResult()
        if self.rank == 0 and self.skips["tokenizer"].count:
            self._append_metrics({"skips": {"during": "tokenizer", "count": self.skips["tokenizer"].count,
                                            "samples": self.skips["tokenizer"].listed}})
        loader = self._train_loader()
        max_steps = self.run.max_steps
        total = self.config.optim.epochs * self.config.optim.steps_per_epoch
        # max_steps 0 saves (and exports) the initial model: the untrained baseline.
        target = min(total, max_steps) if max_steps is not None else total
        progress = self._progress()
        started, waited, samples, micro_total = time.perf_counter(), 0.0, 0, 0
        with progress:
            bar = progress.add_task("train", total=target, completed=self.state["step"], loss="", speed="")
            while self.state["epoch"] < self.config.optim.epochs and self.state["step"] < target:
                epoch = self.state["epoch"]
                loader.set_epoch(epoch)
                skip = self.state["micro_in_epoch"]
                batches = iter(loader)
                accumulated = {name: 0.0 for name in LOSS_NAMES}
                micro = 0
                while True:
                    wait_start = time.perf_counter()
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    waited += time.perf_counter() - wait_start
                    micro += 1
                    if micro <= skip:
                        continue  # consumed before the interruption
                    if self.resumed_from is not None and skip:
                        # Mid-epoch, the interrupted run had started this loader (a draw from
                        # torch's RNG) before it saved: restore again, so the streams match.
                        checkpoints.restore_rank_rng(self.resumed_from, self.rank)
                    self.resumed_from = None
                    outputs = self._forward(batch)
                    self.engine.backward(outputs["loss"])
                    self.engine.step()
                    micro_total += 1
                    samples += len(batch["keys"])
                    for name in LOSS_NAMES:
                        accumulated[name] += float(outputs[name].detach()) / self.config.optim.grad_accum
                    self.state["micro_in_epoch"] = micro
                    if micro % self.config.optim.grad_accum == 0:
                        self.state["step"] += 1
                        losses = self._reduce(accumulated)
                        result.losses.append(losses["loss"])
                        elapsed = time.perf_counter() - started
                        speed = samples * self.world / max(elapsed, 1e-9)
                        self._log_step(losses, speed, waited / max(elapsed, 1e-9))
                        # The total only: the bar fits 80 columns; the parts go to TensorBoard.
                        progress.update(bar, completed=self.state["step"], loss=f"loss {losses['loss']:.3f}",
                                        speed=f"{speed:.1f} img/s")
                        accumulated = {name: 0.0 for name in LOSS_NAMES}
                        if self.state["step"] % self.config.checkpoint_every == 0:
                            self._save(checkpoints.step_tag(self.state["step"]))
                        if self.state["step"] >= target:
                            break
                self._record_skips("train", loader.stats)
                if self.state["step"] >= target and micro < self.micro_per_epoch:
                    break  # max_steps reached mid-epoch: the epoch is not over
                self.state["epoch"] += 1
                self.state["micro_in_epoch"] = 0
                if self._validate_and_check_patience(result):
                    break
        elapsed = time.perf_counter() - started
        result.steps, result.epochs = self.state["step"], self.state["epoch"]
        result.samples_per_second = samples * self.world / max(elapsed, 1e-9)
        result.data_wait_fraction = waited / max(elapsed, 1e-9)
        result.best_giou = self.state["best_giou"]
        self._save(checkpoints.step_tag(self.state["step"]))
        # Per-rank account of the work done: ranks must agree (a rank that runs out of
        # data while the others wait in a collective is a hang on real clusters).
        from keyseg.io import atomic_write_json

        atomic_write_json(self.out / "ranks" / f"rank{self.rank}.json",
                          {"rank": self.rank, "world": self.world, "steps": self.state["step"],
                           "micro_batches": micro_total, "epochs": self.state["epoch"]})
        if self.writer is not None:
            self.writer.close()
            self._write_summary(result)
        return result

    def _forward(self, batch: dict, inference: bool = False) -> dict:
        dtype = _unwrap(self.engine.module).config.torch_dtype
        inputs = model_inputs(batch, self.tokens, self.model_config, self.config.data.max_length,
                              self.engine.device, dtype)
        return self.engine(**inputs, inference=inference)

    def _reduce(self, values: dict) -> dict:
        if self.world == 1:
            return values
        tensor = torch.tensor([values[name] for name in LOSS_NAMES], dtype=torch.float64)
        dist.all_reduce(tensor)
        return {name: float(value) / self.world for name, value in zip(LOSS_NAMES, tensor)}

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> IoUStats:
        stats = IoUStats()
        self.engine.module.eval()
        loader = self._val_loader()
        try:
            for batch in loader:
                outputs = self._forward(batch, inference=True)
                for predicted, target in zip(outputs["pred_masks"], batch["masks"]):
                    for logits, mask in zip(predicted, target):
                        stats.add(*intersection_union(logits.float().cpu() > 0, mask.cpu()))
        finally:
            self.engine.module.train()
        self._record_skips("val", loader.stats)
        if self.world > 1:
            tensor = stats.to_tensor()
            dist.all_reduce(tensor)
            stats = IoUStats.from_tensor(tensor)
        return stats

    def _validate_and_check_patience(self, result) -> bool:
        """Validate after an epoch; save `best`; True when patience has run out."""
        if not self.config.data.val:
            return False
        stats = self.validate()
        record = {"epoch": self.state["epoch"], "step": self.state["step"], **stats.to_dict()}
        result.val.append(record)
        if self.rank == 0:
            self.console.print(f"epoch {self.state['epoch']}: val gIoU {stats.giou:.4f} cIoU {stats.ciou:.4f} "
                               f"({stats.count} masks)")
            self.writer.add_scalar("val/giou", stats.giou, self.state["step"])
            self.writer.add_scalar("val/ciou", stats.ciou, self.state["step"])
            self._append_metrics({"val": record})
        best = self.state["best_giou"]
        if best is None or stats.giou > best:
            self.state["best_giou"], self.state["bad_epochs"] = stats.giou, 0
            self._save("best")
        else:
            self.state["bad_epochs"] += 1
        patience = self.config.patience
        if patience and self.state["bad_epochs"] >= patience:
            if self.rank == 0:
                self.console.print(f"no better val gIoU for {patience} epochs: stopping early")
            return True
        return False

    # ------------------------------------------------------------------ skipped samples
    def _record_skips(self, during: str, stats: LoaderStats) -> None:
        """Add one pass's skips of every rank to the run's account (a collective: every
        rank calls it at the same point) and log them to metrics.jsonl."""
        mine = (stats.skipped, [skip.to_dict() for skip in stats.examples])
        if self.world > 1:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, mine)
        else:
            gathered = [mine]
        found = SkipLog()
        for count, listed in gathered:
            found.add(count, listed)
        self.skips[during].add(found.count, found.listed)
        if self.rank == 0:
            if found.count:
                self.console.print(f"[yellow]warning:[/] {found.count} bad sample(s) skipped ({during}, epoch "
                                   f"{self.state['epoch']}); listed in {escape(str(self.out / 'metrics.jsonl'))}")
            self._append_metrics({"skips": {"during": during, "epoch": self.state["epoch"],
                                            "step": self.state["step"], "count": found.count,
                                            "samples": found.listed}})

    # ------------------------------------------------------------------ checkpoints
    def _save(self, tag: str) -> None:
        checkpoints.save(self.engine, self.checkpoint_dir, tag, dict(self.state), self.rank)
        if self.rank == 0:
            (self.checkpoint_dir / tag / "train_config.json").write_text(
                json.dumps(self.config.to_dict(), indent=2))
            if tag.startswith(checkpoints.STEP_PREFIX):
                checkpoints.prune(self.checkpoint_dir, self.config.keep_checkpoints)
        if self.world > 1:
            dist.barrier()

    def _maybe_resume(self) -> None:
        resume = self.run.resume
        if not resume:
            return
        if resume == "auto":
            tag = checkpoints.latest_tag(self.checkpoint_dir)
            if tag is None:
                return  # nothing to resume: a fresh start
            folder = self.checkpoint_dir
        else:
            path = Path(resume)
            folder, tag = path.parent, path.name
        self.state = checkpoints.load(self.engine, folder, tag, self.rank)
        self.resumed_from = Path(folder) / tag
        if self.rank == 0:
            self.console.print(f"resumed from {escape(str(folder / tag))}: step {self.state['step']}, "
                               f"epoch {self.state['epoch']}")

    # ------------------------------------------------------------------ reporting
    def _progress(self) -> Progress:
        return Progress(TextColumn("[bold]train"), BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                        TextColumn("[dim]{task.fields[speed]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=self.console, disable=self.rank != 0 or not self.run.show_progress)

    def _log_step(self, losses: dict, speed: float, wait: float) -> None:
        if self.rank != 0:
            return
        step = self.state["step"]
        for name, value in losses.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        group_lrs = list(self.engine.get_lr())
        self.writer.add_scalar("train/lr", group_lrs[0], step)
        # With optim.lr_scales there is one group per scale, in deepspeed_config.json's order
        # (the base group first); each also gets a curve named after its group.
        extra = {"group_lrs": group_lrs} if len(group_lrs) > 1 else {}
        if len(group_lrs) > 1:
            names = self.lr_group_names
            if len(names) != len(group_lrs):  # not the engine `parameter_groups` built: number them
                names = [f"group{index}" for index in range(len(group_lrs))]
            for name, value in zip(names, group_lrs):
                self.writer.add_scalar(f"train/lr/{name}", value, step)
        self.writer.add_scalar("train/samples_per_second", speed, step)
        self.writer.add_scalar("train/data_wait_fraction", wait, step)
        self._append_metrics({"step": step, "epoch": self.state["epoch"], "lr": group_lrs[0], **extra, **losses,
                              "samples_per_second": speed, "data_wait_fraction": wait})

    def _append_metrics(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _write_summary(self, result) -> None:
        from keyseg.io import atomic_write_json

        atomic_write_json(self.out / "train_summary.json", {
            "steps": result.steps, "epochs": result.epochs, "final_loss": result.losses[-1] if result.losses else None,
            "samples_per_second": result.samples_per_second, "data_wait_fraction": result.data_wait_fraction,
            "best_giou": result.best_giou, "val": result.val,
            "skipped": {during: log.count for during, log in self.skips.items()},
            "skipped_samples": [{"during": during, **skip} for during, log in self.skips.items()
                                for skip in log.listed]})


def _unwrap(module):
    """The KeySegModel inside DeepSpeed's engine (and a peft wrapper, if any)."""
    return getattr(module, "module", module)

