"""The DEFT loop's stored records, typed: ``deft_state.json`` (:class:`DeftState`, docs/contracts.md
§7) and ``best_model.json`` (:class:`BestModel`), with their statuses as enums.

Each record reads and writes its file in one place (``load`` / ``save``); the rest of the loop reaches
the files only through them (:func:`deftpipe.deft.load_state` and :func:`deftpipe.deft.save_state`
are the state's dict view over :class:`DeftState`, for the stages that still pass the state around
as a mapping). Keys the models do not name are kept as written (:class:`deftpipe._record_io.Record`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field

from deftpipe._clock import now_iso
from deftpipe._fs import atomic_write_json
from deftpipe._record_io import Number, PathText, Record, read_json_file
from deftpipe._stored_paths import check_stored_paths
from deftpipe.errors import StateError, clip

STATE_NAME = "deft_state.json"
STATE_VERSION = 1
BEST_MODEL_NAME = "best_model.json"
BEST_MODEL_VERSION = 1  # best_model.json written before the records were typed has no schema_version: read as 1



class RunStatus(StrEnum):
    """``status`` of a DEFT run (the state's top level)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"

    def is_unfinished(self) -> bool:
        return self in (RunStatus.PENDING, RunStatus.IN_PROGRESS)


class IterationStatus(StrEnum):
    """``iterations.<label>.status``."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"


class Stage(StrEnum):
    """Every value ``stage_completed`` may take (docs/contracts.md §7), in the order they run."""

    TRAIN = "train"
    INFERENCE = "inference"
    EVALUATE = "evaluate"
    RCA = "rca"
    ROUTING = "routing"
    SDG = "sdg"
    MINING = "mining"
    DATA_MERGE = "data_merge"
    LOOP_STOP = "loop_stop"


STAGES = tuple(s.value for s in Stage)
BASELINE = "baseline"
FINAL_AUTOML = "final_automl"


def is_loop_label(label: str) -> bool:
    """``baseline`` or ``iter<N>``: an iteration the loop itself ran (not ``final_automl``)."""
    return label == BASELINE or (label.startswith("iter") and label.removeprefix("iter").isdigit())


def iter_no(label: str) -> int:
    """The loop's order of an iteration: ``baseline`` 0, ``iter<N>`` N — the one rule every reader sorts by.

    Raises:
        ValueError: ``label`` is not one of the loop's (see :func:`is_loop_label`).
    """
    if not is_loop_label(label):
        raise ValueError(f"{label!r} is not a loop iteration label (baseline or iter<N>)")
    return 0 if label == BASELINE else int(label.removeprefix("iter"))


def loop_labels(labels: Iterable[str], *, before: str | None = None) -> list[str]:
    """The loop's labels among ``labels`` (``final_automl`` and others left out) in run order; only
    those before ``before`` when given."""
    out = sorted((lb for lb in labels if is_loop_label(lb)), key=iter_no)
    return out if before is None else [lb for lb in out if iter_no(lb) < iter_no(before)]


def report_order(label: str) -> int:
    """Where ``label`` goes in a listing of every iteration: the loop's in run order, then any other
    label, then ``final_automl``."""
    if is_loop_label(label):
        return iter_no(label)
    return 10_000 if label == FINAL_AUTOML else 9_999
RUN_STATUSES = tuple(s.value for s in RunStatus)


class Event(Record):
    """One entry of ``events`` (which only grows)."""

    seq: int = 0
    ts: str | None = None
    iter: str | None = None  # the iteration label, or "run"
    stage: str | None = None
    status: str | None = None  # ok, skipped, failed, ...
    summary: str = ""
    duration_sec: Number = 0.0


class IterationRecord(Record):
    """``iterations.<label>``: how far the iteration got, its KPI figures and the files it wrote
    (the other metrics and artefact fields are kept under their own keys)."""

    status: IterationStatus = IterationStatus.PENDING
    stage_completed: Stage | None = None
    source: str | None = None  # e.g. automl_phase1, automl_phase3
    far_pct: Number | None = None  # FAR @ 100 % recall on the KPI set
    threshold: Number | None = None  # the KPI set's 100 %-recall threshold
    best_ckpt_path: PathText | None = None
    inference_csv: PathText | None = None
    combined_training_csv: PathText | None = None


class DeftState(Record):
    """``deft_state.json``: the loop's one source of truth (docs/contracts.md §7)."""

    schema_version: int = Field(STATE_VERSION, alias="version")
    started_at: str | None = None
    updated_at: str | None = None
    status: RunStatus = RunStatus.PENDING
    reason: str | None = None  # why the run failed or stopped
    kpi: dict[str, Any] = Field(default_factory=dict)  # metric, operator, target, evaluator, threshold rule
    results_dir: str = ""
    workspace: str | None = None
    max_iterations: int | None = None
    current_iteration: int = 0
    config: dict[str, Any] = Field(default_factory=dict)  # the snapshot of the settings the loop uses
    iterations: dict[str, IterationRecord] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list)
    hard_stop: bool = False  # the loop stopped on an error or the regression gate (Phase 3 skipped)
    user_spec: dict[str, Any] | None = None  # the user's spec trained once (the do-no-harm reference)

    @staticmethod
    def path(results_dir: str | Path) -> Path:
        return Path(results_dir) / STATE_NAME

    @classmethod
    def view(cls, state: DeftState | Mapping[str, Any]) -> DeftState:
        """``state`` typed: itself, or the record of a mapping (:func:`deftpipe.deft.load_state`'s view,
        as the driver holds it) for a reader; writing to the record does not change the mapping."""
        return state if isinstance(state, DeftState) else cls.from_json(dict(state), where=STATE_NAME)

    def loop_iterations(self, *, before: str | None = None) -> list[tuple[str, IterationRecord]]:
        """``(label, iteration)`` of the loop's iterations in run order (:func:`loop_labels`)."""
        return [(lb, self.iterations[lb]) for lb in loop_labels(self.iterations, before=before)]

    @classmethod
    def load(cls, results_dir: str | Path) -> DeftState:
        """Read and check ``RESULTS_DIR/deft_state.json``.

        Raises:
            StateError: the file is missing, not JSON, not a deft state, of another version, or names
                a path outside the run. The file is left untouched.
        """
        path = cls.path(results_dir)
        if not path.is_file():
            raise StateError(f"{path} does not exist; start a loop with `deftpipe deft run WS` first")
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise StateError(
                f"{path} is corrupt (not valid JSON: {err.msg} at line {err.lineno} column {err.colno}); "
                "it was left untouched — restore it from a backup, or start a new run with `deftpipe deft run WS --new`"
            ) from None
        _check_shape(data, path)
        return cls.from_json(check_stored_paths(data, path), where=path)

    def save(self, results_dir: str | Path) -> Path:
        """One atomic write of the state (``updated_at`` set to now)."""
        self.updated_at = now_iso()
        return self.write(self.path(results_dir))

    @classmethod
    def save_mapping(cls, results_dir: str | Path, state: dict[str, Any]) -> Path:
        """Write the state's mapping view (:func:`deftpipe.deft.load_state`'s dict) as it is, stamped
        ``updated_at``: one atomic write; it is checked against the record when read again."""
        state["updated_at"] = now_iso()
        return atomic_write_json(cls.path(results_dir), state)


