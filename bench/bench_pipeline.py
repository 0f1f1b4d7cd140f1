"""Benchmark of the three-phase pipeline: the demo's wall/CPU time and trajectory (+ DeepPCB if asked).

    python bench/bench_pipeline.py                 # demo on a fresh synthetic 'small' workspace
    python bench/bench_pipeline.py --deeppcb ../shared/deeppcb   # also a DeepPCB workspace run
    python bench/bench_pipeline.py --skip-demo --deeppcb ../shared/deeppcb --deeppcb-overrides \
        '{"deft.max_iterations": 3, "deft.num_epochs": 4}'             # larger budgets, own key

Writes bench/results/pipeline.json. Not run in CI. CPU time is reported beside wall time because a
shared machine's load inflates wall time; both are in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from deftpipe.pipeline import run_demo, run_pipeline

OUT = Path(__file__).resolve().parent / "results" / "pipeline.json"


def _cpu_seconds() -> float:
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


def _load() -> float:
    return os.getloadavg()[0]


def _measure(fn, *args, **kwargs) -> dict[str, Any]:
    load0, t0, c0 = _load(), time.perf_counter(), _cpu_seconds()
    result = fn(*args, **kwargs)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    record = json.loads((Path(result["results_dir"]) / "pipeline_state.json").read_text())
    return {
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_avg_1m_start": round(load0, 2),
        "load_avg_1m_end": round(_load(), 2), "status": result["status"],
        "phase_seconds": {k: v.get("duration_sec") for k, v in record["phases"].items()},
        "trajectory": [{k: p.get(k) for k in ("step", "set", "metric", "value", "ci", "auroc", "train_rows")}
                       for p in result["trajectory"]],
        "improvement": result["improvement"],
        "code": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip() or None,
    }


def bench_demo(keep: Path | None) -> dict[str, Any]:
    root = keep or Path(tempfile.mkdtemp(prefix="deftpipe_bench_demo_"))
    try:
        res = _measure(run_demo, root / "demo", console=Console(stderr=True), show_progress=False)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return res


SUBSET = {"train_csv": 2000, "val_csv": 600, "kpi_csv": 2000, "pool_csv": 1500}


def subset_workspace(full: Path, dest: Path, rows: dict[str, int], seed: int = 0) -> Path:
    """A workspace with stratified row subsets of ``full``'s CSVs and a copy of just their images.

    (A symlinked images folder would put the dataset root in ``full``, and the loop's SDG images
    under the subset's results/ would then escape it: the merge's validation rejects that.)"""
    import pandas as pd

    from deftpipe.config import dump_config, load_config
    from deftpipe.data import is_defect, read_dataset, write_dataset

    cfg = load_config(full)
    dest.mkdir(parents=True)
    shutil.copytree(full / "specs", dest / "specs")
    from deftpipe.data import ImageLayout
    from deftpipe.spec import load_spec

    layout = ImageLayout.from_spec(load_spec(cfg.path(full, cfg.data.spec)))
    for key, n in rows.items():
        df = read_dataset(cfg.path(full, getattr(cfg.data, key)))
        if len(df) > n:
            d = is_defect(df["label"])
            k = max(1, round(n * d.mean()))
            df = pd.concat([df[d].sample(min(k, int(d.sum())), random_state=seed),
                            df[~d].sample(n - min(k, int(d.sum())), random_state=seed)])
        write_dataset(df, cfg.path(dest, getattr(cfg.data, key)))
        for _, row in df.iterrows():
            for src in [*layout.row_files(row)[0], *layout.row_files(row)[1]]:
                target = dest / "images" / src.relative_to(layout.images_dir)
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, target)
    dump_config(cfg, dest)
    return dest


def bench_deeppcb(src: Path, overrides: dict[str, Any], ws: Path | None = None) -> dict[str, Any]:
    """The pipeline on a row subset of the DeepPCB workspace (the full one needs hours on 2 cores)."""
    from deftpipe.data import import_deeppcb
    from deftpipe.pipeline._demo import apply_overrides

    root = Path(tempfile.mkdtemp(prefix="deftpipe_bench_deeppcb_"))
    try:
        t0 = time.perf_counter()
        full = ws or import_deeppcb(src, root / "full")
        t_import = time.perf_counter() - t0
        sub = subset_workspace(full, root / "subset", SUBSET)
        apply_overrides(sub, overrides)
        res = _measure(run_pipeline, sub, yes=True, console=Console(stderr=True), show_progress=False)
        res.update(import_s=round(t_import, 1) if ws is None else None, subset_rows=SUBSET, overrides=overrides)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deeppcb", type=Path, default=None, help="DeepPCB checkout for a real-data run")
    ap.add_argument("--deeppcb-ws", type=Path, default=None, help="an already imported DeepPCB workspace")
    ap.add_argument("--keep", type=Path, default=None, help="keep the demo workspace in this folder")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--deeppcb-overrides", type=json.loads, default=None,
                    help='pipeline.yaml overrides of the DeepPCB run as JSON, e.g. \'{"deft.num_epochs": 4}\' '
                         "(default: 1-epoch budgets, 1 loop iteration)")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    results["host"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    if not args.skip_demo:
        results["demo"] = bench_demo(args.keep)
        print(json.dumps(results["demo"], indent=2))
    if args.deeppcb:
        overrides = {"automl.phase1.max_recommendations": 2, "automl.phase1.num_epochs": 1,
                     "automl.phase3.max_recommendations": 2, "automl.phase3.num_epochs": 1,
                     "deft.max_iterations": 1, "deft.num_epochs": 1} | (args.deeppcb_overrides or {})
        key = "deeppcb" if not args.deeppcb_overrides else "deeppcb " + json.dumps(args.deeppcb_overrides)
        results[key] = bench_deeppcb(args.deeppcb, overrides, args.deeppcb_ws)
        print(json.dumps(results[key], indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(OUT.read_text()) if OUT.is_file() else {}  # keep the other run's entry
    merged.update(results)
    OUT.write_text(json.dumps(merged, indent=2) + "\n")


if __name__ == "__main__":
    main()
