"""AutoML benchmark: sample efficiency of pruning, and the runner's per-trial overhead.

For each algorithm (``random`` at full budget, ``hyperband``, ``asha``) run the same number of
trials with the same seed on the same workspace. All three sample with Optuna's RandomSampler(seed),
so they try the *same* configurations and the comparison isolates what pruning saves:
total trial-epochs spent and the best validation ``far_pct`` found.

Runner overhead = (trial wall time in the objective - adapter training time) / trial wall time, per
trial; and for the whole sweep, (sweep wall - sum of training time) / sweep wall, which also counts
study creation, sampling, storage writes, retention and best_rec.json.

Usage:
    python bench/bench_automl.py --size tiny --epochs 4 --trials 8
    python bench/bench_automl.py --deeppcb ../shared/deeppcb --epochs 3 --trials 6
    python bench/bench_automl.py --ws DEEPPCB_WS --subset 4000 --epochs 3 --trials 10

Writes bench/results/automl.json (merged per workspace label and seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from deftpipe.automl import run_sweep

RESULTS = Path(__file__).parent / "results" / "automl.json"


def _workspace(args: argparse.Namespace, root: Path) -> tuple[str, Path]:
    if args.ws:
        return args.ws.name, args.ws.resolve()
    if args.deeppcb:
        from deftpipe.data import import_deeppcb

        return "deeppcb", import_deeppcb(args.deeppcb, root / "ws", seed=args.seed)
    from deftpipe.data import make_synthetic_workspace

    return f"synthetic-{args.size}", make_synthetic_workspace(root / "ws", seed=args.seed, size=args.size)


def _subset(ws: Path, n: int | None, root: Path) -> Path:
    """The training CSV, or a seeded random ``n``-row subset of it (same class mix) for quick sweeps."""
    from deftpipe.data import read_dataset, write_dataset

    csv = ws / "train" / "base" / "training_set.csv"
    if not n:
        return csv
    df = read_dataset(csv)
    return write_dataset(df.sample(n=min(n, len(df)), random_state=0), root / f"train_subset_{n}.csv")


def _one(ws: Path, train_csv: Path, out: Path, algorithm: str, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    rec = run_sweep(spec=ws / "specs" / "baseline_spec.yaml", train_csv=train_csv,
                    val_csv=ws / "train" / "base" / "validation_set.csv", out_dir=out, metric="far_pct",
                    algorithm=algorithm, max_recommendations=args.trials, num_epochs=args.epochs, seed=args.seed,
                    rerun_margin=1e9, show_progress=False)
    wall = time.perf_counter() - t0
    recs = rec["all_recs"]
    train = sum(r["train_seconds"] or 0.0 for r in recs)
    per_trial = [100.0 * (r["duration"] - r["train_seconds"]) / r["duration"]
                 for r in recs if r.get("duration") and r.get("train_seconds") is not None]
    return {
        "algorithm": algorithm,
        "trials": len(recs),
        "pruned": sum(r["status"] == "pruned" for r in recs),
        "trial_epochs": sum(r["epochs_run"] or 0 for r in recs),
        "best_far_pct": rec["best"]["score"],
        "best_rec_id": rec["best"]["rec_id"],
        "scores": [r["score"] for r in recs],
        "wall_s": round(wall, 2),
        "train_s": round(train, 2),
        "overhead_pct_per_trial_median": round(statistics.median(per_trial), 3) if per_trial else None,
        "overhead_pct_per_trial_max": round(max(per_trial), 3) if per_trial else None,
        "overhead_pct_sweep": round(100.0 * (wall - train) / wall, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny", help="synthetic workspace size (tiny|small|medium)")
    ap.add_argument("--deeppcb", default=None, help="DeepPCB checkout (instead of the synthetic workspace)")
    ap.add_argument("--epochs", type=int, default=4, help="full budget (epochs per trial)")
    ap.add_argument("--trials", type=int, default=8, help="trials per algorithm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--algorithms", default="random,hyperband,asha")
    ap.add_argument("--ws", type=Path, default=None, help="existing workspace (e.g. an imported DeepPCB one)")
    ap.add_argument("--subset", type=int, default=None, help="train each trial on this many random rows")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-automl-") as tmp:
        label, ws = _workspace(args, Path(tmp))
        train_csv = _subset(ws, args.subset, Path(tmp))
        if args.subset:
            label += f"-train{args.subset}"
        runs = [_one(ws, train_csv, Path(tmp) / a, a, args) for a in args.algorithms.split(",")]
    base = next((r for r in runs if r["algorithm"] == "random"), runs[0])
    for r in runs:
        r["trial_epochs_vs_random_pct"] = round(100.0 * r["trial_epochs"] / base["trial_epochs"], 1)
        r["best_far_delta_vs_random"] = round(r["best_far_pct"] - base["best_far_pct"], 3)
        print(f"{label:18s} {r['algorithm']:9s} trial-epochs {r['trial_epochs']:3d} "
              f"({r['trial_epochs_vs_random_pct']:5.1f}% of random) best far_pct {r['best_far_pct']:.2f} "
              f"pruned {r['pruned']}/{r['trials']} overhead/trial median {r['overhead_pct_per_trial_median']}% "
              f"sweep {r['overhead_pct_sweep']}% wall {r['wall_s']}s")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[f"{label}/seed{args.seed}"] = {
        "settings": {"epochs": args.epochs, "trials": args.trials, "seed": args.seed, "metric": "far_pct",
                     "train_rows": args.subset or "all"},
        "pruning_signal": "metric of the kept checkpoint (best epoch so far)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
