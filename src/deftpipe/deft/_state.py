"""``deft_state.json`` (docs/contracts.md §7): the loop's single source of truth, owned by this module only.

The file is read and written only through its typed record, :class:`deftpipe.deft.DeftState`
(``deft/_records.py``); :func:`load_state` / :func:`save_state` are its mapping view for the stages
that still pass the state around as a dict.

Every state change is one :func:`commit`: check that the stage's artefacts exist, record them,
append an event, write the file atomically (temp + fsync + rename). The loop driver then rebuilds
the report (:mod:`deftpipe.deft._commit`, which also holds the ``DEFTPIPE_FAULT_AFTER`` test hook). A
corrupt file is never overwritten: :func:`load_state` raises :class:`StateError` and leaves it as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deftpipe._clock import now_iso
from deftpipe.config import find_workspace
from deftpipe.deft._records import (
    RUN_STATUSES,
    STAGES,
    STATE_NAME,
    STATE_VERSION,
    DeftState,
    IterationStatus,
    RunStatus,
    Stage,
)
from deftpipe.errors import StateError, clip
from deftpipe.metrics import ThresholdRule

#: Iteration fields that name files; a completed stage's files must exist on resume.
ARTEFACT_FIELDS = ("best_ckpt_path", "train_spec", "inference_csv", "metrics_json", "rca_gaps", "rca_summary",
                   "rca_embeddings", "routing_json", "sdg_csv", "sdg_allocation", "mined_csv", "mining_report",
                   "combined_training_csv", "provenance_csv", "merge_validation")


def state_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / STATE_NAME


def load_state(results_dir: str | Path) -> dict[str, Any]:
    """Read and check ``RESULTS_DIR/deft_state.json`` (:meth:`DeftState.load`) as a mapping.

    Raises:
        StateError: the file is missing, not JSON, or not a deft state. The file is left untouched.
    """
    return DeftState.load(results_dir).to_json()


def save_state(results_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write the mapping view of the state (:meth:`DeftState.save_mapping`; ``updated_at`` set)."""
    return DeftState.save_mapping(results_dir, state)


def new_state(*, workspace: Path, results_dir: Path, config, spec_path: Path,
              max_iterations: int) -> dict[str, Any]:
    """A fresh state (status ``pending``) holding a snapshot of every setting the loop uses.

    ``config`` is a :class:`deftpipe.config.PipelineConfig`; the loop reads its settings back from
    this snapshot, so a resumed run behaves like the run that started it.
    """
    d, deft = config.data, config.deft
    now = now_iso()
    return DeftState(
        schema_version=STATE_VERSION, started_at=now, updated_at=now, status=RunStatus.PENDING, reason=None,
        kpi={"metric": config.kpi.metric, "operator": config.kpi.operator, "target": config.kpi.target,
             "evaluator_command": config.kpi.evaluator_command, **ThresholdRule.of(config.kpi).settings()},
        results_dir=str(Path(results_dir).resolve()), workspace=str(Path(workspace).resolve()),
        max_iterations=int(max_iterations), current_iteration=0,
        config={
            "spec": str(Path(spec_path).resolve()),
            "train_csv": str(config.path(workspace, d.train_csv)),
            "val_csv": str(config.path(workspace, d.val_csv)),
            "kpi_csv": str(config.path(workspace, d.kpi_csv)),
            "pool_csv": str(config.path(workspace, d.pool_csv)),
            "images_dir": str(config.path(workspace, d.images_dir)),
            "mining": deft.mining.model_dump(),
            "sdg": deft.sdg.model_dump(),
            "num_epochs": deft.num_epochs,
            "warm_start_lr_scale": deft.warm_start_lr_scale,
            "warm_start_from": deft.warm_start_from,
            "added_rows_weight": deft.added_rows_weight,
            "baseline_epochs": deft.baseline_epochs,
            "batch_size": deft.batch_size,
            "regression_gate_pct": deft.regression_gate_pct,
            "rca_max_groups": deft.rca_max_groups,
            "analysis_split": deft.analysis_split,
        },
        iterations={}, events=[],
    ).to_json()


#: Settings a resumed run takes from the *current* pipeline.yaml (docs/deft.md, "Resuming"): each
#: affects only stages that have not run yet (later iterations, the next evaluation), so a run that
#: failed on one of them resumes once it is fixed. Everything else (data paths, the spec, the KPI
#: metric, operator and target the earlier gates were judged by) stays as the run started.
RESUMABLE_DEFT = ("mining", "sdg", "num_epochs", "warm_start_lr_scale", "baseline_epochs", "batch_size",
                  "regression_gate_pct", "rca_max_groups", "added_rows_weight")
RESUMABLE_KPI = ("evaluator_command",)


