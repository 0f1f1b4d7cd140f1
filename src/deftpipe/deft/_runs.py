"""Run folders of a workspace: ``<ws>/results/run_<YYYYMMDD_HHMMSS>/``; pick, create, describe.

``deftpipe deft run WS`` resumes the newest run folder whose ``deft_state.json`` is unfinished
(``pending`` / ``in_progress``, or ``failed`` without a hard stop — e.g. after a crash or a
training error); otherwise (or with ``--new``) it creates a new folder. Earlier runs are
never touched.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from deftpipe.deft._state import STATE_NAME, load_state


def run_folders(workspace: str | Path) -> list[Path]:
    """Run folders, oldest first."""
    root = Path(workspace) / "results"
    return sorted(p for p in root.glob("run_*") if p.is_dir()) if root.is_dir() else []


def resumable(folder: Path) -> bool:
    path = folder / STATE_NAME
    if not path.is_file():
        return False
    state = load_state(folder)  # a corrupt state is an error, not silently skipped
    return state["status"] in ("pending", "in_progress") or (state["status"] == "failed" and not state.get("hard_stop"))


def latest_unfinished(workspace: str | Path) -> Path | None:
    for folder in reversed(run_folders(workspace)):
        if (folder / STATE_NAME).is_file():
            return folder if resumable(folder) else None
    return None


def new_run_folder(workspace: str | Path) -> Path:
    root = Path(workspace).resolve() / "results"
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    folder, n = root / f"run_{stamp}", 1
    while folder.exists():  # two runs in the same second
        n += 1
        folder = root / f"run_{stamp}_{n}"
    folder.mkdir(parents=True)
    return folder


def describe(folder: Path) -> dict[str, Any]:
    """What ``deftpipe status`` shows: the state summary and the pipeline record's phases."""
    info: dict[str, Any] = {"results_dir": str(folder), "deft": None, "pipeline": None}
    if (folder / STATE_NAME).is_file():
        info["deft"] = load_state(folder)
    record = folder / "pipeline_state.json"
    if record.is_file():
        try:
            info["pipeline"] = json.loads(record.read_text())
        except ValueError:
            info["pipeline"] = {"error": f"{record} is not valid JSON"}
    return info


__all__ = ["describe", "latest_unfinished", "new_run_folder", "run_folders"]
