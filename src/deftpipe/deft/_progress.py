"""Progress on stderr: one line per finished stage, Rich bars inside long stages."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deftpipe._clock import fmt_duration

_OPS = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}


def fmt_pct(v) -> str:
    return "n/a" if v is None else f"{float(v):.1f}%"


def stage_tag(label: str, max_iterations: int, stage: str) -> str:
    where = "baseline" if label == "baseline" else f"iter {label.removeprefix('iter')}/{max_iterations}"
    return f"[{where} · {stage}]"


def far_summary(before, after, kpi, kpi_value=None) -> str:
    """``FAR@100%R 12.4% → 8.1% (target ≤ 5%)`` (no arrow when there is no earlier figure); when the
    KPI is another metric (a custom evaluator's), its value and target follow the FAR."""
    moved = f"{fmt_pct(before)} → {fmt_pct(after)}" if before is not None else fmt_pct(after)
    op = _OPS.get(kpi.operator, kpi.operator)
    if kpi.metric == "far_pct":
        return f"FAR@100%R {moved} (target {op} {kpi.target:g}%)"
    shown = f"{kpi_value:g}" if isinstance(kpi_value, int | float) else "n/a"
    return f"FAR@100%R {moved} · {kpi.metric} {shown} (target {op} {kpi.target:g})"


class LoopProgress:
    """Writes the per-stage lines and holds the Rich bars (off: prints nothing)."""

    def __init__(self, *, enabled: bool, max_iterations: int, console: Console | None = None):
        self.enabled = enabled
        self.max_iterations = max_iterations
        self.console = console or Console(stderr=True, highlight=False)

    def line(self, label: str, stage: str, summary: str, seconds: float, next_stage: str | None) -> None:
        if not self.enabled:
            return
        tail = f" · next: {next_stage}" if next_stage else ""
        self.console.print(f"{stage_tag(label, self.max_iterations, stage)} {summary} · "
                           f"{fmt_duration(seconds)}{tail}", markup=False, soft_wrap=True)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, markup=False, soft_wrap=True)

    @contextlib.contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        """Yield ``advance(n=1, **fields)``; a transient Rich bar while the stage runs."""
        if not self.enabled or not total:
            yield lambda *a, **k: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                      console=self.console, transient=True) as prog:
            task = prog.add_task(description, total=total, info="")

            def advance(n: int = 1, info: str = "") -> None:
                prog.update(task, advance=n, info=info)

            yield advance


__all__ = ["LoopProgress", "far_summary", "fmt_pct", "stage_tag"]
