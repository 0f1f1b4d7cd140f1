"""Which KPI-set figure ranks candidate models the way the holdout does (issue 17, item 6).

    python bench/selection_rule.py        # reads bench/results/ablation.json, writes selection_rule.json

The candidates are every model the ablation's arms trained on a fold (sweep trials, loop
iterations, Phase 3 trials, the default spec), scored by ``bench_ablation.py --score-candidates`` on
the fold's KPI set, its validation set and its holdout. Per fold (and seed) and per selection figure:
Spearman and Kendall rank correlation with the holdout's FAR@100%R, and the **regret** — holdout
FAR@100%R of the candidate the figure picks minus the best candidate's — for the whole pool and for
the choices a run actually makes (each pipeline run's own candidates). Lower figure = better for
every figure (all are FAR percentages).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from deftpipe._fs import atomic_write_json
from deftpipe.selection import TAIL_K, pick

RESULTS = Path(__file__).resolve().parent / "results"
FIGURES = {  # name -> (set, figure)
    "kpi far_pct": ("kpi", "far_pct"),
    "kpi boot_mean": ("kpi", "boot_mean"),
    f"kpi tail_{TAIL_K}": ("kpi", f"tail_{TAIL_K}"),
    "kpi far@99.5%R": ("kpi", "far_pct_at_995"),
    "kpi+val far_pct": ("kpi_val", "far_pct"),
    "kpi+val boot_mean": ("kpi_val", "boot_mean"),
    f"kpi+val tail_{TAIL_K}": ("kpi_val", f"tail_{TAIL_K}"),
    "val far_pct": ("val", "far_pct"),
}
TRUTH = ("holdout", "far_pct")


def _fingerprint(c: dict[str, Any]) -> str:
    return json.dumps(c["figures"], sort_keys=True)


def _value(c: dict[str, Any], where: tuple[str, str]) -> float | None:
    v = c.get("figures", {}).get(where[0], {}).get(where[1])
    return None if v is None else float(v)


def _regret(cands: list[dict[str, Any]], where: tuple[str, str]) -> float | None:
    chosen = pick(cands, lambda c: _value(c, where))
    if chosen is None:
        return None
    return _value(chosen, TRUTH) - min(_value(c, TRUTH) for c in cands)


def measure(cells: dict[str, Any]) -> dict[str, Any]:
    pools: dict[str, list[dict[str, Any]]] = defaultdict(list)  # fold|seed -> candidates
    runs: list[list[dict[str, Any]]] = []  # each pipeline run's own candidates (the choices it makes)
    for key, cell in cells.items():
        arm, fold, seed = key.split("|")
        scored = [c for c in cell.get("candidates", []) if "figures" in c]
        pool = pools[f"{fold}|{seed}"]
        seen = {_fingerprint(c) for c in pool}
        # the same model twice (the loop's pre-seeded baseline is Phase 1's winner; arms sharing a
        # seeded Phase 1 train the same trials) counts once
        pool += [{**c, "arm": arm} for c in scored if _fingerprint(c) not in seen]
        if len(scored) > 1:
            runs.append(scored)
    out: dict[str, Any] = {"n_candidates": {k: len(v) for k, v in pools.items()}, "n_runs": len(runs),
                           "figures": {}}
    for name, where in FIGURES.items():
        per_fold = {}
        for pool_key, cands in pools.items():
            cands = [c for c in cands if _value(c, where) is not None]
            if len(cands) < 3:
                continue
            x = [_value(c, where) for c in cands]
            y = [_value(c, TRUTH) for c in cands]
            per_fold[pool_key] = {"spearman": float(spearmanr(x, y).statistic),
                                  "kendall": float(kendalltau(x, y).statistic),
                                  "regret_pool": _regret(cands, where), "n": len(cands)}
        run_regrets = [r for run in runs if (r := _regret(run, where)) is not None]
        out["figures"][name] = {
            "per_fold": per_fold,
            "spearman_mean": _mean([v["spearman"] for v in per_fold.values()]),
            "kendall_mean": _mean([v["kendall"] for v in per_fold.values()]),
            "regret_pool_mean": _mean([v["regret_pool"] for v in per_fold.values()]),
            "regret_run_mean": _mean(run_regrets), "n_runs": len(run_regrets),
        }
    return out


def _mean(v: list[float]) -> float | None:
    v = [x for x in v if x is not None and not np.isnan(x)]
    return float(np.mean(v)) if v else None


#: seeds the current rule (``tail_5``) was chosen on; the other seeds are its check
CHOSEN_ON = {"42", "43", "44", "45"}


def main() -> None:
    cells = json.loads((RESULTS / "ablation.json").read_text(encoding="utf-8")).get("cells", {})
    res = measure(cells)
    res["chosen_on_seeds"] = measure({k: v for k, v in cells.items() if k.rsplit("|", 1)[1] in CHOSEN_ON})
    res["other_seeds"] = measure({k: v for k, v in cells.items() if k.rsplit("|", 1)[1] not in CHOSEN_ON})
    atomic_write_json(RESULTS / "selection_rule.json", res)

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}"

    for title, part in (("all seeds", res), (f"seeds {sorted(CHOSEN_ON)} (rule chosen here)", res["chosen_on_seeds"]),
                        ("other seeds (the check)", res["other_seeds"])):
        print(f"\n{title}: {part['n_runs']} runs")
        print(f"{'figure':24s} {'spearman':>9s} {'kendall':>8s} {'regret pool':>12s} {'regret run':>11s}")
        for name, f in part["figures"].items():
            print(f"{name:24s} {fmt(f['spearman_mean']):>9s} {fmt(f['kendall_mean']):>8s} "
                  f"{fmt(f['regret_pool_mean']):>12s} {fmt(f['regret_run_mean']):>11s}")


if __name__ == "__main__":
    main()
