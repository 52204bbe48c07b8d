"""What every stage shares: its result type, worker pool, progress bar and summary table.

A stage (one `keyseg` command) computes; this module owns how that looks and how it ends.
Every stage's `run(config, console)` returns a `StageResult` (or a subclass adding its own
fields), and the command line turns `result.failed` into the exit code, the same way for
every command: 0 when every record went through, 1 when some failed (the good ones are
still written), 2 for bad usage.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


@dataclass(kw_only=True)
class StageResult:
    """The outcome of one stage run.

    `failed` counts the records (images, samples, shards, requests) that could not be
    processed; `problems` holds one "file: reason" line for each of the first ones, and
    `report` is the machine-readable file with all of them, when the stage writes one.
    """

    failed: int = 0
    problems: list[str] = field(default_factory=list)
    report: Path | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0


def worker_count(workers: int) -> int:
    """0 means one worker per core."""
    return workers or os.cpu_count() or 1


class WorkerPool:
    """`imap_unordered` over spawned processes, or in this process for one worker.

    Spawned (not forked) workers: the parent may hold threads (rich's progress refresh,
    torch's pools) that a fork would copy in a locked state."""

    def __init__(self, workers: int):
        self.workers = worker_count(workers)
        self._pool = multiprocessing.get_context("spawn").Pool(self.workers) if self.workers > 1 else None

    def imap(self, function: Callable, items: Iterable, chunksize: int = 1) -> Iterator:
        """Results in the order of `items`."""
        if self._pool is None:
            return map(function, items)
        return self._pool.imap(function, items, chunksize=chunksize)

    def imap_unordered(self, function: Callable, items: Iterable, chunksize: int = 1) -> Iterator:
        """Results as they finish."""
        if self._pool is None:
            return map(function, items)
        return self._pool.imap_unordered(function, items, chunksize=chunksize)

    def close(self) -> None:
        # terminate, not close: on Ctrl-C or an error the queued tasks are dropped, not run.
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


@contextmanager
def worker_pool(workers: int) -> Iterator[WorkerPool]:
    pool = WorkerPool(workers)
    try:
        yield pool
    finally:
        pool.close()


def progress_bar(console: Console, enabled: bool, *, eta: bool = True) -> Progress:
    """The progress bar of every stage: description, bar, done/total, elapsed (and ETA)."""
    columns = [TextColumn("[bold]{task.description:<18}"), BarColumn(bar_width=24), MofNCompleteColumn(),
               TimeElapsedColumn()]
    if eta:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not enabled)


def summary_table(title: str, first_column: str, columns: Iterable[str]) -> Table:
    """A stage's summary table: one left-aligned name column, then right-aligned figures.

    The title is escaped (it usually holds a path); names in the first column wrap rather
    than being cut, so they stay readable at 80 columns."""
    table = Table(title=escape(title), box=box.SIMPLE_HEAD)
    table.add_column(first_column, overflow="fold")
    for column in columns:
        table.add_column(column, justify="right")
    return table


def print_problems(console: Console, problems: Iterable[str], failed: int, report: Path | None,
                   limit: int = 20) -> None:
    """The first `limit` problems, one line each, then where the full list is."""
    for line in list(problems)[:limit]:
        console.print(f"[red]error:[/] {escape(line)}", soft_wrap=True)
    if failed:
        where = f" Details: {escape(str(report))}" if report else ""
        console.print(f"[red]{failed} failed[/]; everything else was written.{where}", soft_wrap=True)


@contextmanager
def activity(console: Console, enabled: bool, text: str) -> Iterator[None]:
    """A spinner for a stage that is one long step (no count to show)."""
    if not enabled or console.quiet:
        yield
        return
    with console.status(escape(text)):
        yield
