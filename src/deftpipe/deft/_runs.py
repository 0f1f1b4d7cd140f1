"""Which run folder the DEFT loop resumes, and what ``deftpipe status`` shows of one (the folders
themselves are named and made by :mod:`deftpipe._clock`).

``deftpipe deft run WS`` resumes the newest run folder whose ``deft_state.json`` is unfinished
(``pending`` / ``in_progress``, or ``failed`` without a hard stop — e.g. after a crash or a
training error); otherwise (or with ``--new``) it creates a new folder. Earlier runs are
never touched.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from deftpipe._clock import fmt_duration, new_run_folder, run_folders
from deftpipe._fs import lock_is_held
from deftpipe.deft._state import STATE_NAME, RunStatus, load_state


def resumable(folder: Path) -> bool:
    path = folder / STATE_NAME
    if not path.is_file():
        return False
    state = load_state(folder)  # a corrupt state is an error, not silently skipped
    status = RunStatus(state["status"])  # load_state checked it is one
    return status.is_unfinished() or (status is RunStatus.FAILED and not state.get("hard_stop"))


def latest_unfinished(workspace: str | Path) -> Path | None:
    for folder in reversed(run_folders(workspace)):
        if (folder / STATE_NAME).is_file():
            return folder if resumable(folder) else None
    return None


def describe(folder: Path) -> dict[str, Any]:
    """What ``deftpipe status`` shows: the state summary and the pipeline record's phases."""
    info: dict[str, Any] = {"results_dir": str(folder), "deft": None, "pipeline": None}
    if (folder / STATE_NAME).is_file():
        info["deft"] = load_state(folder)
    record = folder / "pipeline_state.json"
    if record.is_file():
        try:
            info["pipeline"] = json.loads(record.read_text(encoding="utf-8", errors="replace"))
        except ValueError:
            info["pipeline"] = {"error": f"{record} is not valid JSON"}
        if not _record_shape_ok(info["pipeline"]):
            info["pipeline"] = {"error": f"{record} has fields of the wrong type; it was left untouched"}
    # a run_lock is held by a live process only: a run that says "running" without one has died
    info["live"] = any(lock_is_held(folder / name) for name in (".lock", ".pipeline.lock"))
    info["sweeps"] = _sweeps(folder)
    return info


def _sweeps(folder: Path) -> list[dict[str, Any]]:
    """The sweeps' ``progress.json`` records in the run folder (trial n of N, what is left)."""
    found = []
    for path in sorted(folder.glob("**/progress.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("total"), int) and isinstance(data.get("done"), int):
            found.append({**data, "folder": str(path.parent.relative_to(folder))})
    return found


def sweep_line(p: dict[str, Any], *, live: bool, now: float | None = None) -> str:
    """One line of ``deftpipe status`` for a sweep's progress record."""
    done, total = p["done"], p["total"]
    head = f"sweep {p['folder']}: {done} of {total} trials done"
    if p.get("running") and live:
        epoch = f", epoch {p['epoch']}" if p.get("epoch") else ""
        fig = f", {p['figure']}" if p.get("figure") else ""
        head += f"; trial {min(done + 1, total)} of {total} in progress ({p['running']}{epoch}{fig})"
    mean, eta = p.get("mean_trial_s"), p.get("eta_s")
    if isinstance(mean, int | float):
        head += f"; {fmt_duration(mean)} per trial"
    if isinstance(eta, int | float) and done < total and live:
        head += f", about {fmt_duration(eta)} left"
    if isinstance(p.get("updated_at"), int | float):
        head += f" (updated {fmt_duration((now or time.time()) - p['updated_at'])} ago)"
    return head


def _record_shape_ok(data: Any) -> bool:
    phases = data.get("phases", {}) if isinstance(data, dict) else None
    return (isinstance(data, dict) and isinstance(data.get("status", ""), str) and isinstance(phases, dict)
            and all(isinstance(v, dict) for v in phases.values()))


__all__ = ["describe", "latest_unfinished", "new_run_folder", "run_folders", "sweep_line"]
