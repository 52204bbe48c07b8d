"""`keyseg reproduce-check` (`make reproduce-check`): every prerequisite of `make reproduce`.

Prints one line per requirement (ok, MISSING, or a note for an optional one) and fails
with the number of missing requirements, in seconds rather than after an hour of
preparing data. What is required lives in keyseg.reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from keyseg.reproduce import Check, Recipe, checks
from keyseg.runner import StageResult


@dataclass
class ReproduceCheckConfig(Recipe):
    """The recipe's inputs, as `make reproduce` receives them (empty string: unset)."""


@dataclass(kw_only=True)
class ReproduceCheckResult(StageResult):
    """`failed`: required items missing; `checks`: every requirement with its finding."""

    checks: list[Check] = field(default_factory=list)


def run(config: ReproduceCheckConfig, console: Console | None = None) -> ReproduceCheckResult:
    console = console or Console()
    found = checks(config)
    for check in found:
        mark = "[green]ok  [/]" if check.ok else ("[red]MISSING[/]" if check.required else "[yellow]note[/]")
        console.print(f"{mark} {escape(check.what)}: {escape(check.detail)}", soft_wrap=True)
    missing = [check for check in found if check.missing]
    console.print(f"[red]reproduce-check: {len(missing)} missing; fix the MISSING items above" if missing else
                  "[green]all prerequisites found")
    return ReproduceCheckResult(failed=len(missing), problems=[f"{check.what}: {check.detail}" for check in missing],
                                checks=found)
