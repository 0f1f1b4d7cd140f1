"""Estimate vs actual: the pre-flight's range per phase and in total against the run's phase times.

For each workspace (``--workspaces small,medium``; ``deeppcb`` with ``--deeppcb PATH``): a fresh
``deftpipe init``, ``deftpipe preflight WS --json`` (its estimate section) and ``deftpipe run WS
--yes``, as ``../shared/acceptance/10-cost`` does, in subprocesses with this environment (so
``DEFTPIPE_NUM_THREADS`` applies when set). Each finished workspace is stored at once in the
results JSON under its key (``--tag`` is appended; a killed run resumes with the others).

Usage: nice -n 10 python bench/bench_estimate.py [--workspaces small,medium] [--deeppcb /work/shared/deeppcb]
       [--tag quiet] [--out bench/results/estimate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "estimate.json"
CLI = [sys.executable, "-m", "deftpipe"]


def _store(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)


def _gemm() -> float:
    """This box's fp32 GEMM GFLOP/s now (bench_model's probe): how fast the box was around a run, so runs
    on the same box at different hours can be compared."""
    from bench_model import gemm_gflops  # bench/ is this script's folder (sys.path[0])

    return round(max(gemm_gflops(reps=30), gemm_gflops(reps=30)), 1)


def measure(name: str, ws: Path, deeppcb: Path | None) -> dict:
    init = ["init", "--from-deeppcb", str(deeppcb), str(ws)] if name == "deeppcb" else [
        "init", "--synthetic", str(ws), "--seed", "5", "--size", name]
    subprocess.run(CLI + init, check=True, stdout=subprocess.DEVNULL)
    gemm0 = _gemm()
    load0 = os.getloadavg()[0]
    pf = subprocess.run(CLI + ["preflight", str(ws), "--json"], check=True, capture_output=True, text=True)
    sections = json.loads(pf.stdout)["sections"]
    est = next(s for s in sections if s["name"] == "estimate")
    subprocess.run(CLI + ["run", str(ws), "--yes"], check=True, stdout=subprocess.DEVNULL)
    state = json.loads(next((ws / "results").glob("run_*/pipeline_state.json")).read_text())
    phases = {k: v.get("duration_sec") for k, v in state["phases"].items()}
    sec = est["seconds"]
    actual = sum(v or 0.0 for v in phases.values())
    rows = {p: {"low": sec[f"{p}_low"], "high": sec[f"{p}_high"], "actual": phases.get(p),
                "inside": phases.get(p) is not None and sec[f"{p}_low"] <= phases[p] <= sec[f"{p}_high"]}
            for p in ("phase1", "phase2", "phase3")}
    loop = json.loads(next((ws / "results").glob("run_*/deft_state.json")).read_text())
    return {"workspace": name, "gemm_fp32_gflops_start_end": [gemm0, _gemm()], "threads_env": os.environ.get("DEFTPIPE_NUM_THREADS"), "load_avg_1m_start": round(load0, 2),
            "load_avg_1m_end": round(os.getloadavg()[0], 2), "dry_run_seconds": est["rates"].get("seconds"),
            "rates": est["rates"], "seconds": sec, "phases": phases, "per_phase": rows,
            "total": {"low": sec["total_low"], "high": sec["total_high"], "actual": round(actual, 1),
                      "inside": sec["total_low"] <= actual <= sec["total_high"]},
            "loop_iterations_run": sum(1 for k in loop["iterations"] if k.startswith("iter")),
            # where the loop's time went: each stage's seconds summed over the iterations
            "loop_stage_seconds": {st: round(sum(it.get(f"seconds_{st}") or 0.0 for it in loop["iterations"].values()
                                                 if isinstance(it, dict)), 1)
                                   for st in ("routing", "sdg", "mining", "data_merge", "train", "inference",
                                              "evaluate", "rca")},
            "loop_reason": loop.get("reason"),
            "peak_rss_mib": {k: v.get("peak_rss_mib") for k, v in state["phases"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspaces", default="small,medium")
    ap.add_argument("--deeppcb", type=Path)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    names = args.workspaces.split(",") + (["deeppcb"] if args.deeppcb else [])
    for name in names:
        key = name + (f"_{args.tag}" if args.tag else "")
        if key in results:
            continue
        tmp = Path(tempfile.mkdtemp(prefix="bench_estimate_"))
        try:
            results[key] = measure(name, tmp / "ws", args.deeppcb)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(key, json.dumps(results[key]["total"]), flush=True)
        _store(args.out, results)


if __name__ == "__main__":
    main()
