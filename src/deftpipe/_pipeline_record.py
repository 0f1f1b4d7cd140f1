"""``pipeline_state.json``, typed: :class:`PipelineState` with its phases (:class:`PhaseRecord`) and
events, and the statuses as enums.

The three-phase run (``deftpipe.pipeline.PipelineRecord``) writes it; the audit reads the reference
models it names. It sits below both packages so each reads it through the same model.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field

from deftpipe._record_io import Number, Record, read_json_file
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


class PhaseRecord(Record):
    """``phases.<name>``; what a phase reports when done (e.g. ``user_spec``) is kept under its own keys."""

    status: PhaseStatus = PhaseStatus.PENDING
    started_at: str | None = None
    finished_at: str | None = None
    summary: str | None = None
    reason: str | None = None  # why it was skipped
    error: str | None = None  # why it failed (scrubbed of secrets)
    duration_sec: Number | None = None  # summed over attempts
    peak_rss_mib: Number | None = None
    t_start_unix: Number | None = None  # while running: when this attempt started it

    def is_done(self) -> bool:
        return self.status in (PhaseStatus.DONE, PhaseStatus.SKIPPED)


class PipelineEvent(Record):
    seq: int = 0
    ts: str | None = None
    phase: str | None = None  # a phase name, or "run"
    status: str | None = None
    summary: str = ""


class PipelineState(Record):
    """``pipeline_state.json``: which phase of the three-phase run is done."""

    schema_version: int = Field(RECORD_VERSION, alias="version")
    workspace: str | None = None
    results_dir: str | None = None
    status: RecordStatus = RecordStatus.RUNNING
    created_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    phases: dict[str, PhaseRecord] = Field(default_factory=dict)
    events: list[PipelineEvent] = Field(default_factory=list)
    estimate: dict[str, Any] | None = None  # the pre-flight's compute estimate
    estimate_vs_actual: dict[str, Any] | None = None

    @staticmethod
    def path(results_dir: str | Path) -> Path:
        return Path(results_dir) / RECORD_NAME

    @classmethod
    def load(cls, results_dir: str | Path) -> PipelineState:
        """Read ``RESULTS_DIR/pipeline_state.json``; phases added since it was written come as pending.

        Raises:
            StateError: missing, not JSON, without the phases, or of the wrong types.
        """
        path = cls.path(results_dir)
        data = read_json_file(path, missing=f"{path} not found: {results_dir} is not a pipeline run folder",
                              invalid="it is never overwritten blindly — move it away and start a fresh run "
                                      "with `deftpipe run WS --new`")
        if isinstance(data, dict) and isinstance(data.get("phases"), dict):
            for name in ADDED_PHASES:
                data["phases"].setdefault(name, {"status": PhaseStatus.PENDING})
        if not isinstance(data, dict) or set(PHASES) - set(data.get("phases", {})):
            raise StateError(f"{path} lacks the phases {', '.join(PHASES)}; start a fresh run with --new")
        return cls.from_json(check_stored_paths(data, path), where=path)

    def phases_json(self) -> dict[str, dict[str, Any]]:
        """``phases`` as plain mappings (the budget and the summary read them so)."""
        return {name: ph.to_json() for name, ph in self.phases.items()}


__all__ = ["ADDED_PHASES", "FINISHED", "PHASES", "RECORD_NAME", "RECORD_VERSION", "PhaseRecord", "PhaseStatus",
           "PipelineEvent", "PipelineState", "RecordStatus"]
