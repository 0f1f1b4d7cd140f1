"""DEFT loop benchmark: synthetic workspace with under-represented classes (short, pin-hole).

Runs baseline + N iterations and writes bench/results/deft.json: the KPI trajectory
(FAR @ 100 % recall on the KPI set), the relative reduction baseline → best iteration, the SDG /
mining rows per iteration, the wall time of every stage and the share of the loop's wall time
spent outside training.

    python bench/bench_deft.py [--size small] [--iterations 3] [--seed 0] [--epochs 2]
    python bench/bench_deft.py --ws DEEPPCB_WS --pretrained BEST.pth --iterations 2 --epochs 2

``--ws`` runs on an existing workspace (e.g. ``deftpipe init --from-deeppcb``) instead of a fresh
synthetic one; ``--pretrained`` pre-seeds the baseline with a checkpoint (as Phase 1 does) instead
of training one. Results are merged into deft.json under one key per workspace and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from deftpipe.config import load_config
from deftpipe.data import make_synthetic_workspace
from deftpipe.deft import run_loop

OUT = Path(__file__).parent / "results" / "deft.json"


def control_arm(ws: Path, cfg, state: dict, iterations: int, out: Path) -> dict:
    """The loop without its data: the same schedule (pre-seeded with the same baseline checkpoint,
    ``iterations`` retrains of the same epochs, warm start from the best so far at the same
    learning-rate scale, best iteration by KPI ``far_pct``) but no pool and no synthetic pairs, so
    every retrain sees the base training set only. What the loop gains over this arm is the data's."""
    from deftpipe.deft import preseed_baseline

    cfg = cfg.model_copy(deep=True)
    cfg.data.pool_csv = "no_pool_for_the_control_arm.csv"  # a missing pool = nothing to mine
    cfg.deft.sdg.count_per_target = cfg.deft.sdg.hard_pass_per_target = 0
    preseed_baseline(out, workspace=ws, config=cfg, spec_path=state["config"]["spec"],
                     checkpoint=state["iterations"]["baseline"]["best_ckpt_path"], train_metric=None,
                     source="the loop's baseline (control arm)")
    t0 = time.monotonic()
    ctl = run_loop(ws, results_dir=out, config=cfg, max_iterations=iterations, show_progress=False)
    its = ctl["iterations"]
    far = {lb: its[lb].get("far_pct") for lb in its if lb.startswith("iter")}
    added = sum((its[lb].get("n_added_sdg") or 0) + (its[lb].get("n_added_mined") or 0) for lb in far)
    assert added == 0, f"the control arm added {added} rows"
    best = min((lb for lb in far if far[lb] is not None), key=lambda lb: far[lb])
    return {"design": "same loop schedule, no added data", "far_pct": far, "best_iteration": best,
            "best_far_pct": far[best], "far_ci": [its[best].get("far_ci_low"), its[best].get("far_ci_high")],
            "seconds": round(time.monotonic() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each iteration's retrain")
    ap.add_argument("--baseline-epochs", type=int, default=None)
    ap.add_argument("--no-control", action="store_true", help="skip the control arm (the same loop with no added data)")
    ap.add_argument("--ws", type=Path, help="existing workspace (default: a fresh synthetic one)")
    ap.add_argument("--pretrained", type=Path, help="pre-seed the baseline with this checkpoint")
    ap.add_argument("--kpi-target", type=float, help="override kpi.target (e.g. 0 to run every iteration)")
    ap.add_argument("--lr-scale", type=float, default=None, help="deft.warm_start_lr_scale for the retrains")
    ap.add_argument("--sdg-count", type=int, help="deft.sdg.count_per_target (hard PASS: half of it)")
    ap.add_argument("--top-k", type=int, help="deft.mining.top_k_per_target")
    ap.add_argument("--tag", default="", help="suffix of the result key")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.ws:
            ws, label = args.ws.resolve(), f"{args.ws.name}/seed{args.seed}"
            results_dir = ws / "results" / f"run_bench_{time.strftime('%Y%m%d_%H%M%S')}"  # SDG images must be inside
        else:
            ws = make_synthetic_workspace(Path(tmp) / "ws", seed=args.seed, size=args.size)
            label, results_dir = f"synthetic-{args.size}/seed{args.seed}", ws / "results" / "run_bench"
        cfg = load_config(ws)
        cfg.deft.num_epochs = args.epochs
        cfg.deft.baseline_epochs = args.baseline_epochs
        cfg.deft.regression_gate_pct = None  # measure the whole trajectory
        if args.kpi_target is not None:
            cfg.kpi.target = args.kpi_target
        if args.lr_scale is not None:
            cfg.deft.warm_start_lr_scale = args.lr_scale
        if args.sdg_count is not None:
            cfg.deft.sdg.count_per_target, cfg.deft.sdg.hard_pass_per_target = args.sdg_count, args.sdg_count // 2
        if args.top_k is not None:
            cfg.deft.mining.top_k_per_target = args.top_k
        label += args.tag
        if args.pretrained:
            from deftpipe.deft import preseed_baseline

            preseed_baseline(results_dir, workspace=ws, config=cfg, spec_path=cfg.path(ws, cfg.data.spec),
                             checkpoint=args.pretrained, train_metric=None, source="bench --pretrained")
        t0 = time.monotonic()
        state = run_loop(ws, results_dir=results_dir, config=cfg, max_iterations=args.iterations,
                         show_progress=True)
        wall = time.monotonic() - t0
        train_s = sum(e["duration_sec"] for e in state["events"] if e["stage"] == "train")  # pre-seeded: 0
        control = None if args.no_control else control_arm(ws, cfg, state, args.iterations,
                                                           results_dir.parent / (results_dir.name + "_control"))
    its = state["iterations"]
    loop = [lb for lb in its if lb == "baseline" or lb.startswith("iter")]
    far = {lb: its[lb].get("far_pct") for lb in loop}
    best = min((lb for lb in loop if far[lb] is not None), key=lambda lb: far[lb])
    stage_sec: dict[str, dict[str, float]] = defaultdict(dict)
    for e in state["events"]:
        if e["iter"] in its and e["stage"] != "loop_stop":
            stage_sec[e["iter"]][e["stage"]] = e["duration_sec"]
    total = sum(sum(v.values()) for v in stage_sec.values())
    train = sum(v.get("train", 0.0) for v in stage_sec.values())
    outside = wall - train_s  # everything but training: stages, state commits, report rendering
    iters = [v for lb, v in stage_sec.items() if lb != "baseline"]
    it_total, it_train = sum(sum(v.values()) for v in iters), sum(v.get("train", 0.0) for v in iters)
    base = far["baseline"]
    result = {
        "workspace": str(args.ws) if args.ws else f"synthetic {args.size}, seed {args.seed} "
                                                   "(short and pin-hole rare in training)",
        "baseline": f"pre-seeded from {args.pretrained}" if args.pretrained else "trained by the loop",
        "iterations": args.iterations, "epochs_per_iteration": args.epochs,
        "warm_start_lr_scale": cfg.deft.warm_start_lr_scale, "sdg": cfg.deft.sdg.model_dump(),
        "mining": cfg.deft.mining.model_dump(),
        "far_pct": far, "best_iteration": best,
        "relative_far_reduction_pct": round(100 * (base - far[best]) / base, 1) if base else None,
        "far_ci": {lb: [its[lb].get("far_ci_low"), its[lb].get("far_ci_high")] for lb in loop},
        "auroc": {lb: its[lb].get("auroc") for lb in loop},
        "sdg_rows": {lb: its[lb].get("n_added_sdg") for lb in loop if lb != "baseline"},
        "mined_rows": {lb: its[lb].get("n_added_mined") for lb in loop if lb != "baseline"},
        "train_rows": {lb: its[lb].get("n_train_rows") for lb in loop if lb != "baseline"},
        "stage_seconds": stage_sec, "loop_wall_seconds": round(wall, 1),
        "non_training_share_pct": round(100 * (total - train) / total, 1) if total else None,
        "non_training_share_of_wall_pct": round(100 * outside / wall, 1) if wall else None,
        "non_training_share_iterations_pct": round(100 * (it_total - it_train) / it_total, 1) if it_total else None,
        "control_no_new_data": control,
        "status": state["status"], "reason": state["reason"],
        "code": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip() or None,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f} at end",
    }
    merged = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if "far_pct" in merged:  # the old single-run layout
        merged = {}
    merged[label] = result
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("far_pct", "relative_far_reduction_pct", "non_training_share_pct",
                                             "non_training_share_of_wall_pct", "non_training_share_iterations_pct",
                                             "control_no_new_data",
                                             "sdg_rows", "mined_rows", "loop_wall_seconds")}, indent=2))


if __name__ == "__main__":
    main()
