"""The pipeline record ``RESULTS_DIR/pipeline_state.json`` and the choice of the run folder.

The record says which phase of the three-phase run is done, so a rerun after Ctrl-C or ``kill -9``
resumes inside the right phase. It only tracks the bridge: the sweeps resume from their Optuna
storage and the loop from ``deft_state.json``; the record never duplicates their state.

Phase statuses: ``pending`` → ``running`` → ``done`` | ``skipped`` | ``failed``. Run statuses:
``running`` (unfinished, resumable), ``failed`` (an error stopped it; resumable), ``stopped`` (the
loop hard-stopped: finished, Phase 3 skipped) and ``complete``. Every change is one atomic write.
The record itself, :class:`PipelineState`, lives in :mod:`deftpipe._pipeline_record` (the audit reads
it too); this module changes it.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from deftpipe._clock import now_iso, run_folders
from deftpipe._pipeline_record import (
    FINISHED,
    PHASES,
    RECORD_NAME,
    RECORD_VERSION,
    PhaseRecord,
    PhaseStatus,
    PipelineEvent,
    PipelineState,
    RecordStatus,
)
from deftpipe._redact import scrub
from deftpipe.errors import StateError


def latest_unfinished(workspace: Path) -> Path | None:
    """The newest pipeline run that is not complete (a folder without a record is not ours)."""
    for run in reversed(run_folders(workspace)):
        if not PipelineState.path(run).is_file():
            continue
        try:
            status = PipelineState.load(run).status
        except (OSError, StateError):
            status = RecordStatus.RUNNING  # unreadable: let PipelineRecord.load say what is wrong
        return None if status in FINISHED else run
    return None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB; Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class PipelineRecord:
    """Modify and commit ``pipeline_state.json`` (:class:`PipelineState`, read as ``rec.state``); each
    mutating call is one atomic write."""

    def __init__(self, results_dir: Path, state: PipelineState):
        self.results_dir = Path(results_dir)
        self.path = PipelineState.path(self.results_dir)
        self.state = state

    @classmethod
    def create(cls, results_dir: Path, *, workspace: Path) -> PipelineRecord:
        now = now_iso()
        state = PipelineState(
            schema_version=RECORD_VERSION, workspace=str(Path(workspace).resolve()),
            results_dir=str(Path(results_dir).resolve()), status=RecordStatus.RUNNING, created_at=now,
            updated_at=now, attempts=0, phases={p: PhaseRecord(status=PhaseStatus.PENDING) for p in PHASES},
            events=[])
        rec = cls(results_dir, state)
        rec.save()
        return rec

    @classmethod
    def load(cls, results_dir: Path) -> PipelineRecord:
        """Raises: StateError (see :meth:`PipelineState.load`)."""
        return cls(results_dir, PipelineState.load(results_dir))

    # --- reading -------------------------------------------------------------------------------
    @property
    def data(self) -> dict[str, Any]:
        """The record as its JSON mapping (a copy, for reading: change it through the methods)."""
        return self.state.to_json()

    @property
    def status(self) -> RecordStatus:
        return self.state.status

    def phase(self, name: str) -> dict[str, Any]:
        """``phases.<name>`` as a plain mapping, with what the phase reported (a copy: change the
        record through :meth:`start` / :meth:`done` / :meth:`skip` / :meth:`fail`)."""
        return self.state.phases[name].to_json()

    def is_done(self, name: str) -> bool:
        return self.state.phases[name].is_done()

    # --- writing -------------------------------------------------------------------------------
    def save(self) -> None:
        self.state.updated_at = now_iso()
        self.state.write(self.path)

    def _event(self, phase: str, status: str, summary: str = "") -> None:
        self.state.events.append(PipelineEvent(seq=len(self.state.events) + 1, ts=now_iso(), phase=phase,
                                               status=status, summary=summary))

    def begin_attempt(self) -> None:
        self.state.attempts = int(self.state.attempts or 0) + 1
        self.state.status = RecordStatus.RUNNING
        self._event("run", "started" if self.state.attempts == 1 else "resumed", f"attempt {self.state.attempts}")
        self.save()

    def start(self, name: str) -> None:
        ph = self.state.phases[name]
        resumed = ph.status in (PhaseStatus.RUNNING, PhaseStatus.FAILED)
        ph.status, ph.error = PhaseStatus.RUNNING, None
        if "started_at" not in ph.model_fields_set:
            ph.started_at = now_iso()
        ph.t_start_unix = time.time()
        self._event(name, "resumed" if resumed else "started")
        self.save()

    @staticmethod
    def _stop_clock(ph: PhaseRecord) -> float | None:
        """This attempt's start time, taken off the record (it is kept only while the phase runs)."""
        t0 = ph.t_start_unix
        ph.t_start_unix = None
        ph.model_fields_set.discard("t_start_unix")
        return t0

    def done(self, name: str, summary: str = "", **info: Any) -> None:
        ph = self.state.phases[name]
        t0 = self._stop_clock(ph)
        ph.status, ph.finished_at, ph.summary = PhaseStatus.DONE, now_iso(), summary
        for key, value in info.items():  # what the phase reports (kept under its own keys)
            setattr(ph, key, value)
        if t0 is not None:
            ph.duration_sec = round((ph.duration_sec or 0.0) + time.time() - t0, 1)
            ph.peak_rss_mib = peak_rss_mib()
        self._event(name, "done", summary)
        self.save()

    def skip(self, name: str, reason: str) -> None:
        ph = self.state.phases[name]
        ph.status, ph.finished_at, ph.reason = PhaseStatus.SKIPPED, now_iso(), reason
        self._event(name, "skipped", reason)
        self.save()

    def fail(self, name: str, error: str) -> None:
        error = scrub(error)  # an exception's text may quote a user program's output
        ph = self.state.phases[name]
        t0 = self._stop_clock(ph)
        if t0 is not None:
            ph.duration_sec = round((ph.duration_sec or 0.0) + time.time() - t0, 1)
        ph.status, ph.error = PhaseStatus.FAILED, error
        self.state.status = RecordStatus.FAILED
        self._event(name, "failed", error)
        self.save()

    def finish(self, status: RecordStatus, summary: str = "") -> None:
        self.state.status = RecordStatus(status)
        self.state.finished_at = now_iso()
        self._event("run", status, summary)
        self.save()


__all__ = ["PHASES", "RECORD_NAME", "PhaseRecord", "PhaseStatus", "PipelineRecord", "PipelineState", "RecordStatus",
           "latest_unfinished"]
