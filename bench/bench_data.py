"""Data-layer timings: synthetic generation, DeepPCB import, leakage check, cached vs uncached reads.

Usage: python bench/bench_data.py [--deeppcb ../shared/deeppcb] [--out bench/results/data.json]

An "epoch-worth of image reads" = every (golden, test) pair of a training CSV through
``deftpipe.data.load_pairs``: uncached (decode every PNG), cold cache (decode + write .npy),
warm on-disk cache (fresh process memo: .npy reads only) and warm in-process memo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from deftpipe.data import (
    SPLIT_FILES,
    clear_memo,
    find_leaks,
    import_deeppcb,
    load_pairs,
    make_synthetic_workspace,
    read_dataset,
    resolve_layout,
    validate_dataset,
)

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t, 3)


def epoch_reads(ws: Path, size: int) -> dict:
    csv = ws / SPLIT_FILES["train"]
    df, layout = read_dataset(csv), resolve_layout(csv)
    os.environ["DEFTPIPE_CACHE_DIR"] = str(ws / ".bench_cache")
    clear_memo()
    _, uncached = timed(load_pairs, df, layout, size, use_cache=False)
    _, cold = timed(load_pairs, df, layout, size)
    clear_memo()
    _, warm_disk = timed(load_pairs, df, layout, size)
    _, warm_memo = timed(load_pairs, df, layout, size)
    clear_memo()
    return {"pairs": len(df), "image_size": size, "uncached_s": uncached, "cold_cache_s": cold,
            "warm_disk_cache_s": warm_disk, "warm_memo_s": warm_memo,
            "speedup_disk_cache": round(uncached / warm_disk, 2) if warm_disk else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--deeppcb", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "data.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    res: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version(),
                             "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}}
    try:
        for size in ("tiny", "small"):
            ws, t = timed(make_synthetic_workspace, tmp / f"syn_{size}", seed=0, size=size)
            res[f"synthetic_{size}"] = {"generate_s": t}
        ws = tmp / "syn_small"
        _, t = timed(find_leaks, [ws / rel for rel in SPLIT_FILES.values()])
        res["synthetic_small"]["leakage_4_splits_s"] = t
        res["synthetic_small"]["epoch_reads"] = epoch_reads(ws, 64)
        if (args.deeppcb / "PCBData").is_dir():
            dp, t = timed(import_deeppcb, args.deeppcb, tmp / "dp", log=print)
            rows = {s: len(read_dataset(dp / rel)) for s, rel in SPLIT_FILES.items()}
            report, t_leak = timed(find_leaks, [dp / rel for rel in SPLIT_FILES.values()])
            _, t_val = timed(validate_dataset, dp / SPLIT_FILES["train"])
            res["deeppcb"] = {"import_s": t, "rows": rows, "leakage_4_splits_s": t_leak,
                              "overlapping_rows": report.n_overlapping, "validate_train_s": t_val,
                              "epoch_reads": epoch_reads(dp, 64)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
