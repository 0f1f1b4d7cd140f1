"""How learnable is the built-in synthetic workspace? (not run in CI)

Generates a synthetic workspace, trains its own ``specs/baseline_spec.yaml`` and evaluates the
best checkpoint on validation and KPI. Also times a float32 GEMM so epoch times measured on a
loaded machine can be scaled to a quiet one (``quiet_gflops`` = the rate measured on the quiet
2-core box). Writes ``bench/results/synthetic_learnability.json``.

    DEFTPIPE_NUM_THREADS=2 python bench/bench_synthetic.py [--sizes small,tiny] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from deftpipe.data import SPLIT_FILES, make_synthetic_workspace, read_dataset
from deftpipe.model import get_adapter
from deftpipe.spec import load_spec

OUT = Path(__file__).parent / "results" / "synthetic_learnability.json"


def gemm_gflops(n: int = 512, reps: int = 20) -> float:
    """float32 GEMM rate with torch's threads (the same kernels training uses)."""
    import torch

    torch.set_num_threads(int(os.environ.get("DEFTPIPE_NUM_THREADS", "2")))
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def per_class_scores(adapter, ckpt: str, csv: Path, tmp: Path) -> dict[str, float]:
    out = adapter.infer(ckpt, csv, tmp / f"scores_{Path(ckpt).parent.name}.csv")
    df = pd.read_csv(out)
    return {k: round(float(v), 3) for k, v in df.groupby("label")["score"].mean().items()}


def run(size: str, seed: int, tmp: Path) -> dict:
    t0 = time.perf_counter()
    ws = make_synthetic_workspace(tmp / f"ws_{size}_{seed}", seed=seed, size=size)
    gen_s = time.perf_counter() - t0
    spec_path = ws / "specs" / "baseline_spec.yaml"
    spec = load_spec(spec_path)
    adapter = get_adapter(spec)
    train_csv, val_csv, kpi_csv = (ws / SPLIT_FILES[k] for k in ("train", "val", "kpi"))
    gflops_before = gemm_gflops()
    t0 = time.perf_counter()
    r = adapter.train(spec_path, train_csv, val_csv, tmp / f"train_{size}_{seed}")
    train_s = time.perf_counter() - t0
    gflops = (gflops_before + gemm_gflops()) / 2
    val = adapter.evaluate(r.best_checkpoint, val_csv)
    kpi = adapter.evaluate(r.best_checkpoint, kpi_csv)
    epochs = spec.train.num_epochs
    return {
        "size": size, "seed": seed, "generate_s": round(gen_s, 1),
        "train_rows": len(read_dataset(train_csv)), "epochs": epochs,
        "model": spec.model.model_dump(include={"width", "depth", "fusion", "input_size"}),
        "train_s_incl_val": round(train_s, 1), "s_per_epoch_here": round(train_s / epochs, 2),
        "gemm_gflops_here": round(gflops, 1),
        "val": {"auroc": round(val["auroc"], 4), "far_pct": round(val["far_pct"], 2)},
        "kpi": {"auroc": round(kpi["auroc"], 4), "far_pct": round(kpi["far_pct"], 2),
                "hardest_defects": kpi.get("hardest_defects")},
        "kpi_mean_score_per_class": per_class_scores(adapter, r.best_checkpoint, kpi_csv, tmp),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="small,tiny")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--quiet-gflops", type=float, default=None,
                    help="GEMM rate of a quiet 2-core box, to extrapolate the epoch time")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        for size, seed in ((z, int(s)) for s in args.seeds.split(",") for z in args.sizes.split(",")):
            res = run(size, seed, Path(d))
            if args.quiet_gflops:
                res["s_per_epoch_quiet_est"] = round(res["s_per_epoch_here"] * res["gemm_gflops_here"]
                                                     / args.quiet_gflops, 2)
            print(json.dumps(res, indent=1, default=str))
            results.append(res)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"runs": results, "note": "2 torch threads; s_per_epoch_here includes the "
                               "validation pass; gemm_gflops_here = float32 512x512 GEMM rate measured "
                               "around the training (compare boxes by it)"}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
