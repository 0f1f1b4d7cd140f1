"""Image cache: one epoch-worth of reads of a training set, decode vs decode-once cache.

Also: a cold load (decode + write the cache entry) on 1, 2 and 4 decode threads — the evidence
for ``_cache.DECODE_THREADS`` — on the synthetic pool and, with ``--deeppcb-ws``, on a DeepPCB
workspace's KPI set.

Usage: python bench/bench_cache.py [--size medium] [--deeppcb-ws WS] [--out bench/results/cache.json]
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


def thread_sweep(csv: Path, images: Path, repeats: int = 2) -> dict:
    """Best-of-``repeats`` cold load (memo and cache entry dropped first) per decode-thread count."""
    df, layout = read_dataset(csv), ImageLayout.create(images, ".png")
    cache = Path(tempfile.mkdtemp(prefix="bench_cache_threads_"))
    os.environ["DEFTPIPE_CACHE_DIR"] = str(cache)
    load_pairs(df, layout, 64, use_cache=False)  # page cache warm: measure decoding, not the disk
    out: dict[str, float | int] = {"pairs": len(df)}
    try:
        for threads in (1, 2, 4):
            times = []
            for _ in range(repeats):
                shutil.rmtree(cache, ignore_errors=True)
                clear_memo()
                times.append(timed(lambda t=threads: load_pairs(df, layout, 64, num_threads=t)))
            out[f"threads_{threads}"] = min(times)
    finally:
        os.environ.pop("DEFTPIPE_CACHE_DIR", None)
        shutil.rmtree(cache, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="medium")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cache.json")
    ap.add_argument("--deeppcb-ws", type=Path, help="also sweep decode threads on this workspace's KPI set")
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
        res["cold_load_s_by_decode_threads"] = {f"synthetic {args.size} pool": thread_sweep(ws / "mining/mining_pool.csv", ws / "images")}
        if args.deeppcb_ws:
            res["cold_load_s_by_decode_threads"][f"{args.deeppcb_ws.name} KPI set"] = thread_sweep(
                args.deeppcb_ws / "kpi/testing_set.csv", args.deeppcb_ws / "images")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