def refresh_resumable_settings(state: dict[str, Any], config) -> list[str]:
    """Copy the :data:`RESUMABLE_DEFT` / :data:`RESUMABLE_KPI` settings of ``config`` (a
    :class:`deftpipe.config.PipelineConfig`) into the state's snapshot; return the changed names."""
    changed = []
    deft = config.deft.model_dump(mode="json")
    for key in RESUMABLE_DEFT:
        if state["config"].get(key) != deft[key]:
            state["config"][key] = deft[key]
            changed.append(f"deft.{key}")
    for key in RESUMABLE_KPI:
        new = getattr(config.kpi, key)
        if state["kpi"].get(key) != new:
            state["kpi"][key] = new
            changed.append(f"kpi.{key}")
    return changed


def iteration(state: dict[str, Any], label: str) -> dict[str, Any]:
    """The entry ``iterations.<label>``, created empty (status pending) when absent."""
    return state["iterations"].setdefault(label, {"status": IterationStatus.PENDING, "stage_completed": None})


def add_event(state: dict[str, Any], *, label: str, stage: str, status: str, summary: str,
              duration_sec: float) -> dict[str, Any]:
    events = state["events"]
    event = {"seq": (events[-1]["seq"] + 1) if events else 1, "ts": now_iso(), "iter": label,
             "stage": stage, "status": status, "summary": summary, "duration_sec": round(float(duration_sec), 3)}
    events.append(event)
    return event


def check_artefacts(paths: dict[str, Any], *, label: str, stage: str) -> None:
    """Raise StateError when a file a stage claims to have written does not exist."""
    for key, p in paths.items():
        if p is not None and not Path(p).exists():
            raise StateError(f"stage {label}/{stage} claims artefact {key} = {p}, which does not exist; "
                             "the stage did not finish writing it — rerun the same command to redo the stage")


def commit(results_dir: str | Path, state: dict[str, Any], *, label: str, stage: str, summary: str,
           duration_sec: float, updates: dict[str, Any] | None = None, artefacts: dict[str, Any] | None = None,
           iteration_status: str = "in_progress", status: str = "ok",
           run_status: str | None = None, reason: str | None = None, hard_stop: bool = False) -> dict[str, Any]:
    """Record that ``stage`` of iteration ``label`` finished: one atomic state write + one event.

    The state renders nothing: the loop driver rebuilds the report after it commits
    (:func:`deftpipe.deft._commit.commit`).

    Args:
        updates: plain values to store in ``iterations.<label>`` (metrics, counts).
        artefacts: ``field -> path`` of files the stage wrote; each must exist, then is stored.
        iteration_status: the iteration's status after this stage.
        status: the event's status (``ok``, ``skipped``, ``failed``...).
        run_status, reason, hard_stop: set the run's status in the same write (the final stage).
    Raises:
        StateError: an artefact is missing (nothing is written then).
    """
    artefacts = {k: (str(v) if v is not None else None) for k, v in (artefacts or {}).items()}
    check_artefacts(artefacts, label=label, stage=stage)
    it = iteration(state, label)
    it.update(updates or {})
    it.update(artefacts)
    it["stage_completed"] = stage
    it["status"] = iteration_status
    if state["status"] == RunStatus.PENDING:
        state["status"] = RunStatus.IN_PROGRESS
    if run_status is not None:
        state["status"], state["reason"], state["hard_stop"] = run_status, reason, bool(hard_stop)
    add_event(state, label=label, stage=stage, status=status, summary=summary, duration_sec=duration_sec)
    save_state(results_dir, state)
    return state


def verify_state_artefacts(state: dict[str, Any], results_dir: str | Path, workspace: str | Path | None = None) -> None:
    """On resume: every file named by a recorded stage must still exist, inside the run folder or
    its workspace (a path in the state file never leads the loop to read or overwrite other files).

    Raises:
        StateError: naming the iteration, field and path, and how to recover.
    """
    roots = [os.path.realpath(r) for r in (results_dir, workspace, find_workspace(results_dir)) if r is not None]
    for label, it in state["iterations"].items():
        for key in ARTEFACT_FIELDS:
            p = it.get(key)
            if p is not None and not isinstance(p, str):
                raise StateError(f"{state_path(results_dir)}: iterations.{label}.{key} is {type(p).__name__}, "
                                 "expected a path; start a new run with `deftpipe deft run WS --new`")
            real = os.path.realpath(p) if p else None
            if real and not any(real == r or real.startswith(r + os.sep) for r in roots):
                raise StateError(f"{state_path(results_dir)}: iterations.{label}.{key} names {clip(p, 300)}, outside "
                                 "the run folder and its workspace; restore the state file, or start a new run "
                                 "with `deftpipe deft run WS --new`")
            if p and not Path(p).exists():
                raise StateError(
                    f"{state_path(results_dir)}: iterations.{label}.{key} names {p}, which does not exist; "
                    "restore the file, or start a new run with `deftpipe deft run WS --new`"
                )


__all__ = [
    "ARTEFACT_FIELDS",
    "DeftState",
    "RUN_STATUSES",
    "IterationStatus",
    "RunStatus",
    "Stage",
    "STAGES",
    "STATE_NAME",
    "add_event",
    "commit",
    "iteration",
    "load_state",
    "new_state",
    "save_state",
    "state_path",
    "verify_state_artefacts",
]
