"""Best-model hand-off and the pipeline bridge's helpers (pre-seed, Phase 3 record).

Best = the chain of :mod:`deftpipe.deft._choice`: ``baseline``, ``iter<N>`` in order, then
``final_automl``, each replacing the model in hand only when better beyond the noise of the KPI set
(a paired bootstrap of the selection rule's figure); last, the deliverable must beat the user's spec
trained once (``user_spec``, recorded by the pipeline) the same way, else the user's spec is delivered.
The shipped threshold is the chosen model's KPI 100 %-recall threshold, lowered by
``kpi.threshold_margin`` and to the KPI set's FAR budget ``kpi.threshold_far_budget`` (or a reserve in
proportion to its own FAR, ``kpi.threshold_far_reserve``; :class:`deftpipe.metrics.ThresholdRule`, read
from the chosen model's KPI scores). An ``audit`` already in
``best_model.json`` is kept while it audits the same checkpoint and threshold.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from deftpipe._fs import atomic_path, atomic_write_text
from deftpipe.config import load_config
from deftpipe.data import is_defect
from deftpipe.deft import _state
from deftpipe.deft._choice import Candidate, decide, loop_best
from deftpipe.deft._commit import commit, refresh_report
from deftpipe.deft._context import jsonable
from deftpipe.deft._model_stages import pick_metrics
from deftpipe.deft._records import BestModel
from deftpipe.errors import CheckpointError, StateError
from deftpipe.metrics import ThresholdRule
from deftpipe.selection import RULE_FIGURE
from deftpipe.spec import load_spec, spec_to_dict

USER_SPEC = "user_spec"


def _candidate(label: str, it: dict[str, Any]) -> dict[str, Any]:
    return {"label": label, "far_pct": it.get("far_pct"), "checkpoint": it.get("best_ckpt_path"),
            "threshold": it.get("threshold"), "inference_csv": it.get("inference_csv"),
            "spec": it.get("train_spec") or it.get("spec_path"), "source": it.get("source")}


def _choose(state: dict[str, Any]) -> tuple[Candidate, Candidate, list[dict[str, Any]], str] | None:
    """(chosen, loop's best, every decision, the reason in words), or None before any KPI figure."""
    loop = loop_best(state)
    if loop is None:
        return None
    chosen, decisions = loop.kept, list(loop.decisions)
    note = f"best DEFT iteration ({chosen.label}): each iteration replaced the one in hand only when better " \
           f"beyond the noise of the KPI set (paired bootstrap of {RULE_FIGURE})"
    final = state["iterations"].get("final_automl")
    if final and final.get("far_pct") is not None:
        d = decide(chosen, Candidate("final_automl", final))
        decisions.append(d)
        if d["replaces"]:
            chosen, note = Candidate("final_automl", final), "final_automl beat the loop's best beyond the noise"
        else:
            note = f"final_automl did not beat the loop's best ({chosen.label}) beyond the noise; the loop's best is kept"
    user = state.get(USER_SPEC)
    if user and user.get("far_pct") is not None:
        d = decide(Candidate(USER_SPEC, user), chosen)
        decisions.append(d)
        if d.get("how") == "the same checkpoint":
            note += f"; {chosen.label} is the user's spec trained once (Phase 1's winner did not beat it)"
        elif not d["replaces"]:
            note = (f"nothing beat the user's spec trained once beyond the noise of the KPI set ({chosen.label}: "
                    f"{d.get('why')}): the run delivers the user's spec")
            chosen = Candidate(USER_SPEC, user)
    return chosen, loop.kept, decisions, note


def write_best_model(results_dir: str | Path) -> dict[str, Any] | None:
    """Recompute ``best_model.json`` (:class:`deftpipe.deft.BestModel`) and
    ``best_model_inference_spec.yaml`` from the state.

    Returns the best_model.json content, or None when no iteration has a KPI figure yet.
    """
    results_dir = Path(results_dir)
    state = _state.load_state(results_dir)
    its = state["iterations"]
    picked = _choose(state)
    if picked is None:
        return None
    chosen_c, loop_c, decisions, note = picked
    chosen, loop_best_d = _candidate(chosen_c.label, chosen_c.record), _candidate(loop_c.label, loop_c.record)
    final = its.get("final_automl")
    final_c = _candidate("final_automl", final) if final and final.get("far_pct") is not None else None
    loop = [c for c in ("baseline", *sorted((lb for lb in its if lb.startswith("iter")
                                              and lb.removeprefix("iter").isdigit()),
                                             key=lambda lb: int(lb.removeprefix("iter"))))
            if c in its and its[c].get("far_pct") is not None]
    spec_path = chosen["spec"] or state["config"]["spec"]
    spec = spec_to_dict(load_spec(spec_path))
    spec["train"]["pretrained_model_path"] = chosen["checkpoint"]
    spec["dataset"]["classify"]["test_csv"] = state["config"]["kpi_csv"]
    rule = ThresholdRule.of(state["kpi"])  # the rule the run started with
    shipped = kpi_far_at = None
    if chosen["threshold"] is not None:
        passes = kpi_pass_scores(chosen["inference_csv"])
        shipped = rule.threshold(chosen["threshold"], passes)
        kpi_far_at = 100.0 * float((passes >= shipped).mean()) if len(passes) else 0.0
    header = (f"# deftpipe best model: {chosen['label']} (KPI FAR@100%R {chosen['far_pct']}%)\n"
              f"# checkpoint: {chosen['checkpoint']}\n# threshold (KPI set, 100% recall): {chosen['threshold']}\n"
              + (f"# shipped threshold ({rule}): {shipped}\n"
                 if shipped != chosen["threshold"] else ""))
    spec_yaml = atomic_write_text(results_dir / "best_model_inference_spec.yaml",
                                  header + yaml.safe_dump(spec, sort_keys=False))
    out = {"best_iteration": chosen["label"], "far_pct": chosen["far_pct"], "checkpoint": chosen["checkpoint"],
           "threshold": shipped, "kpi_threshold": chosen["threshold"], **rule.settings(),
           "threshold_rule": str(rule),
           "kpi_far_pct_at_threshold": kpi_far_at,
           "selection_set": "KPI set: chooses the gate, the best iteration, Phase 3 vs the loop and the threshold",
           "inference_csv": chosen["inference_csv"],
           "inference_spec": str(spec_yaml), "reason": note, "loop_best": loop_best_d, "final_automl": final_c,
           "user_spec": _candidate(USER_SPEC, state[USER_SPEC]) if state.get(USER_SPEC) else None,
           "delivers_user_spec": chosen["label"] == USER_SPEC, "choices": decisions,
           "candidates": [{"label": lb, "far_pct": its[lb]["far_pct"]} for lb in loop]}
    record = BestModel(**out)
    old = BestModel.load_if_any(results_dir, check_paths=False)
    if old and old.audit and (old.checkpoint, old.threshold) == (record.checkpoint, record.threshold):
        record.audit = old.audit  # the same deliverable: its audit still holds
    record.save(results_dir)
    return record.to_json()


def kpi_pass_scores(inference_csv: str | Path | None) -> np.ndarray:
    """The PASS rows' scores of a model's KPI inference CSV (what the FAR budget is counted on).

    Raises:
        StateError: the CSV is missing or has no ``label``/``score`` columns (rerun the evaluation).
    """
    try:
        df = pd.read_csv(inference_csv, usecols=["label", "score"], dtype={"label": str})
    except (OSError, ValueError, TypeError) as e:
        raise StateError(f"the KPI scores of the chosen model ({inference_csv}) cannot be read ({e}); the shipped "
                         "threshold's FAR budget is counted on them: rerun the run to re-evaluate it") from None
    return pd.to_numeric(df["score"], errors="coerce").to_numpy(dtype=float)[~is_defect(df["label"]).to_numpy()]


def preseed_baseline(results_dir: str | Path, *, workspace: str | Path, config, spec_path: str | Path,
                     checkpoint: str | Path, train_metric: float | None,
                     source: str = "automl_phase1", kpi_scores: str | Path | None = None) -> dict[str, Any]:
    """Record an externally trained baseline (Phase 1's winner): ``stage_completed = train``.

    The loop then skips its own baseline train. Creates the state when absent. With ``kpi_scores``
    (the checkpoint's KPI inference CSV, already computed by the hand-off) it is copied to
    ``baseline/inference/inference.csv`` and the inference stage is recorded too: a model's scores on
    a set are computed once.

    Raises:
        CheckpointError: ``checkpoint`` missing or empty.
        StateError: the state already has a baseline beyond its train stage.
    """
    results_dir, checkpoint = Path(results_dir).resolve(), Path(checkpoint).resolve()
    if not checkpoint.is_file() or checkpoint.stat().st_size == 0:
        raise CheckpointError(f"pre-seed checkpoint {checkpoint} is missing or empty; copy the Phase 1 winner first")
    config = config or load_config(workspace)
    if _state.state_path(results_dir).exists():
        state = _state.load_state(results_dir)
        done = state["iterations"].get("baseline", {}).get("stage_completed")
        if done not in (None, "train"):
            raise StateError(f"{_state.state_path(results_dir)}: the baseline is already at stage {done}; "
                             "a pre-seed only applies to a run that has not evaluated its baseline")
        state["config"]["spec"] = str(Path(spec_path).resolve())
    else:
        state = _state.new_state(workspace=Path(workspace), results_dir=results_dir, config=config,
                                 spec_path=Path(spec_path), max_iterations=config.deft.max_iterations)
    shown = (f"{train_metric.get('metric', 'metric')} {train_metric.get('value')}" if isinstance(train_metric, dict)
             else f"val metric {train_metric}")
    commit(results_dir, state, label="baseline", stage="train", duration_sec=0.0,
           summary=f"pre-seeded from {source}: {checkpoint.name} ({shown})",
           updates={"train_metric": train_metric, "source": source, "spec_path": str(Path(spec_path).resolve())},
           artefacts={"best_ckpt_path": checkpoint})
    if kpi_scores is not None and Path(kpi_scores).is_file():
        dest = results_dir / "baseline" / "inference" / "inference.csv"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            shutil.copyfile(kpi_scores, tmp)
        commit(results_dir, state, label="baseline", stage="inference", duration_sec=0.0,
               summary=f"KPI scores of {checkpoint.name} from the hand-off ({Path(kpi_scores).name})",
               artefacts={"inference_csv": dest})
    return state


def record_user_spec(results_dir: str | Path, *, checkpoint: str | Path, inference_csv: str | Path,
                     metrics: dict[str, Any], spec_path: str | Path, rec_id: str | None = None) -> dict[str, Any]:
    """Record the user's spec trained once (Phase 1's first trial) as ``user_spec``: the candidate every
    deliverable must beat beyond the noise of the KPI set, else the run delivers it.

    Raises:
        CheckpointError: ``checkpoint`` or ``inference_csv`` missing.
    """
    results_dir = Path(results_dir)
    for what, p in (("checkpoint", checkpoint), ("KPI scores", inference_csv)):
        if not Path(p).is_file():
            raise CheckpointError(f"the user's spec's {what} {p} is missing; rerun `deftpipe run WS` to redo Phase 1")
    state = _state.load_state(results_dir)
    state[USER_SPEC] = {**pick_metrics(jsonable(dict(metrics))), "best_ckpt_path": str(Path(checkpoint).resolve()),
                        "inference_csv": str(Path(inference_csv).resolve()),
                        "spec_path": str(Path(spec_path).resolve()), "rec_id": rec_id,
                        "source": "the user's spec trained once (Phase 1's first trial)"}
    _state.save_state(results_dir, state)
    return state


def record_final_automl(results_dir: str | Path, *, checkpoint: str | Path, metrics: dict[str, Any],
                        inference_csv: str | Path, best_rec_path: str | Path, source: str = "automl_phase3",
                        spec_path: str | Path | None = None) -> dict[str, Any]:
    """Record Phase 3's winner as ``iterations.final_automl`` and recompute the best model."""
    t0 = time.monotonic()
    results_dir = Path(results_dir)
    state = _state.load_state(results_dir)
    updates = {**pick_metrics(jsonable(dict(metrics))), "source": source}
    if spec_path:
        updates["spec_path"] = str(Path(spec_path).resolve())
    far = updates.get("far_pct")
    commit(results_dir, state, label="final_automl", stage="evaluate", duration_sec=time.monotonic() - t0,
           summary=f"Phase 3 winner recorded ({source}): KPI FAR@100%R {far}%", updates=updates,
           artefacts={"best_ckpt_path": checkpoint, "inference_csv": inference_csv,
                      "best_rec_path": best_rec_path}, iteration_status="complete")
    write_best_model(results_dir)
    refresh_report(results_dir)
    return state


__all__ = ["USER_SPEC", "kpi_pass_scores", "preseed_baseline", "record_final_automl", "record_user_spec",
           "write_best_model"]
