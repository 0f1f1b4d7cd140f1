"""Scale figures: how the pipeline's costs grow (docs/benchmarks.md).

Cells (each stored in the results JSON as soon as it finishes, so a killed run resumes):

* ``mining``: cosine top-k (k = 5, 100 queries) over 10^4, 10^5 and 10^6 L2-normalised vectors at
  the model's embedding dimension — FAISS exact ``knn`` through :func:`deftpipe.deft._mining.nearest`
  (normalise + exact brute-force search, what the loop runs), the search alone on a built index, and
  NumPy (one matmul + ``argpartition``). Median of 3; the 1-minute load average is stored per cell.
* ``iteration``: one loop iteration's wall time (the sum of its stages' seconds) at 1×, 2× and 4×
  the synthetic training set (800, 1,600, 3,200 rows), with every stage's seconds — SDG pairs per
  second among them (``stages_s.sdg`` for the iteration's SDG rows).

Usage (run it niced on a shared box):
    nice -n 10 python bench/bench_scale.py [--cells mining,iteration] [--out bench/results/scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "scale.json"
SIZES = (10_000, 100_000, 1_000_000)
K, QUERIES, REPEATS = 5, 100, 3


def _load(out: Path) -> dict[str, Any]:
    return json.loads(out.read_text()) if out.is_file() else {}


def _store(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)


def embed_dim(spec_path: Path | None) -> int:
    """The embedding dimension of the model a spec builds (default: the synthetic workspace's spec)."""
    from deftpipe.model._network import NetConfig, SiameseChangeNet
    from deftpipe.spec import load_spec

    if spec_path is None:
        from deftpipe.data._synthetic import synthetic_spec

        spec = synthetic_spec("small")
    else:
        spec = load_spec(spec_path)
    return int(SiameseChangeNet(NetConfig.from_spec(spec)).embed_dim)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_topk(queries: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ base.T
    idx = np.argpartition(-sims, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, idx, axis=1), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def mining_cell(n: int, d: int) -> dict[str, Any]:
    """Median of REPEATS: the loop's own ``nearest`` (normalise + exact knn), the search
    alone on a built index, and NumPy (matmul + argpartition on normalised vectors)."""
    import faiss

    from deftpipe._cores import fair_threads
    from deftpipe.deft._mining import nearest

    rng = np.random.default_rng(0)
    base, queries = _unit(rng, n, d), _unit(rng, QUERIES, d)
    nearest_s, search_s, numpy_s = [], [], []
    index = faiss.IndexFlatIP(d)
    index.add(base)
    for _ in range(REPEATS):
        t = time.perf_counter()
        _, idx_f = nearest(queries, base, K)
        nearest_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        index.search(queries, K)
        search_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        idx_n = _numpy_topk(queries, base, K)
        numpy_s.append(time.perf_counter() - t)
    agree = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(idx_f, idx_n, strict=True)]))
    return {"vectors": n, "dim": d, "k": K, "queries": QUERIES, "faiss_threads": fair_threads(),
            "faiss_nearest_s": round(statistics.median(nearest_s), 4),
            "faiss_search_s": round(statistics.median(search_s), 4),
            "numpy_s": round(statistics.median(numpy_s), 4), "top_k_agreement": round(agree, 4),
            "base_mib": round(base.nbytes / 2**20, 1), "load_avg_1m": round(os.getloadavg()[0], 2)}


def run_mining(results: dict[str, Any], out: Path, spec: Path | None) -> None:
    cells = results.setdefault("mining", {})
    d = cells.get("dim") or embed_dim(spec)
    cells["dim"] = d
    for n in SIZES:
        if str(n) in cells:
            continue
        cells[str(n)] = mining_cell(n, d)
        print(json.dumps(cells[str(n)]), flush=True)
        _store(out, results)


def run_iteration(results: dict[str, Any], out: Path, spec: Path | None) -> None:
    """One loop iteration's wall time at 1x, 2x and 4x the training set: the synthetic ``medium``
    workspace's training set subsampled to 800, 1,600 and 3,200 rows (1x = the ``small`` size), the
    loop run with its own 1-epoch baseline and ``max_iterations: 1``; the iteration's stage seconds
    come from ``deft_state.json``."""
    import shutil
    import tempfile

    import yaml

    from deftpipe import deft
    from deftpipe.config import load_config
    from deftpipe.data import make_synthetic_workspace, read_dataset, write_dataset

    cells = results.setdefault("iteration", {})
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_iter_"))
    try:
        master = make_synthetic_workspace(tmp / "ws", seed=0, size="medium")
        base = read_dataset(master / "train" / "base" / "training_set.csv")
        # the first loop in a process also pays one-time costs (imports, the first decode of the
        # validation, KPI and pool sets): a discarded 1x warm-up run goes first
        for factor in ("warmup", 1, 2, 4):
            if str(factor) in cells or (factor == "warmup" and all(str(f) in cells for f in (1, 2, 4))):
                continue
            ws = tmp / f"ws{factor}"
            rows = 800 * (1 if factor == "warmup" else factor)
            shutil.copytree(master, ws, symlinks=True)
            write_dataset(base.sample(min(rows, len(base)), random_state=0),
                          ws / "train" / "base" / "training_set.csv")
            raw = yaml.safe_load((ws / "pipeline.yaml").read_text())
            raw["deft"].update(max_iterations=1, baseline_epochs=1)
            raw["kpi"].update(operator="<", target=0.0)  # never met: the iteration always runs
            (ws / "pipeline.yaml").write_text(yaml.safe_dump(raw))
            t0 = time.perf_counter()
            state = deft.run_loop(ws, results_dir=ws / "results" / "run_bench", config=load_config(ws),
                                  show_progress=False)
            it = state["iterations"]["iter1"]
            stages = {k.removeprefix("seconds_"): v for k, v in it.items() if k.startswith("seconds_")}
            if factor == "warmup":
                continue
            cells[str(factor)] = {"train_rows": rows, "rows_after_merge": it.get("n_train_rows"),
                                  "sdg_rows": it.get("sdg_rows"),
                                  "iteration_s": round(sum(stages.values()), 2), "stages_s": stages,
                                  "loop_wall_s": round(time.perf_counter() - t0, 1),
                                  "load_avg_1m": round(os.getloadavg()[0], 2)}
            print(json.dumps(cells[str(factor)]), flush=True)
            _store(out, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


CELLS = {"mining": run_mining, "iteration": run_iteration}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="mining", help=f"comma-separated, of: {', '.join(CELLS)}")
    ap.add_argument("--spec", type=Path, help="spec whose model sets the embedding dimension (default: synthetic)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    results = _load(args.out)
    results["host"] = {"cpus": os.cpu_count(), "machine": platform.machine(), "gpu": None,
                       "load_avg_1m_start": round(os.getloadavg()[0], 2)}
    for name in args.cells.split(","):
        CELLS[name.strip()](results, args.out, args.spec)
    _store(args.out, results)


if __name__ == "__main__":
    main()
