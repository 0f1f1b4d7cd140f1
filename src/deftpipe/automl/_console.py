"""What the user sees on stderr: a Rich progress bar over trials (on a terminal), one plain line per
trial and per epoch of a long trial (when stderr is a log: nohup, CI, a scheduler), and the summary
table; and ``progress.json`` in the sweep folder, which ``deftpipe status`` reads (trial n of N in
progress, an estimate of what is left)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deftpipe._clock import fmt_duration
from deftpipe._fs import atomic_write_json
from deftpipe.automl._best_rec import BestRec, RecStatus


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

    def trial_start(self, rec: str, done: int) -> None:
        return None

    def epoch(self, rec: str, epoch: int, n_epochs: int, figure: str) -> None:
        return None

    def trial_end(self, rec: str, status: str, figure: str, seconds: float, done: int) -> None:
        return None


PROGRESS_FILE = "progress.json"
LONG_TRIAL_S = 60.0  # a trial running longer prints a line per epoch on a log


class ProgressRecord(NullProgress):
    """Keeps ``OUT/progress.json`` (trial n of N, the running trial and epoch, mean trial time and an
    estimate of what is left) and tells the display; never fails the sweep over a status file."""

    def __init__(self, display: NullProgress, out_dir: str | Path | None, total: int, title: str,
                 parallel: int = 1) -> None:
        self.display, self.total, self.title, self.parallel = display, total, title, max(1, parallel)
        self.path = Path(out_dir) / PROGRESS_FILE if out_dir is not None else None
        self.durations: list[float] = []
        self.data: dict[str, Any] = {"title": title, "total": total, "done": 0, "running": None, "epoch": None}

    def __enter__(self) -> ProgressRecord:
        if self.path is not None:  # a write cut short by kill -9 leaves its temp file: a status file's, safe to drop
            for stale in self.path.parent.glob(f".{PROGRESS_FILE}.*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        self.display.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.data.update(running=None, epoch=None, finished=exc[0] is None if exc else True)
        self._save()
        self.display.__exit__(*exc)

    def eta_s(self, done: int) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        started = self.data.get("trial_started_at")
        running_left = max(mean - (time.time() - started), 0.0) if self.data.get("running") and started else 0.0
        queued = max(self.total - done - (1 if self.data.get("running") else 0), 0)
        return mean * queued / min(self.parallel, max(queued, 1)) + running_left  # trials side by side

    def _save(self) -> None:
        if self.path is None:
            return
        self.data.update(updated_at=time.time(), mean_trial_s=(sum(self.durations) / len(self.durations)
                                                               if self.durations else None),
                         eta_s=self.eta_s(int(self.data["done"])))
        with contextlib.suppress(OSError):
            atomic_write_json(self.path, self.data)

    def update(self, done: int, text: str = "") -> None:
        self.display.update(done, text)

    def note(self, text: str) -> None:
        self.display.note(text)

    def trial_start(self, rec: str, done: int) -> None:
        self.data.update(done=done, running=rec, epoch=None, trial_started_at=time.time())
        self._save()
        self.display.trial_start(rec, done)

    def epoch(self, rec: str, epoch: int, n_epochs: int, figure: str) -> None:
        self.data.update(running=rec, epoch=f"{epoch}/{n_epochs}", figure=figure)
        self._save()
        started = self.data.get("trial_started_at") or time.time()
        if time.time() - started >= LONG_TRIAL_S:
            spent = fmt_duration(time.time() - started, with_seconds=True)
            self.display.epoch(rec, epoch, n_epochs, f"{figure} · {spent} into the trial")

    def trial_end(self, rec: str, status: str, figure: str, seconds: float, done: int) -> None:
        self.durations.append(seconds)
        self.data.update(done=done, running=None, epoch=None, last=f"{rec} {status} {figure}".strip())
        self._save()
        eta = self.eta_s(done)
        left = f" · ~{fmt_duration(eta, with_seconds=True)} left" if eta is not None and done < self.total else ""
        self.display.trial_end(rec, status, f"{figure}{left}", seconds, done)


class SweepProgress(NullProgress):
    """Progress over finished trials; the description shows the running trial and its epoch."""

    def __init__(self, total: int, *, title: str, console: Console | None = None) -> None:
        self.total = total
        self.title = title
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> SweepProgress:
        self.plain = not self.console.is_terminal  # a log file: plain lines, a bar would stay silent
        if self.plain:
            self.console.print(f"{self.title}: {self.total} trials", markup=False, highlight=False, soft_wrap=True)
            return self
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
        elif getattr(self, "plain", False):
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def epoch(self, rec: str, epoch: int, n_epochs: int, figure: str) -> None:
        if getattr(self, "plain", False):
            self.console.print(f"{self.title}: {rec} epoch {epoch}/{n_epochs} {figure}", markup=False, soft_wrap=True,
                               highlight=False)

    def trial_end(self, rec: str, status: str, figure: str, seconds: float, done: int) -> None:
        if getattr(self, "plain", False):
            self.console.print(f"{self.title}: trial {done}/{self.total} {rec} {status} · {figure} · {fmt_duration(seconds, with_seconds=True)}",
                               markup=False, highlight=False, soft_wrap=True)


def make_progress(show: bool, total: int, title: str, out_dir: str | Path | None = None,
                  parallel: int = 1) -> NullProgress:
    """The display (a bar on a terminal, plain lines on a log, nothing when not ``show``), wrapped in
    the ``progress.json`` record of ``out_dir`` when given (``parallel``: trials run side by side)."""
    display = SweepProgress(total, title=title) if show else NullProgress()
    return ProgressRecord(display, out_dir, total, title, parallel) if out_dir is not None else display


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


def summary_table(best_rec: BestRec) -> Table:
    """Rank, rec, status, metric, pred_counts, duration, params — best first, unranked after."""
    metric = best_rec.metric_name
    reverse = best_rec.direction == "maximize"
    recs = best_rec.all_recs
    scored = sorted((r for r in recs if r.status == RecStatus.COMPLETE and r.score is not None),
                    key=lambda r: r.score, reverse=reverse)
    rest = [r for r in recs if r not in scored]
    table = Table(title=f"AutoML {best_rec.experiment_id}: {metric} ({best_rec.direction})")
    for col in ("rank", "rec", "status", metric, "pred_counts", "duration", "params"):
        table.add_column(col, overflow="fold")
    best_id = best_rec.best.rec_id
    for rank, r in enumerate(scored + rest, start=1):
        score = "-" if r.score is None else f"{r.score:.4g}"
        if r.rerun_score is not None:
            score += f" (rerun {r.rerun_score:.4g})"
        dur = "-" if r.duration is None else f"{r.duration:.1f}s"
        pc = " ".join(f"{k}:{v}" for k, v in r.pred_counts.items()) if r.pred_counts else "-"
        status = str(r.status) + (" ★" if r.rec_id == best_id else "")
        table.add_row(str(rank) if r in scored else "-", r.rec_id, status, score, pc, dur,
                      " ".join(_short(r.specs)))
    return table


def print_summary(best_rec: BestRec, notes: list[str], console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    console.print(summary_table(best_rec))
    for n in notes:
        console.print(n)


__all__ = ["PROGRESS_FILE", "NullProgress", "ProgressRecord", "SweepProgress", "make_progress", "print_summary", "summary_table"]
