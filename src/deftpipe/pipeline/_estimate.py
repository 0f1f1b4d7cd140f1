"""Pre-flight section 8: the compute estimate — a low–high range per phase and in total.

Rates come from the measured dry run (:mod:`deftpipe.pipeline._dry_run`) unless ``pipeline.yaml``
gives every per-job time; the jobs each phase runs are priced by :mod:`deftpipe.pipeline._cost_model`.
After a run, :func:`record_actuals` compares each phase's actual ``duration_sec`` with the model and
stores the ratio in ``results/cost_calibration.json``; the next pre-flight on the same workspace
multiplies the model by it (bounded to [RATIO_MIN, RATIO_MAX]).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deftpipe import data
from deftpipe._clock import fmt_range
from deftpipe._fs import atomic_write_json
from deftpipe.automl import resolve_local_workers
from deftpipe.config import PipelineConfig
from deftpipe.errors import DeftpipeError
from deftpipe.pipeline import _cost_model as cm
from deftpipe.pipeline import _dry_run
from deftpipe.spec import Spec, load_spec

CALIBRATION_NAME = "cost_calibration.json"  # under results/
RATIO_MIN, RATIO_MAX = 0.2, 5.0


def calibration_path(ws: Path) -> Path:
    return ws / "results" / CALIBRATION_NAME


def load_ratios(ws: Path) -> dict[str, Any]:
    """``{"ratios": {phase: actual/model}, "run": name}`` of the last finished run, or empty."""
    try:
        data = json.loads(calibration_path(ws).read_text(encoding="utf-8"))
        ratios = {k: min(max(float(v), RATIO_MIN), RATIO_MAX) for k, v in data.get("ratios", {}).items()
                  if k in cm.PHASES and v}
        return {"ratios": ratios, "run": data.get("run")}
    except (OSError, ValueError, TypeError, AttributeError):
        return {"ratios": {}, "run": None}


def _cached(ws: Path, cfg: PipelineConfig, splits: dict[str, str], spec: Spec) -> frozenset[str]:
    """The splits whose images already have a decode cache entry (their first decode is free)."""
    layout = data.layout_for(spec, ws)
    out = set()
    for name, rel in splits.items():
        csv = cfg.path(ws, rel)
        try:
            if csv.is_file() and data.is_cached(data.read_dataset(csv), layout, spec.model.input_size):
                out.add(name)
        except (OSError, DeftpipeError):
            continue
    return frozenset(out)


def _workload(ws: Path, cfg: PipelineConfig, rows: dict[str, int]) -> cm.Workload:
    from deftpipe.model import scoring_passes, trains_on_cpu  # late: imports torch (the dry run has already)

    splits = {"train": cfg.data.train_csv, "val": cfg.data.val_csv, "kpi": cfg.data.kpi_csv,
              "pool": cfg.data.pool_csv, "holdout": cfg.data.holdout_csv}
    spec = load_spec(cfg.path(ws, cfg.data.spec))
    passes = scoring_passes(spec) if spec.adapter.kind == "torch" else 1  # the built-in model's flip TTA
    cpu = trains_on_cpu(spec)
    train = rows.get("train", 0)
    workers = tuple(resolve_local_workers(p.local_workers, trials=p.max_recommendations, cpu_torch=cpu,
                                          pinned_threads=spec.train.num_threads, row_epochs=train * p.num_epochs)
                    for p in (cfg.automl.phase1, cfg.automl.phase3))
    return cm.Workload(train=rows.get("train", 0), val=rows.get("validation", 0), kpi=rows.get("KPI test", 0),
                       pool=rows.get("mining pool", 0), holdout=rows.get("holdout") or 0,
                       cached=_cached(ws, cfg, splits, spec), score_passes=passes, workers=workers)


def _assumptions(cfg: PipelineConfig, rates: dict[str, Any], calib: dict[str, Any]) -> str:
    d = cfg.deft
    text = [f"each loop iteration adds ~{cm.per_iteration_growth(cfg):.0f} rows; every sweep runs all its "
            "trials + half a fresh-seed re-run of its winner",
            f"this host stays as busy as during the dry run; total = {cm.LOW:g}–{cm.HIGH:g}× the point estimate; "
            f"each phase = {cm.RATE_LOW:g}× its least work (no re-run, no loop iteration) to {cm.RATE_HIGH:g}× its "
            "most (a re-run per sweep, every iteration)"]
    if d.max_iterations:
        text.append(f"the loop's {d.max_iterations} iteration(s) count {cm.LOOP_SHARE:g}×: it stops when the KPI "
                    "is met, so Phase 2 lies between its baseline and all iterations")
    if calib["ratios"]:
        text.append("calibrated by the last finished run " + (calib["run"] or "") + " (actual/model: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in calib["ratios"].items()) + ")")
    if rates.get("source") == "one real job of each kind":
        text.append(f"dry run: {rates['seconds']} s, one {rates['train_rows'][0]}-row training job "
                    f"({rates['s_train_job']:.1f} s) and one {rates['eval_rows'][0]}-row scoring job "
                    f"({rates['s_infer_job']:.1f} s) on the TAO platform, all counted as per-job cost: "
                    "low for datasets much larger than that")
    if rates.get("source") == "measured dry run":
        text.append(f"dry run: {rates['seconds']} s; {rates['s_train_row_epoch'] * 1e3:.2f} ms per training "
                    f"row-epoch + {rates['s_train_job']:.2f} s per job-epoch, {rates['s_infer_row'] * 1e3:.2f} ms "
                    f"per scored row + {rates['s_infer_job']:.2f} s per job, first decode "
                    f"{rates['s_decode_pair'] * 1e3:.2f} ms per pair")
    return "; ".join(text)


def estimate(ws: Path, cfg: PipelineConfig, rows: dict[str, int], *, measure: bool,
             blockers: list[str]) -> dict[str, Any]:
    """Section 8. ``rows`` maps split names (train, validation, KPI test, mining pool) to row counts."""
    costs = cm.given_times(cfg)
    rates: dict[str, Any] = {"source": "per-job times from pipeline.yaml"}
    if costs is None:
        if not measure:
            return {"name": "estimate", "title": "Compute estimate", "skipped": True,
                    "items": [{"name": "estimate", "value": "skipped (no dry run requested)", "status": None}]}
        try:
            r = _dry_run.measure(ws, cfg)
        except DeftpipeError as e:
            blockers.append(f"the dry run failed: {e}")
            return {"name": "estimate", "title": "Compute estimate", "error": str(e),
                    "items": [{"name": "dry run", "value": f"failed: {e}", "status": "BLOCKER"}]}
        rates = r.as_dict()
        costs = cm.price(cfg, r, _workload(ws, cfg, rows))
    calib = load_ratios(ws)
    sec = cm.ranges(costs, calib["ratios"])
    sec["model"] = {name: round(c.seconds, 2) for name, c in costs.items()}
    sec["phase2_all_iterations"] = round(costs["phase2"].seconds + (1 - cm.LOOP_SHARE) * costs["phase2"].full, 1)
    titles = {"phase1": "Phase 1", "phase2": "Phase 2", "phase3": "Phase 3", "audit": "audit"}
    items = [{"name": titles[n], "value": (fmt_range(sec[f"{n}_low"], sec[f"{n}_high"]) + " ("
                                            + "; ".join(costs[n].parts) + ")") if costs[n].seconds else "nothing to run",
              "status": None} for n in cm.PHASES]
    items.append({"name": "total", "value": fmt_range(sec["total_low"], sec["total_high"]), "status": None})
    assumes = _assumptions(cfg, rates, calib)
    items.append({"name": "assumes", "value": assumes, "status": None})
    return {"name": "estimate", "title": "Compute estimate", "rates": rates, "items": items, "seconds": sec,
            "assumes": assumes}


def record_actuals(ws: Path, results_dir: Path, est: dict[str, Any] | None, phases: dict[str, Any]) -> dict | None:
    """Estimate vs actual per phase (for the summary); store actual/model ratios for the next pre-flight."""
    if not est or "seconds" not in est:
        return None
    sec, model = est["seconds"], est["seconds"].get("model", {})
    rows, ratios = [], {}
    for name in cm.PHASES:
        ph = phases.get(name, {})
        if ph.get("status") != "done" or f"{name}_low" not in sec:
            continue
        actual = float(ph.get("duration_sec") or 0.0)
        rows.append({"phase": name, "low": sec[f"{name}_low"], "high": sec[f"{name}_high"], "actual": actual,
                     "inside": sec[f"{name}_low"] <= actual <= sec[f"{name}_high"]})
        if model.get(name):
            ratios[name] = round(actual / model[name], 3)
    if ratios and est.get("rates", {}).get("source") == "measured dry run":
        atomic_write_json(calibration_path(ws), {"run": results_dir.name, "ratios": ratios})
    return {"phases": rows, "ratios": ratios}


__all__ = ["CALIBRATION_NAME", "calibration_path", "estimate", "load_ratios", "record_actuals"]
