"""What the user sees on stderr: a Rich progress bar over trials, and the summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class NullProgress:
    """The "off" switch: same methods, does nothing."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, done: int, text: str = "") -> None:
        return None

    def note(self, text: str) -> None:
        return None


class SweepProgress(NullProgress):
    """Progress over finished trials; the description shows the running trial and its epoch."""

    def __init__(self, total: int, *, title: str, console: Console | None = None) -> None:
        self.total = total
        self.title = title
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> SweepProgress:
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=self.console, transient=False)
        self._progress.__enter__()
        self._task = self._progress.add_task(self.title, total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, done: int, text: str = "") -> None:
        if self._progress is not None:
            desc = f"{self.title} · {text}" if text else self.title
            self._progress.update(self._task, completed=min(done, self.total), description=desc)

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)


def make_progress(show: bool, total: int, title: str) -> NullProgress:
    return SweepProgress(total, title=title) if show else NullProgress()


def _short(specs: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in specs.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _short(v, key + ".")
        else:
            name = key.rsplit(".", 1)[-1]
            out.append(f"{name}={v:.3g}" if isinstance(v, float) else f"{name}={v}")
    return out


def summary_table(best_rec: dict[str, Any]) -> Table:
    """Rank, rec, status, metric, pred_counts, duration, params — best first, unranked after."""
    metric = best_rec["metric_name"]
    reverse = best_rec["direction"] == "maximize"
    recs = best_rec["all_recs"]
    scored = sorted((r for r in recs if r["status"] == "complete" and r["score"] is not None),
                    key=lambda r: r["score"], reverse=reverse)
    rest = [r for r in recs if r not in scored]
    table = Table(title=f"AutoML {best_rec['experiment_id']}: {metric} ({best_rec['direction']})")
    for col in ("rank", "rec", "status", metric, "pred_counts", "duration", "params"):
        table.add_column(col, overflow="fold")
    best_id = best_rec["best"]["rec_id"]
    for rank, r in enumerate(scored + rest, start=1):
        score = "-" if r["score"] is None else f"{r['score']:.4g}"
        if r.get("rerun_score") is not None:
            score += f" (rerun {r['rerun_score']:.4g})"
        dur = "-" if r.get("duration") is None else f"{r['duration']:.1f}s"
        pc = " ".join(f"{k}:{v}" for k, v in r["pred_counts"].items()) if r.get("pred_counts") else "-"
        status = r["status"] + (" ★" if r["rec_id"] == best_id else "")
        table.add_row(str(rank) if r in scored else "-", r["rec_id"], status, score, pc, dur,
                      " ".join(_short(r["specs"])))
    return table


def print_summary(best_rec: dict[str, Any], notes: list[str], console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    console.print(summary_table(best_rec))
    for n in notes:
        console.print(n)


__all__ = ["NullProgress", "SweepProgress", "make_progress", "print_summary", "summary_table"]
