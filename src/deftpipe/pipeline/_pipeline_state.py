"""The pipeline record ``RESULTS_DIR/pipeline_state.json`` and the choice of the run folder.

The record says which phase of the three-phase run is done, so a rerun after Ctrl-C or ``kill -9``
resumes inside the right phase. It only tracks the bridge: the sweeps resume from their Optuna
storage and the loop from ``deft_state.json``; the record never duplicates their state.

Phase statuses: ``pending`` → ``running`` → ``done`` | ``skipped`` | ``failed``. Run statuses:
``running`` (unfinished, resumable), ``failed`` (an error stopped it; resumable), ``stopped`` (the
loop hard-stopped: finished, Phase 3 skipped) and ``complete``. Every change is one atomic write.
"""

from __future__ import annotations

import json
import resource
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

from deftpipe._clock import now_iso, run_folders
from deftpipe._fs import atomic_write_json
from deftpipe._redact import scrub
from deftpipe._stored_paths import check_stored_paths
from deftpipe.errors import StateError

RECORD_NAME = "pipeline_state.json"
RECORD_VERSION = 1
#: The bridge's steps in order: two sweeps, the loop, the hand-off steps between them, the audit of
#: the fixed deliverable on the holdout (the first and only reader of it), and the summary.
PHASES = ("phase1", "handoff12", "phase2", "phase3", "audit", "summary")
ADDED_PHASES = ("audit",)  # a record written before these existed gets them as pending


class RecordStatus(StrEnum):
    """The run's ``status`` in the record."""

    RUNNING = "running"  # unfinished: a rerun resumes it
    FAILED = "failed"  # an error stopped it: a rerun resumes it
    STOPPED = "stopped"  # finished: the loop hard-stopped, Phase 3 skipped
    COMPLETE = "complete"  # finished


class PhaseStatus(StrEnum):
    """``phases.<name>.status``: ``pending`` → ``running`` → ``done`` | ``skipped`` | ``failed``."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


FINISHED = (RecordStatus.COMPLETE, RecordStatus.STOPPED)


def latest_unfinished(workspace: Path) -> Path | None:
    """The newest pipeline run that is not complete (a folder without a record is not ours)."""
    for run in reversed(run_folders(workspace)):
        path = run / RECORD_NAME
        if not path.is_file():
            continue
        try:
            status = json.loads(path.read_text(encoding="utf-8")).get("status")
        except (OSError, ValueError):
            status = "running"  # unreadable: let PipelineRecord.load say what is wrong
        return None if status in FINISHED else run
    return None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB; Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class PipelineRecord:
    """Read/modify/commit ``pipeline_state.json``; each mutating call is one atomic write."""

    def __init__(self, results_dir: Path, data: dict[str, Any]):
        self.results_dir = Path(results_dir)
        self.path = self.results_dir / RECORD_NAME
        self.data = data

    @classmethod
    def create(cls, results_dir: Path, *, workspace: Path) -> PipelineRecord:
        data = {
            "version": RECORD_VERSION,
            "workspace": str(Path(workspace).resolve()),
            "results_dir": str(Path(results_dir).resolve()),
            "status": RecordStatus.RUNNING,
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "attempts": 0,
            "phases": {p: {"status": PhaseStatus.PENDING} for p in PHASES},
            "events": [],
        }
        rec = cls(results_dir, data)
        rec.save()
        return rec

    @classmethod
    def load(cls, results_dir: Path) -> PipelineRecord:
        path = Path(results_dir) / RECORD_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StateError(f"{path} not found: {results_dir} is not a pipeline run folder") from None
        except ValueError as e:
            raise StateError(
                f"{path} is not valid JSON ({e}); it is never overwritten blindly — move it away and "
                "start a fresh run with `deftpipe run WS --new`"
            ) from None
        if isinstance(data, dict) and isinstance(data.get("phases"), dict):
            for name in ADDED_PHASES:
                data["phases"].setdefault(name, {"status": PhaseStatus.PENDING})
        if not isinstance(data, dict) or set(PHASES) - set(data.get("phases", {})):
            raise StateError(f"{path} lacks the phases {', '.join(PHASES)}; start a fresh run with --new")
        return cls(results_dir, check_stored_paths(data, path))

    # --- reading -------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.data["status"]

    def phase(self, name: str) -> dict[str, Any]:
        return self.data["phases"][name]

    def is_done(self, name: str) -> bool:
        return self.phase(name)["status"] in (PhaseStatus.DONE, PhaseStatus.SKIPPED)

    # --- writing -------------------------------------------------------------------------------
    def save(self) -> None:
        self.data["updated_at"] = now_iso()
        atomic_write_json(self.path, self.data)

    def _event(self, phase: str, status: str, summary: str = "") -> None:
        self.data["events"].append(
            {"seq": len(self.data["events"]) + 1, "ts": now_iso(), "phase": phase, "status": status,
             "summary": summary}
        )

    def begin_attempt(self) -> None:
        self.data["attempts"] = int(self.data.get("attempts", 0)) + 1
        self.data["status"] = RecordStatus.RUNNING
        self._event("run", "started" if self.data["attempts"] == 1 else "resumed",
                    f"attempt {self.data['attempts']}")
        self.save()

    def start(self, name: str) -> None:
        ph = self.phase(name)
        resumed = ph["status"] in (PhaseStatus.RUNNING, PhaseStatus.FAILED)
        ph.update(status=PhaseStatus.RUNNING, error=None)
        ph.setdefault("started_at", now_iso())
        ph["t_start_unix"] = time.time()
        self._event(name, "resumed" if resumed else "started")
        self.save()

    def done(self, name: str, summary: str = "", **info: Any) -> None:
        ph = self.phase(name)
        t0 = ph.pop("t_start_unix", None)
        ph.update(status=PhaseStatus.DONE, finished_at=now_iso(), summary=summary, **info)
        if t0 is not None:
            ph["duration_sec"] = round(ph.get("duration_sec", 0.0) + time.time() - t0, 1)
            ph["peak_rss_mib"] = peak_rss_mib()
        self._event(name, "done", summary)
        self.save()

    def skip(self, name: str, reason: str) -> None:
        self.phase(name).update(status=PhaseStatus.SKIPPED, finished_at=now_iso(), reason=reason)
        self._event(name, "skipped", reason)
        self.save()

    def fail(self, name: str, error: str) -> None:
        error = scrub(error)  # an exception's text may quote a user program's output
        ph = self.phase(name)
        t0 = ph.pop("t_start_unix", None)
        if t0 is not None:
            ph["duration_sec"] = round(ph.get("duration_sec", 0.0) + time.time() - t0, 1)
        ph.update(status=PhaseStatus.FAILED, error=error)
        self.data["status"] = RecordStatus.FAILED
        self._event(name, "failed", error)
        self.save()

    def finish(self, status: RecordStatus, summary: str = "") -> None:
        self.data["status"] = status
        self.data["finished_at"] = now_iso()
        self._event("run", status, summary)
        self.save()


__all__ = ["PHASES", "RECORD_NAME", "PhaseStatus", "PipelineRecord", "RecordStatus", "latest_unfinished"]
