"""Auditing a finished run: its deliverable (``best_model.json``) and its reference models.

Writes ``RUN_DIR/audit/audit.json`` (every figure, every escape) and the holdout scores beside it,
then puts the audit into ``best_model.json`` under ``audit``, beside the selection figures. The
audit is the last reader of a run: it runs after the checkpoint and the threshold are fixed and
changes neither. Its records are typed: :class:`AuditSummary` (the ``audit`` object of
``best_model.json``, read and written through :class:`deftpipe.deft.BestModel`) and
:class:`AuditDetails` (``audit.json``).
"""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

from pydantic import Field

from deftpipe._pipeline_record import PipelineState
from deftpipe._record_io import Number, PathText, Record
from deftpipe.audit._core import FIGURES, audit_checkpoint, audit_scored
from deftpipe.config import load_config
from deftpipe.data import read_dataset
from deftpipe.deft import BestModel, DeftState, kpi_metrics, kpi_pass_scores
from deftpipe.errors import DeftpipeError, StateError
from deftpipe.metrics import ThresholdRule
from deftpipe.model import get_adapter
from deftpipe.spec import load_spec

AUDIT_DIR = "audit"
AUDIT_NAME = "audit.json"
AUDIT_VERSION = 1  # audit.json written before the records were typed has no schema_version: read as 1
SELECTION_LABEL = "selection (KPI set)"
AUDIT_LABEL = "audit (holdout, never used for a choice)"
NO_AUDIT = "no holdout in this workspace ({csv} not found), so no audit was done: no figure of this run " \
           "was measured on boards that no choice had seen"
MAX_LISTED = 20  # escapes / threshold setters copied into best_model.json (all of them in audit.json)


class AuditSummary(Record):
    """The ``audit`` object of ``best_model.json`` (the figures of :data:`deftpipe.audit.FIGURES` and the
    capped lists are kept under their own keys)."""

    label: str = AUDIT_LABEL
    done: bool = False
    reason: str | None = None  # why no audit was done
    threshold: Number | None = None
    csv: PathText | None = None
    checkpoint: PathText | None = None
    details: str | None = None  # audit.json
    references: dict[str, Any] = Field(default_factory=dict)


class AuditDetails(Record):
    """``RUN_DIR/audit/audit.json``: every figure and escape of the deliverable and its references."""

    schema_version: int = AUDIT_VERSION
    deliverable: dict[str, Any] = Field(default_factory=dict)
    references: dict[str, Any] = Field(default_factory=dict)
    best_iteration: str | None = None


def _deft_state(results_dir: Path) -> DeftState:
    path = DeftState.path(results_dir)
    if not path.is_file():
        raise StateError(f"{path} not found: {path.parent} has no deliverable to audit yet; finish the run "
                         "(`deftpipe run WS`) or audit a model with --checkpoint/--threshold/--csv")
    return DeftState.load(results_dir)


def holdout_csv(results_dir: Path) -> Path:
    """The holdout CSV of the workspace a run belongs to (``data.holdout_csv`` of its pipeline.yaml)."""
    ws = Path(_deft_state(results_dir).workspace)
    cfg = load_config(ws)
    return cfg.path(ws, cfg.data.holdout_csv)


def reference_models(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Models audited beside the deliverable, by name.

    Today: ``user_spec`` — the user's own spec trained as-is (Phase 1's first trial) — when the
    pipeline record names its checkpoint under ``phases.phase1.user_spec.checkpoint``. Its threshold
    follows the deliverable's rule (:func:`deftpipe.metrics.shipped_threshold` on its KPI scores:
    ``user_spec.kpi_threshold`` and ``kpi_inference_csv`` when recorded, else measured here).
    """
    if not PipelineState.path(results_dir).is_file():
        return {}
    phase1 = PipelineState.load(results_dir).phases.get("phase1")
    user = (getattr(phase1, "user_spec", None) if phase1 else None) or {}
    ckpt = user.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        return {}
    return {"user_spec": {"checkpoint": ckpt, "kpi_threshold": user.get("kpi_threshold"),
                          "kpi_inference_csv": user.get("kpi_inference_csv"), "spec": user.get("spec")}}


def _kpi_scores(results_dir: Path, ref: dict[str, Any], spec: Any) -> tuple[float | None, Path]:
    """A reference model's KPI 100 %-recall threshold and its KPI inference CSV (scored here, as
    Phase 3's winner is, when the run did not record them)."""
    recorded = ref.get("kpi_inference_csv")
    if ref.get("kpi_threshold") is not None and recorded and Path(recorded).is_file():
        return ref["kpi_threshold"], Path(recorded)
    kpi_csv = _deft_state(results_dir).config["kpi_csv"]
    out = results_dir / AUDIT_DIR / "reference_inference_kpi.csv"
    get_adapter(spec).infer(ref["checkpoint"], kpi_csv, out)
    return kpi_metrics(out).get("threshold"), out