def _check_shape(state: Any, path: Path) -> None:
    """The checks whose wording users and tests rely on, before the model's own."""
    keys = ("version", "status", "iterations", "events", "config", "results_dir")
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise StateError(f"{path} is not a deft state (missing key(s) {', '.join(missing)}); it was left "
                         "untouched — start a new run with `deftpipe deft run WS --new`")
    types = {"status": str, "iterations": dict, "events": list, "config": dict, "results_dir": str}
    wrong = [f"{k} is {type(state[k]).__name__}, expected {t.__name__}" for k, t in types.items()
             if not isinstance(state[k], t)]
    if not wrong:
        wrong += [f"iterations.{k} is {type(v).__name__}, expected dict" for k, v in state["iterations"].items()
                  if not isinstance(v, dict)]
    if not wrong and any(not isinstance(e, dict) for e in state["events"]):
        wrong.append("events holds a non-object")
    if wrong:
        raise StateError(f"{path} has fields of the wrong type ({clip('; '.join(wrong))}); it was left untouched — "
                         "restore it from a backup, or start a new run with `deftpipe deft run WS --new`")
    if state["version"] != STATE_VERSION:
        raise StateError(f"{path} has state version {clip(repr(state['version']), 40)}, this deftpipe reads version "
                         f"{STATE_VERSION}; finish it with the deftpipe that wrote it, or start a new run")
    if state["status"] not in RUN_STATUSES:
        raise StateError(f"{path}: status {clip(repr(state['status']), 60)} is not one of {', '.join(RUN_STATUSES)}")
    for label, it in state["iterations"].items():
        done = it.get("stage_completed")
        if done is not None and done not in STAGES:
            raise StateError(f"{path}: iterations.{clip(label, 40)}.stage_completed = {clip(repr(done), 60)} is not a stage "
                             f"(expected one of {', '.join(STAGES)})")


