"""Which shipped-threshold rule keeps recall on unseen boards at the lowest FAR (issue 28, item 4).

    python bench/threshold_rule.py [--work /work/value_ws] [--tune-seeds 42] [--out FILE]

Reads the per-row scores bench_value.py keeps for every deliverable (``WORK/scores/ARM_FOLD_SEED.npz``:
the KPI set's and the holdout's scores and labels). Every candidate rule sets the threshold from the
KPI set alone, as the product does; the holdout only measures it. A rule's parameter is chosen on the
cells of the tuning seeds (every holdout at >= 99.9 % recall, then the lowest mean FAR) and reported
on the cells of the other seeds, which took no part in the choice. Writes
``bench/results/threshold_rule.json``. ``--tune-folds v1,v2`` splits by fold instead (tune on those folds'
cells, report on the other fold's). Cells of one (fold, seed) share a training set, and often a model,
so they are not independent. Not run in CI.

The rules (``s`` = scores, ``t_kpi`` = the KPI set's 100 %-recall threshold, ``logit`` the log-odds):

* ``today``        — the product's rule: ``t_kpi`` lowered to where the KPI FAR reaches 10 %
  (or 1.5x the FAR at ``t_kpi``), ``kpi.threshold_far_budget`` / ``threshold_far_reserve``;
* ``budget``       — the same with another FAR budget;
* ``logit_margin`` — ``sigmoid(logit(t_kpi) - m)``: the lowest KPI defect's score, lowered by a fixed
  distance in log-odds (scores near 0 and 1 are compressed; a margin in probability is not);
* ``class_tail``   — per defect class with >= 5 KPI defects, ``mean - z * sd`` of its logits (the tail
  an unseen board's defects of that class reach); the threshold is the lowest of those and ``t_kpi``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deftpipe.metrics import far_budget_threshold, shipped_threshold

OUT = Path(__file__).resolve().parent / "results" / "threshold_rule.json"
PASS = "PASS"
EPS = 1e-7
TARGET_RECALL = 99.9

Rule = Callable[[np.ndarray, np.ndarray], float]  # (KPI scores, KPI labels) -> threshold


def logit(p: np.ndarray | float) -> np.ndarray | float:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def kpi_threshold(s: np.ndarray, y: np.ndarray) -> float:
    return float(s[y != PASS].min())


def today(budget: float, reserve: float = 0.5) -> Rule:
    return lambda s, y: shipped_threshold(kpi_threshold(s, y), pass_scores=s[y == PASS], far_budget_pct=budget,
                                          far_reserve=reserve)


def logit_margin(m: float) -> Rule:
    return lambda s, y: sigmoid(float(logit(kpi_threshold(s, y))) - m)


def class_tail(z: float) -> Rule:
    def rule(s: np.ndarray, y: np.ndarray) -> float:
        t = kpi_threshold(s, y)
        for c in sorted(set(y) - {PASS}):
            lg = logit(s[y == c])
            if len(lg) >= 5:
                t = min(t, sigmoid(float(lg.mean() - z * lg.std(ddof=1))))
        return t
    return rule


def far_at(budget: float) -> Rule:
    """A fixed KPI FAR, whatever the defects (for the table: what a pure budget costs)."""
    return lambda s, y: far_budget_threshold(s[y == PASS], budget)


FAMILIES: dict[str, tuple[Callable[[float], Rule], tuple[float, ...]]] = {
    "budget": (today, (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0)),
    "logit_margin": (logit_margin, (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)),
    "class_tail": (class_tail, (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)),
}


def measure(rule: Rule, cell: dict[str, np.ndarray]) -> dict[str, float]:
    t = rule(cell["kpi_score"], cell["kpi_label"])
    hs, hy = cell["holdout_score"], cell["holdout_label"] != PASS
    return {"threshold": t, "recall_pct": 100.0 * float((hs[hy] >= t).mean()), "escapes": int((hs[hy] < t).sum()),
            "far_pct": 100.0 * float((hs[~hy] >= t).mean()), "kpi_far_pct": 100.0 * float(
                (cell["kpi_score"][cell["kpi_label"] == PASS] >= t).mean())}


def summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    return {"cells": len(rows), "recall_min": min(r["recall_pct"] for r in rows),
            "cells_below_target": sum(r["recall_pct"] < TARGET_RECALL for r in rows),
            "escapes": sum(r["escapes"] for r in rows), "far_mean": float(np.mean([r["far_pct"] for r in rows])),
            "far_max": max(r["far_pct"] for r in rows)}


def load_cells(work: Path) -> dict[str, dict[str, np.ndarray]]:
    cells = {}
    for f in sorted((work / "scores").glob("*.npz")):
        z = np.load(f, allow_pickle=False)
        if {"kpi_score", "holdout_score"} <= set(z.files):
            cells[f.stem] = {k: z[k] for k in z.files}
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("VALUE_WORK", "/work/value_ws")))
    ap.add_argument("--tune-seeds", default="42")
    ap.add_argument("--tune-folds", default=None, help="tune on these folds (every seed), report on the others "
                    "(instead of splitting by seed)")
    ap.add_argument("--out", type=Path, default=OUT, help="the results file (default threshold_rule.json)")
    args = ap.parse_args()
    cells = load_cells(args.work)
    if not cells:
        raise SystemExit(f"no scores under {args.work / 'scores'}: run bench/bench_value.py first")
    fold_of = {k: k.rsplit("_", 2)[1] for k in cells}  # keys: ARM_FOLD_SEED
    seed_of = {k: k.rsplit("_", 2)[2] for k in cells}
    if args.tune_folds:
        split = {"by": "fold", "tune": sorted(set(args.tune_folds.split(",")))}
        tune = [k for k in cells if fold_of[k] in split["tune"]]
    else:
        split = {"by": "seed", "tune": sorted(set(args.tune_seeds.split(",")))}
        tune = [k for k in cells if seed_of[k] in split["tune"]]
    report = [k for k in cells if k not in tune]
    out: dict[str, Any] = {"split": split, "tune_cells": tune, "report_cells": report,
                           "target_recall_pct": TARGET_RECALL, "families": {}}
    for name, (make, params) in FAMILIES.items():
        grid = {}
        for p in params:
            rows = {k: measure(make(p), c) for k, c in cells.items()}
            grid[f"{p:g}"] = {"tune": summary([rows[k] for k in tune]) if tune else None,
                              "report": summary([rows[k] for k in report]) if report else None,
                              "per_cell": rows}
        ok = [p for p in grid if grid[p]["tune"] and grid[p]["tune"]["cells_below_target"] == 0]
        chosen = min(ok, key=lambda p: grid[p]["tune"]["far_mean"]) if ok else None
        out["families"][name] = {"chosen": chosen, "grid": grid}
    today_rows = [measure(today(10.0), c) for c in cells.values()]
    out["today"] = summary(today_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, default=float), encoding="utf-8")
    tmp.replace(args.out)
    print(f"{len(cells)} cells ({len(tune)} tune, {len(report)} report); today's rule: "
          f"recall min {out['today']['recall_min']:.2f} %, FAR mean {out['today']['far_mean']:.1f} %")
    for name, fam in out["families"].items():
        for p, g in fam["grid"].items():
            t, r = g["tune"], g["report"]
            mark = " <- chosen" if p == fam["chosen"] else ""
            fmt = lambda x: (f"recall min {x['recall_min']:.2f} ({x['cells_below_target']} below), "  # noqa: E731
                             f"FAR mean {x['far_mean']:.1f} max {x['far_max']:.1f}") if x else "-"
            print(f"  {name:13s} {p:>4s}  tune: {fmt(t)} | report: {fmt(r)}{mark}")


if __name__ == "__main__":
    sys.exit(main())