def _same_model(ref: dict[str, Any], checkpoint: str | Path, spec: Any) -> bool:
    """Whether a reference is the deliverable itself: the same checkpoint bytes, scored by the torch
    adapter (whose scores depend on the checkpoint alone), so its holdout scores need no second pass."""
    try:
        kinds = {_adapter_kind(s) for s in (ref.get("spec") or spec, spec)}
        return kinds == {"torch"} and filecmp.cmp(ref["checkpoint"], checkpoint, shallow=False)
    except (OSError, DeftpipeError):
        return False


def _adapter_kind(spec: Any) -> str:
    if spec is None:
        return "torch"  # get_adapter(None): the built-in model
    return (load_spec(spec) if isinstance(spec, (str, Path)) else spec).adapter.kind


def summarize(audit: dict[str, Any]) -> dict[str, Any]:
    """The part of an audit that goes into best_model.json (lists capped at :data:`MAX_LISTED`)."""
    keep = {k: audit.get(k) for k in ("threshold", "csv", "checkpoint", "seed", *FIGURES, "escapes_by_class")}
    return {**keep, "per_board": audit.get("per_board", {}),
            "escaped": audit.get("escaped", [])[:MAX_LISTED],
            "threshold_setters": audit.get("threshold_setters", [])[:MAX_LISTED]}


def audit_run(results_dir: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """Audit a run's deliverable (and its reference models) on the workspace's holdout.

    Returns the ``audit`` object written into ``best_model.json``: ``{"label", "done", ...}`` with
    the figures of :func:`deftpipe.audit.audit_checkpoint` when the workspace has a holdout, else
    ``done: false`` and the reason.

    Raises:
        StateError: the run has no ``best_model.json`` (no deliverable yet) or no ``deft_state.json``.
    """
    results_dir = Path(results_dir).resolve()
    best = BestModel.load(results_dir)
    csv = holdout_csv(results_dir)
    if not csv.is_file():
        audit = AuditSummary(label=AUDIT_LABEL, done=False, reason=NO_AUDIT.format(csv=csv))
    elif best.threshold is None:
        audit = AuditSummary(label=AUDIT_LABEL, done=False, reason="the deliverable has no threshold (its KPI set "
                             "has no defect), so no audit was done")
    else:
        out = results_dir / AUDIT_DIR
        spec = best.inference_spec
        full = audit_checkpoint(best.checkpoint, best.threshold, csv, spec=spec, seed=seed, out_dir=out)
        references = {}
        rule = ThresholdRule.of(best.to_json())
        for name, ref in reference_models(results_dir).items():  # shipped by the deliverable's rule
            kpi_t, kpi_csv = _kpi_scores(results_dir, ref, ref.get("spec") or spec)
            if kpi_t is None:
                continue
            t = rule.threshold(kpi_t, kpi_pass_scores(kpi_csv))
            if _same_model(ref, best.checkpoint, spec):  # e.g. the user's spec delivered: its scores are in hand
                references[name] = audit_scored(ref["checkpoint"], t, csv, read_dataset(full["inference_csv"]),
                                                seed=seed, inference_csv=full["inference_csv"])
            else:
                references[name] = audit_checkpoint(ref["checkpoint"], t, csv, spec=ref.get("spec") or spec,
                                                    seed=seed, out_dir=out / name)
        AuditDetails(schema_version=AUDIT_VERSION, deliverable=full, references=references,
                     best_iteration=best.best_iteration).write(out / AUDIT_NAME)
        audit = AuditSummary(label=AUDIT_LABEL, done=True, **summarize(full), details=str(out / AUDIT_NAME),
                             references={n: summarize(r) for n, r in references.items()})
    best = BestModel.load(results_dir)  # re-read: only the audit key is ours
    best.audit = audit.to_json()
    best.save(results_dir)
    return best.audit


__all__ = ["AUDIT_LABEL", "SELECTION_LABEL", "AuditDetails", "AuditSummary", "audit_run", "holdout_csv", "reference_models", "summarize"]
