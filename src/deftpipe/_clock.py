"""The one clock format, the one run-folder naming and the duration formats of deftpipe.

Every timestamp a run writes (``deft_state.json``, ``pipeline_state.json``, their events) is
:func:`now_iso`, UTC to the second (``2026-12-06T01:17:53Z``). Every run folder is
``<ws>/results/run_<YYYYMMDD_HHMMSS>`` in UTC (:func:`new_run_folder`), whichever command made it, so
the folders of one workspace sort by time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

RESULTS = "results"
RUN_PREFIX = "run_"


def now_iso() -> str:
    """Now, UTC, to the second: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_folders(workspace: str | Path) -> list[Path]:
    """Run folders ``results/run_*`` of a workspace, oldest first (names sort by time)."""
    root = Path(workspace) / RESULTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(RUN_PREFIX))


def new_run_folder(workspace: str | Path, *, create: bool = True) -> Path:
    """``results/run_<YYYYMMDD_HHMMSS>`` (UTC); a clash within one second gets ``_2``, ``_3``…

    Args:
        create: make the folder (with its parents); False only names it.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    base = Path(workspace).resolve() / RESULTS / f"{RUN_PREFIX}{stamp}"
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}_{n}"), n + 1
    if create:
        path.mkdir(parents=True)
    return path


def fmt_duration(seconds: float, *, with_seconds: bool = False) -> str:
    """A duration as a progress line shows it: ``45s``, ``12m`` (``12m05s`` ``with_seconds``, as a
    sweep's trial lines), ``1h05m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if with_seconds else f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _fmt_span(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_range(low: float, high: float) -> str:
    """An estimated range as the pre-flight shows it: ``45 s – 1.5 min`` (one decimal: a range
    needs finer steps than a progress line's whole minutes)."""
    return f"{_fmt_span(low)} – {_fmt_span(high)}"


__all__ = ["RESULTS", "RUN_PREFIX", "fmt_duration", "fmt_range", "new_run_folder", "now_iso", "run_folders"]
