"""Pre-flight section 8: the compute estimate, from a measured 1-epoch dry run when no time is given.

The dry run trains one epoch on a small subsample of the training set (and evaluates a subsample of
the validation set) in a temporary folder outside ``results/``, which is deleted afterwards. From
it come seconds per training row-epoch and per inference row; the phases scale them up:

* Phase 1: recs × (train rows × epochs × s_train + val rows × epochs × s_infer)
* Phase 2: baseline evaluation (KPI + validation rows) + iterations × (grown train rows × epochs ×
  s_train + (val × epochs + KPI + val + pool) rows × s_infer); "grown" adds the SDG rows one
  iteration can add (count_per_target × rca_max_groups)
* Phase 3: the same as Phase 1 on the grown training set, plus one KPI evaluation.

It is an order of magnitude, not a promise: the first trial also decodes every image once.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from deftpipe.config import PipelineConfig
from deftpipe.errors import DeftpipeError

DRY_TRAIN_ROWS = 128
DRY_VAL_ROWS = 64


def _subsample(csv: Path, n: int, out: Path) -> int:
    """Write up to ``n`` rows of ``csv`` to ``out``, keeping defects and PASS rows both present."""
    from deftpipe import data

    df = data.read_dataset(csv)
    if len(df) > n:
        defect = data.is_defect(df["label"])
        k_def = min(int(defect.sum()), max(n // 4, 1))
        parts = [df[defect].sample(k_def, random_state=0),
                 df[~defect].sample(min(int((~defect).sum()), n - k_def), random_state=0)]
        import pandas as pd

        df = pd.concat(parts)
    data.write_dataset(df, out)
    return len(df)


def _warm_cache(csvs: list[Path], spec) -> None:
    """Decode the subsample's images once, as the first trial will, so the timing is per-epoch work."""
    from deftpipe import data

    layout = data.ImageLayout.from_spec(spec)
    for csv in csvs:
        try:
            data.load_pairs(data.read_dataset(csv), layout, spec.model.input_size)
        except DeftpipeError:
            return  # e.g. images the model resizes itself: the timing then includes decoding