class BestModel(Record):
    """``best_model.json``: the deliverable (checkpoint and shipped threshold), chosen on the KPI set,
    with the audit on the holdout beside it once the audit ran (docs/contracts.md §11)."""

    schema_version: int = BEST_MODEL_VERSION
    best_iteration: str | None = None  # baseline, iter<N>, final_automl or user_spec
    far_pct: Number | None = None  # the chosen model's KPI FAR @ 100 % recall (a selection figure)
    checkpoint: PathText | None = None
    threshold: Number | None = None  # the shipped threshold
    kpi_threshold: Number | None = None  # the chosen model's KPI 100 %-recall threshold
    threshold_rule: str | None = None
    kpi_far_pct_at_threshold: Number | None = None
    selection_set: str | None = None
    inference_csv: PathText | None = None
    inference_spec: PathText | None = None
    reason: str | None = None
    loop_best: dict[str, Any] | None = None
    final_automl: dict[str, Any] | None = None
    user_spec: dict[str, Any] | None = None
    delivers_user_spec: bool = False
    choices: list[dict[str, Any]] = Field(default_factory=list)
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    audit: dict[str, Any] | None = None  # written by deftpipe.audit (its AuditSummary)

    @staticmethod
    def path(results_dir: str | Path) -> Path:
        return Path(results_dir) / BEST_MODEL_NAME

    @classmethod
    def load(cls, results_dir: str | Path, *, check_paths: bool = True) -> BestModel:
        """Read ``RESULTS_DIR/best_model.json``; ``check_paths=False`` for a reader of its figures only
        (the summary, the report), which follows none of its paths.

        Raises:
            StateError: missing (no deliverable yet), not JSON, of the wrong types, or naming a path
                outside the run.
        """
        path = cls.path(results_dir)
        data = read_json_file(path, missing=f"{path} not found: {path.parent} has no deliverable to audit yet; finish "
                              "the run (`deftpipe run WS`) or audit a model with --checkpoint/--threshold/--csv",
                              invalid="rerun the pipeline to rewrite it")
        if not isinstance(data, dict):
            raise StateError(f"{path} is not a best-model record (a JSON object); rerun the pipeline to rewrite it")
        return cls.from_json(check_stored_paths(data, path) if check_paths else data, where=path)

    @classmethod
    def read(cls, results_dir: str | Path, *, check_paths: bool = True) -> BestModel | None:
        """The record, or None when the run has none yet (no KPI figure so far).

        Raises:
            StateError: as :meth:`load`, for a file that exists.
        """
        return cls.load(results_dir, check_paths=check_paths) if cls.path(results_dir).is_file() else None

    @classmethod
    def load_if_any(cls, results_dir: str | Path, *, check_paths: bool = True) -> BestModel | None:
        """The record, or None when there is none yet or it cannot be read (it is then written anew)."""
        try:
            return cls.load(results_dir, check_paths=check_paths)
        except StateError:
            return None

    def save(self, results_dir: str | Path) -> Path:
        """One atomic write, stamped with this version's ``schema_version``."""
        self.schema_version = BEST_MODEL_VERSION
        return self.write(self.path(results_dir))


__all__ = ["BASELINE", "BEST_MODEL_NAME", "BEST_MODEL_VERSION", "FINAL_AUTOML", "RUN_STATUSES", "STAGES", "STATE_NAME",
           "STATE_VERSION", "BestModel", "DeftState", "Event", "IterationRecord", "IterationStatus", "RunStatus", "Stage",
           "is_loop_label", "iter_no", "loop_labels", "report_order"]
