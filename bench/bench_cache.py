"""Image cache: one epoch-worth of reads of a training set, decode vs decode-once cache.

Usage: python bench/bench_cache.py [--size medium] [--out bench/results/cache.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from deftpipe.data import ImageLayout, clear_memo, load_pairs, make_synthetic_workspace, read_dataset

ROOT = Path(__file__).resolve().parents[1]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return round(time.perf_counter() - t, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="medium")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cache.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        ws = make_synthetic_workspace(tmp / "ws", seed=0, size=args.size)
        df = read_dataset(ws / "train/base/training_set.csv")
        layout = ImageLayout.create(ws / "images", ".png")
        size = 64
        clear_memo()
        uncached = timed(lambda: load_pairs(df, layout, size, use_cache=False))
        clear_memo()
        cold = timed(lambda: load_pairs(df, layout, size))
        clear_memo()  # a new process: only the on-disk array is left
        warm = timed(lambda: load_pairs(df, layout, size))
        res = {"workspace": f"synthetic {args.size}, train split", "pairs": len(df), "image_px": size,
               "uncached_decode_s": uncached, "cold_cache_fill_s": cold, "warm_cache_s": warm,
               "speedup_warm_vs_decode": round(uncached / warm, 2), "load_avg_1m": round(os.getloadavg()[0], 2)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