def measure_dry_run(ws: Path, cfg: PipelineConfig) -> dict[str, Any]:
    """Train one epoch on a subsample in a temp folder; return seconds per row (train, infer)."""
    from deftpipe.model import get_adapter
    from deftpipe.spec import load_spec

    spec = load_spec(cfg.path(ws, cfg.data.spec))
    spec.train.num_epochs = 1
    if cfg.automl.phase1.batch_size:
        spec.train.batch_size = cfg.automl.phase1.batch_size
    tmp = Path(tempfile.mkdtemp(prefix="deftpipe_dryrun_"))
    try:
        n_train = _subsample(cfg.path(ws, cfg.data.train_csv), DRY_TRAIN_ROWS, tmp / "train.csv")
        n_val = _subsample(cfg.path(ws, cfg.data.val_csv), DRY_VAL_ROWS, tmp / "val.csv")
        _warm_cache([tmp / "train.csv", tmp / "val.csv"], spec)
        adapter = get_adapter(spec)
        t0 = time.perf_counter()
        result = adapter.train(spec, tmp / "train.csv", tmp / "val.csv", tmp / "train")
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        adapter.evaluate(result.best_checkpoint, tmp / "val.csv")
        t_eval = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s_infer = t_eval / max(n_val, 1)
    s_train = max(t_train - t_eval, 0.0) / max(n_train, 1)
    return {"source": "measured 1-epoch dry run", "dry_run_train_rows": n_train, "dry_run_val_rows": n_val,
            "dry_run_seconds": round(t_train + t_eval, 2), "s_per_train_row_epoch": s_train,
            "s_per_infer_row": s_infer}


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(ws: Path, cfg: PipelineConfig, rows: dict[str, int], *, measure: bool,
             blockers: list[str]) -> dict[str, Any]:
    """Section 8. ``rows`` maps split names (train, validation, KPI test, mining pool) to row counts."""
    p1, p3, d = cfg.automl.phase1, cfg.automl.phase3, cfg.deft
    given = all(x is not None for x in (
        p1.per_trial_seconds if p1.enabled else 0, p3.per_trial_seconds if p3.enabled else 0,
        d.per_iteration_seconds if d.max_iterations else 0))
    rates: dict[str, Any] = {"source": "per-job times from pipeline.yaml"}
    if not given:
        if not measure:
            return {"name": "estimate", "title": "Compute estimate", "skipped": True,
                    "items": [{"name": "estimate", "value": "skipped (no dry run requested)", "status": None}]}
        try:
            rates = measure_dry_run(ws, cfg)
        except DeftpipeError as e:
            blockers.append(f"the 1-epoch dry run failed: {e}")
            return {"name": "estimate", "title": "Compute estimate", "error": str(e),
                    "items": [{"name": "1-epoch dry run", "value": f"failed: {e}", "status": "BLOCKER"}]}
    s_tr, s_inf = rates.get("s_per_train_row_epoch", 0.0), rates.get("s_per_infer_row", 0.0)
    n_tr, n_val = rows.get("train", 0), rows.get("validation", 0)
    n_kpi, n_pool = rows.get("KPI test", 0), rows.get("mining pool", 0)
    grown = n_tr + d.sdg.count_per_target * d.rca_max_groups

    def trial(sweep, n_train) -> float:
        return n_train * sweep.num_epochs * s_tr + n_val * sweep.num_epochs * s_inf

    t1 = p1.per_trial_seconds if p1.per_trial_seconds is not None else trial(p1, n_tr)
    t_iter = (d.per_iteration_seconds if d.per_iteration_seconds is not None
              else grown * d.num_epochs * s_tr + (n_val * d.num_epochs + n_kpi + n_val + n_pool) * s_inf)
    t3 = p3.per_trial_seconds if p3.per_trial_seconds is not None else trial(p3, grown)
    phase1 = p1.max_recommendations * t1 if p1.enabled else 0.0
    baseline = (n_kpi + n_val) * s_inf if p1.enabled else d.num_epochs * n_tr * s_tr + (n_kpi + n_val) * s_inf
    phase2 = baseline + d.max_iterations * t_iter
    phase3 = p3.max_recommendations * t3 + n_kpi * s_inf if p3.enabled else 0.0
    total = phase1 + phase2 + phase3
    items = [
        {"name": "per-job times", "value": rates["source"] + (
            f" ({rates['dry_run_train_rows']} train + {rates['dry_run_val_rows']} val rows, "
            f"{rates['dry_run_seconds']} s)" if "dry_run_seconds" in rates else ""), "status": None},
        {"name": "Phase 1", "value": f"{p1.max_recommendations} recs × {_fmt(t1)} = {_fmt(phase1)}"
         if p1.enabled else "disabled", "status": None},
        {"name": "Phase 2", "value": f"baseline eval {_fmt(baseline)} + {d.max_iterations} iterations × "
         f"{_fmt(t_iter)} = {_fmt(phase2)}", "status": None},
        {"name": "Phase 3", "value": f"{p3.max_recommendations} recs × {_fmt(t3)} + KPI eval = {_fmt(phase3)}"
         if p3.enabled else "disabled", "status": None},
        {"name": "total", "value": f"≈ {_fmt(total)}", "status": None},
    ]
    return {"name": "estimate", "title": "Compute estimate", "rates": rates, "items": items,
            "seconds": {"phase1": round(phase1, 1), "phase2": round(phase2, 1), "phase3": round(phase3, 1),
                        "total": round(total, 1), "per_trial_phase1": round(t1, 2),
                        "per_iteration": round(t_iter, 2), "per_trial_phase3": round(t3, 2)}}


__all__ = ["estimate", "measure_dry_run"]
