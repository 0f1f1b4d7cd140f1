"""Two sweep workers on one host vs one: total trial throughput under the cores rule (deftpipe._cores).

Arms, each on a fresh copy of the synthetic ``small`` workspace, each finishing the same number of
trials (``--trials``, 1-epoch trials of the workspace's spec):

* ``one``: one ``deftpipe automl run`` process runs all the trials;
* ``two_fair``: two processes run half each at the same time, threads by the rule (cores ÷ live
  deftpipe workers: 1 each on 2 cores);
* ``two_all_cores``: the same two processes, each forced to every core (``DEFTPIPE_NUM_THREADS`` =
  cores) — the behaviour before the rule.

Throughput = trials ÷ wall seconds of the arm. Arms run in rounds (one, two_fair, two_all_cores,
repeated ``--rounds`` times) so a change in the host's load hits all arms alike; each finished arm is
stored in the results JSON at once (a killed run resumes).

Usage: nice -n 10 python bench/bench_cores.py [--trials 4] [--rounds 2] [--out bench/results/cores.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "cores.json"


def _store(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)


def _sweep_cmd(ws: Path, out_dir: Path, trials: int, seed: int) -> list[str]:
    return [sys.executable, "-m", "deftpipe", "automl", "run", "--spec", str(ws / "specs" / "baseline_spec.yaml"),
            "--train", str(ws / "train" / "base" / "training_set.csv"),
            "--val", str(ws / "train" / "base" / "validation_set.csv"), "--out", str(out_dir),
            "--search-space", str(ws / "specs" / "search_space.yaml"), "--algorithm", "random",
            "--max-recommendations", str(trials), "--epochs", "1", "--rerun-margin", "1000", "--seed", str(seed),
            "--quiet"]


def run_arm(arm: str, ws: Path, trials: int, tmp: Path) -> dict:
    env = dict(os.environ)
    env.pop("DEFTPIPE_NUM_THREADS", None)
    env["DEFTPIPE_RUNTIME_DIR"] = str(tmp / "registry")  # only this arm's processes count
    if arm == "two_all_cores":
        env["DEFTPIPE_NUM_THREADS"] = str(os.cpu_count() or 1)
    procs = 1 if arm == "one" else 2
    share = [trials] if procs == 1 else [trials // 2, trials - trials // 2]
    t0 = time.perf_counter()
    running = [subprocess.Popen(_sweep_cmd(ws, tmp / f"{arm}_{i}", n, seed=i), env=env, stdout=subprocess.DEVNULL)
               for i, n in enumerate(share)]
    codes = [p.wait() for p in running]
    wall = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"{arm}: a sweep failed ({codes})")
    return {"arm": arm, "processes": procs, "trials": trials, "wall_s": round(wall, 2),
            "trials_per_min": round(60 * trials / wall, 2), "load_avg_1m_end": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    from deftpipe.data import make_synthetic_workspace

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.setdefault("runs", [])
    results["host"] = {"cpus": os.cpu_count(), "gpu": None}
    tmp = Path(tempfile.mkdtemp(prefix="bench_cores_"))
    try:
        ws = make_synthetic_workspace(tmp / "ws", seed=0, size="small")
        subprocess.run(_sweep_cmd(ws, tmp / "warm", 1, seed=99), check=True, stdout=subprocess.DEVNULL)  # cache
        for r in range(args.rounds):
            for arm in ("one", "two_fair", "two_all_cores"):
                if any(x["arm"] == arm and x["round"] == r for x in results["runs"]):
                    continue
                res = run_arm(arm, ws, args.trials, tmp / f"r{r}") | {"round": r}
                print(json.dumps(res), flush=True)
                results["runs"].append(res)
                _store(args.out, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    by_arm: dict[str, list[float]] = {}
    for x in results["runs"]:
        by_arm.setdefault(x["arm"], []).append(x["trials_per_min"])
    results["median_trials_per_min"] = {a: sorted(v)[len(v) // 2] for a, v in by_arm.items()}
    _store(args.out, results)


if __name__ == "__main__":
    main()
