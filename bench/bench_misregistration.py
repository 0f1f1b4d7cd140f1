"""How far apart are the template and test images of each DeepPCB board group, locally?

For every pair, the integer shift of the test image against its template is estimated by an exhaustive
search (deftpipe.data._register.local_shift, +-12 px) on windows of ``--window`` px (default 128:
twice the 64 px crop) on a regular grid, keeping
only windows that hold copper edges (a flat window has no shift to measure) and touch no defect box
(a defect is a change, not a shift). Reported per board group: the Chebyshev shift distribution of
the windows (median, 90th/95th/99th percentile, max), the share of windows shifted by >= 2 and >= 4 px,
and how much the local shift varies inside one image (max - min over an image's windows), which is
what a whole-image re-registration cannot undo.

Usage: python bench/bench_misregistration.py [--src ../shared/deeppcb] [--window 128]
Writes bench/results/misregistration.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deftpipe._fs import atomic_write_text
from deftpipe.data._deeppcb import _decode, _overlaps
from deftpipe.data._deeppcb_scan import discover_pairs, parse_annotation
from deftpipe.data._register import local_shift

RESULTS = Path(__file__).parent / "results" / "misregistration.json"


def pair_shifts(golden: np.ndarray, test: np.ndarray, boxes, window: int) -> list[tuple[int, int]]:
    out = []
    h, w = golden.shape
    for y in range(0, h - window + 1, window):
        for x in range(0, w - window + 1, window):
            if any(_overlaps(x, y, window, b, 2) for b in boxes):
                continue
            g = golden[y:y + window, x:x + window].astype(np.float32)
            dark = g < 128
            edges = (dark[1:] != dark[:-1]).mean() + (dark[:, 1:] != dark[:, :-1]).mean()
            if edges < 0.02:
                continue
            dy, dx, _, _ = local_shift(golden[y:y + window, x:x + window], test[y:y + window, x:x + window])
            out.append((dy, dx))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[2] / "shared" / "deeppcb"))
    ap.add_argument("--window", type=int, default=128)
    args = ap.parse_args()
    if not Path(args.src).is_dir():
        args.src = "/work/shared/deeppcb"
    groups = discover_pairs(args.src)
    result = {"window": args.window, "groups": {}}
    for g, pairs in groups.items():
        cheb, spread = [], []
        for p in pairs:
            golden, test = _decode(p.template), _decode(p.test)
            boxes = parse_annotation(p.annotation, golden.shape[1], golden.shape[0])
            s = pair_shifts(golden, test, boxes, args.window)
            if not s:
                continue
            c = [max(abs(dy), abs(dx)) for dy, dx in s]
            cheb += c
            dys, dxs = zip(*s, strict=True)
            spread.append(max(max(dys) - min(dys), max(dxs) - min(dxs)))
        a, sp = np.array(cheb), np.array(spread)
        result["groups"][g] = {
            "pairs": len(pairs), "windows": len(a),
            "median_px": float(np.median(a)), "p90_px": float(np.percentile(a, 90)),
            "p95_px": float(np.percentile(a, 95)), "p99_px": float(np.percentile(a, 99)),
            "max_px": int(a.max()), "share_ge2": round(float((a >= 2).mean()), 4),
            "share_ge4": round(float((a >= 4).mean()), 4),
            "within_image_spread_median_px": float(np.median(sp)),
            "within_image_spread_p90_px": float(np.percentile(sp, 90)),
        }
        print(g, result["groups"][g], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
