"""How long should the user's spec train? Holdout FAR@100%R of the default spec at several epoch budgets.

    python bench/epoch_budget.py --deeppcb ../shared/deeppcb [--epochs 2,8,15] [--seeds 44,45] \
        [--folds v1,v2,v3] [--work /tmp/deftpipe_value]
    python bench/epoch_budget.py --tables

The value ablation (bench_value.py, seeds 42 and 43) found the user's spec trained for the full
pipeline's row-epochs (arm k, 14-16 epochs) far better than the same spec trained for its 2 epochs
(arm a): 1.16 % against 20.16 % mean holdout FAR@100%R, and 2-epoch trainings a lottery. That budget
was read off seeds 42 and 43, so this bench re-measures it on other seeds: the same folds and the same
fold workspaces (bench_value.build_fold), the spec as ``init --from-deeppcb`` writes it with only its
seed and ``train.num_epochs`` set, the adapter's best-epoch rule (validation picks the epoch), the
product's threshold rule on the KPI set and one audit on the holdout (bench_ablation's code).

Each finished cell goes to ``bench/results/epoch_budget.json`` at once (atomically, under a lock), so a
stopped bench resumes at the next cell. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ablation as ab  # noqa: E402  (the bench folder is not a package)
import bench_value as bv  # noqa: E402

OUT = Path(os.environ.get("BENCH_OUT") or Path(__file__).resolve().parent / "results" / "epoch_budget.json")


def run_cell(epochs: int, fold: str, seed: int, src: Path, work: Path, keep: int | None = None) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    with FileLock(str(work / f"{fold}.build.lock")):
        base = bv.build_fold(src, work, fold)
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    ws = bv._arm_workspace(base, work / fold / f"epochs{epochs}{f'_keep{keep}' if keep else ''}_s{seed}", seed, {})
    cfg = bv.load_config(ws)
    if keep:  # every epoch's checkpoint stays, so epoch_choice.py can score the ones a rule did not keep
        spec_path = cfg.path(ws, cfg.data.spec)
        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
        spec["train"]["keep_checkpoints"] = keep
        spec_path.unlink()  # a hard link into the fold's base: write a new file
        ab.atomic_write_text(spec_path, yaml.safe_dump(spec, sort_keys=False))
    cell = bv._spec_cell(ws, tmp, cfg.path(ws, cfg.data.train_csv), epochs, f"epochs{epochs}")
    metrics = json.loads((Path(cell["checkpoint"]).parent / "metrics.json").read_text(encoding="utf-8"))
    cell["best_epoch"] = metrics.get("best_epoch")
    cell["val_far_by_epoch"] = [h.get("far_pct") for h in metrics.get("history", [])]
    cell["workspace"] = str(ws)
    return cell


def summarise(cells: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in sorted({int(c["epochs"]) for c in cells.values()}):
        mine = sorted((c for c in cells.values() if int(c["epochs"]) == e), key=lambda c: (c["fold"], c["seed"]))
        h = [c["holdout"] for c in mine]
        out[str(e)] = {
            "far_pct_mean": float(np.mean([x["far_pct"] for x in h])),
            "far_pct_median": float(np.median([x["far_pct"] for x in h])),
            "recall_at_threshold_min": min(x["recall_at_threshold_pct"] for x in h),
            "far_at_threshold_mean": float(np.mean([x["far_at_threshold_pct"] for x in h])),
            "minutes_mean": float(np.mean([c["minutes"] for c in mine])),
            "cells_done": len(h),
            "cells": [{"fold": c["fold"], "seed": c["seed"], "far_pct": c["holdout"]["far_pct"],
                       "far_ci_low": c["holdout"]["far_ci"][0], "far_ci_high": c["holdout"]["far_ci"][1],
                       "recall_at_threshold_pct": c["holdout"]["recall_at_threshold_pct"],
                       "far_at_threshold_pct": c["holdout"]["far_at_threshold_pct"],
                       "escapes": c["holdout"]["escapes"], "hardest": c["holdout"].get("hardest", [])[:3],
                       "kpi_far_pct": c["kpi"]["far_pct"], "best_epoch": c.get("best_epoch"),
                       "minutes": c["minutes"], "code": c.get("code")} for c in mine],
        }
    return out


def tables(results: dict[str, Any]) -> str:
    """The markdown tables of epoch_budget.json: a row per budget, then a row per (fold, seed)."""
    b = results["budgets"]
    lines = ["| epochs | cells | holdout FAR@100%R mean | median | worst recall @ shipped thr | FAR @ shipped thr mean "
             "| minutes a cell |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {e} | {v['cells_done']} | {v['far_pct_mean']:.2f} | {v['far_pct_median']:.2f} | "
              f"{v['recall_at_threshold_min']:.2f} % | {v['far_at_threshold_mean']:.2f} | {v['minutes_mean']:.1f} |"
              for e, v in sorted(b.items(), key=lambda kv: int(kv[0]))]
    budgets = sorted(b, key=int)
    lines += ["", "| fold | seed | " + " | ".join(f"{e} epochs [95 % CI] (best epoch)" for e in budgets) + " |",
              "|---|---|" + "---|" * len(budgets)]
    by = {(c["fold"], c["seed"], e): c for e in budgets for c in b[e]["cells"]}
    for fold, seed in sorted({(f, s) for f, s, _ in by}):
        cells = [by.get((fold, seed, e)) for e in budgets]
        lines.append(f"| {fold} | {seed} | " + " | ".join(
            f"{c['far_pct']:.2f} [{c['far_ci_low']:.2f}, {c['far_ci_high']:.2f}] ({c['best_epoch']})" if c else "—"
            for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deeppcb", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/deftpipe_value"))
    ap.add_argument("--epochs", default="2,8,15", help="epoch budgets, in the order to run")
    ap.add_argument("--folds", default=",".join(bv.FOLDS))
    ap.add_argument("--seeds", default="44,45", help="not 42 or 43: the budget under test was read off those")
    ap.add_argument("--keep-checkpoints", type=int, help="train.keep_checkpoints (default: the spec's)")
    ap.add_argument("--tables", action="store_true", help="print the markdown tables of epoch_budget.json, then stop")
    args = ap.parse_args()
    if args.tables:
        return print(tables(json.loads(OUT.read_text(encoding="utf-8"))))
    if args.deeppcb is None:
        ap.error("--deeppcb is required to run cells")
    budgets = [int(e) for e in args.epochs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    lock = FileLock(str(OUT) + ".lock")
    for seed in seeds:
        for fold in args.folds.split(","):
            for epochs in budgets:
                key = f"e{epochs}|{fold}|{seed}"
                with lock:
                    results = json.loads(OUT.read_text(encoding="utf-8")) if OUT.is_file() else {}
                if key in results.get("cells", {}):
                    continue
                ab.log(f"cell {key}: start")
                cell = run_cell(epochs, fold, seed, args.deeppcb, args.work, args.keep_checkpoints)
                bv.stamp(cell, epochs=epochs, fold=fold, seed=seed)
                bv.save_scores(cell, f"epochs_{key}", args.work)  # per-row KPI and holdout scores (threshold study)
                bv.store_cell(OUT, lock, key, cell, lambda _: {
                    "context": bv.CONTEXT, "folds": bv.FOLDS, "cpus": os.cpu_count(),
                    "torch_threads": os.environ.get("DEFTPIPE_NUM_THREADS", "all"),
                    "spec": "as init --from-deeppcb writes it; seed and train.num_epochs set"}, ("budgets", summarise))
                h = cell["holdout"]
                ab.log(f"cell {key}: holdout FAR@100%R {bv.holdout_far(h)}"
                       f" (best epoch {cell['best_epoch']} of {epochs}), FAR@thr {h['far_at_threshold_pct']:.2f}, "
                       f"{cell['minutes']:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
