"""The loop driver's commit: write the state, then rebuild the report from it.

The state module (:mod:`deftpipe.deft._state`) only reads and writes ``deft_state.json``; rendering
``report.html`` is the driver's job, done here right after each commit so the state never depends on
the report.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from deftpipe._faults import die_after_commit
from deftpipe.deft import _state
from deftpipe.deft._html_report import render_report


def refresh_report(results_dir: str | Path) -> None:
    """Rebuild report.html; a report failure never stops the loop (it is logged as a warning)."""
    try:
        render_report(results_dir)
    except Exception as exc:  # noqa: BLE001 - the report is a view, the state is what matters
        warnings.warn(f"report.html could not be rebuilt: {type(exc).__name__}: {exc}", stacklevel=2)


def commit(results_dir: str | Path, state: dict[str, Any], *, label: str, stage: str, **fields: Any) -> dict[str, Any]:
    """:func:`deftpipe.deft._state.commit` (same keywords), then the report, then the kill-point test hook."""
    _state.commit(results_dir, state, label=label, stage=stage, **fields)
    refresh_report(results_dir)
    die_after_commit(label, stage)  # test hook (deftpipe._faults); a no-op otherwise
    return state


def mark_run(results_dir: str | Path, state: dict[str, Any], *, status: str, reason: str | None = None,
             label: str = "run", stage: str = "loop_stop", summary: str = "", hard_stop: bool = False) -> None:
    """Set the run's status (``complete`` / ``failed``) with its reason, as one commit, and rebuild the report."""
    state["status"] = status
    state["reason"] = reason
    state["hard_stop"] = bool(hard_stop)
    _state.add_event(state, label=label, stage=stage, status=status, summary=summary or (reason or status),
                     duration_sec=0.0)
    _state.save_state(results_dir, state)
    refresh_report(results_dir)


__all__ = ["commit", "mark_run", "refresh_report"]
