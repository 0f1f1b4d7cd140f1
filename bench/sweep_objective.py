"""Which validation figure ranks a sweep's trials the way the holdout does (issue 28, item 2).

    python bench/sweep_objective.py [--results value.json]   # default ablation.json; writes sweep_objective[_value].json

The candidates are the trials of each pipeline run's sweeps (Phase 1 and Phase 3 separately: the
trials one sweep ranks), scored by ``bench_ablation.py --score-candidates`` on the fold's validation
set, KPI set and holdout. Per sweep and per figure: Spearman rank correlation with the holdout's
FAR@100%R, the regret (holdout FAR@100%R of the trial the figure picks minus the best trial's), and
how often the pick is worse on the holdout than the sweep's first trial (the user's spec in Phase 1,
Phase 1's winner in Phase 3) beyond nothing at all. Lower is better for every figure (AUROC enters as
1 - AUROC). ``ablation.json``: the ablation's size (3,000 training rows, context 1, 2 epochs);
``value.json``: full size at the product's defaults (``bench_value.py --score-candidates``), written
to ``sweep_objective_value.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from deftpipe._fs import atomic_write_json
from deftpipe.selection import TAIL_K

RESULTS = Path(__file__).resolve().parent / "results"
FIGURES = {
    "val far_pct (today's objective)": ("figures", "val", "far_pct"),
    "val boot_mean": ("figures", "val", "boot_mean"),
    f"val tail_{TAIL_K}": ("figures", "val", f"tail_{TAIL_K}"),
    "val far@99.5%R": ("figures", "val", "far_pct_at_995"),
    "val 1-AUROC": ("figures", "val", "auroc"),
    f"kpi+val tail_{TAIL_K}": ("figures", "kpi_val", f"tail_{TAIL_K}"),
    # without flip TTA (the unflipped pass alone; value cells only): does TTA change the sweep's choice?
    "val far_pct, no TTA": ("figures_single_pass", "val", "far_pct"),
    f"val tail_{TAIL_K}, no TTA": ("figures_single_pass", "val", f"tail_{TAIL_K}"),
}


def value(c: dict[str, Any], where: str, name: str, source: str = "figures") -> float | None:
    v = ((c.get(source) or {}).get(where) or {}).get(name)
    if v is None:
        return None
    return 1.0 - v if name == "auroc" else float(v)


def tta_effect(cands: Any) -> dict[str, Any] | None:
    """Per trained model, the holdout FAR@100%R with flip TTA and without it (the unflipped pass alone):
    how often dropping TTA moves it outside the TTA figure's 95 % interval, and by how much on average."""
    rows = [(c["figures"]["holdout"], c["figures_single_pass"]["holdout"]) for c in cands
            if c.get("figures_single_pass") and c["figures"]["holdout"].get("far_ci")]
    if not rows:
        return None
    diff = [s["far_pct"] - t["far_pct"] for t, s in rows]
    return {"models": len(rows), "no_tta_minus_tta_mean": float(np.mean(diff)),
            "no_tta_above_tta_ci": sum(s["far_pct"] > t["far_ci"][1] for t, s in rows),
            "no_tta_below_tta_ci": sum(s["far_pct"] < t["far_ci"][0] for t, s in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="ablation.json", help="a file under bench/results/ with scored candidates")
    args = ap.parse_args()
    full_size = args.results != "ablation.json"
    cells = json.loads((RESULTS / args.results).read_text(encoding="utf-8"))["cells"]
    sweeps = []
    for key, cell in sorted(cells.items()):
        for phase in ("phase1", "phase3"):
            cands = [c for c in cell.get("candidates", []) if c.get("kind") == phase and c.get("figures")]
            if len(cands) >= 2 and all(value(c, "holdout", "far_pct") is not None for c in cands):
                sweeps.append((f"{key}|{phase}", cands))
    size = ("full size, context 2, the product's defaults (value cells)" if full_size
            else "ablation cells: 3,000 training rows, context 1, 2 epochs")
    out: dict[str, Any] = {"n_sweeps": len(sweeps), "size": size, "figures": {}}
    for label, (source, where, name) in FIGURES.items():
        rho, regret, worse_than_first, worse_beyond = [], [], 0, 0
        for _, cands in sweeps:
            v = [value(c, where, name, source) for c in cands]
            if any(x is None for x in v):
                continue
            h = [value(c, "holdout", "far_pct") for c in cands]
            if len(set(v)) > 1 and len(set(h)) > 1:
                rho.append(float(spearmanr(v, h).statistic))
            pick = int(np.argmin(v))  # ties: the earliest
            regret.append(h[pick] - min(h))
            worse_than_first += h[pick] > h[0]
            ci = ((cands[0].get("figures") or {}).get("holdout") or {}).get("far_ci")
            worse_beyond += bool(ci) and h[pick] > ci[1]
        if not regret:
            continue  # a figure this results file does not hold (no TTA-free scores in ablation.json)
        out["figures"][label] = {"spearman_mean": float(np.mean(rho)) if rho else None, "regret_mean": float(np.mean(regret)),
                                 "regret_max": float(np.max(regret)), "pick_worse_than_first_trial": worse_than_first,
                                 "pick_worse_than_first_beyond_its_ci": worse_beyond, "n": len(regret)}
    out["tta_effect"] = tta_effect(c for _, cands in sweeps for c in cands)
    atomic_write_json(RESULTS / ("sweep_objective_value.json" if full_size else "sweep_objective.json"), out)
    print(f"{out['n_sweeps']} sweeps ({out['size']})")
    print("| figure | Spearman vs holdout (mean) | regret mean / max (holdout FAR pts) | pick worse than the first trial |")
    print("|---|---|---|---|")
    for label, f in out["figures"].items():
        print(f"| {label} | {f['spearman_mean']:.3f} | {f['regret_mean']:.2f} / {f['regret_max']:.2f} | "
              f"{f['pick_worse_than_first_trial']} of {f['n']} |")


if __name__ == "__main__":
    main()
