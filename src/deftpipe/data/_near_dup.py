"""Near-duplicate rows across datasets: the same board picture with a few pixels changed, re-saved
or re-encoded — which an identity key or a byte hash never finds (issue 25: a KPI image with one
pixel changed passed as a holdout board "no split has touched").

Each row gets a fingerprint from its decoded pixels (the first light of golden and test, 8x8 box
means each, the way training reads them: ``_open`` + ``_pixels``). Rows of two datasets whose
fingerprints are within :data:`RADIUS` are candidates; a candidate is a near-duplicate when the
decoded images have the same size and at most :data:`MAX_CHANGED` of their pixels differ by more
than :data:`TOLERANCE` gray levels (golden and test alike). Flat images (gray spread below
:data:`MIN_STD` in both golden and test: bare board regions) are not compared — every such crop
looks like every other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from deftpipe.data._csv import ImageLayout
from deftpipe.data._file_memo import map_files
from deftpipe.data._open import open_image
from deftpipe.data._pixels import gray8
from deftpipe.errors import DeftpipeError

SIDE = 8  # fingerprint: SIDE x SIDE box means of golden and of test
RADIUS = 4.0  # mean gray-level distance per fingerprint cell under which two rows are compared pixel by pixel
TOLERANCE = 8  # gray levels: a pixel "differs" above this
MAX_CHANGED = 0.02  # at most this share of pixels may differ for a near-duplicate
MIN_STD = 4.0
_KIND = "near-dup-v1"


def _decode(path: str) -> np.ndarray | None:
    try:
        with open_image(path) as im:
            return gray8(im, path)
    except (OSError, DeftpipeError, ValueError, SyntaxError):
        return None


def _print(path: str) -> tuple[np.ndarray, float] | None:
    arr = _decode(path)
    if arr is None:
        return None
    small = np.asarray(Image.fromarray(arr).resize((SIDE, SIDE), Image.BOX), dtype=np.float32).ravel()
    return small, float(arr.std())


def fingerprints(df: pd.DataFrame, layout: ImageLayout) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(fingerprints (n, 2*SIDE^2) float32, usable row mask, (golden, test) first-light file per row)."""
    files = []
    for t, g, n in zip(df["input_path"].tolist(), df["golden_path"].tolist(), df["object_name"].tolist(), strict=True):
        gs, ts = layout.inside_file_strs(g, n), layout.inside_file_strs(t, n)
        files.append((gs[0] if gs else "", ts[0] if ts else ""))
    prints = map_files(_KIND, (f for pair in files for f in pair if f), _print, keep=lambda v: v is not None,
                       missing=None, workers=1)
    out = np.zeros((len(files), 2 * SIDE * SIDE), dtype=np.float32)
    ok = np.zeros(len(files), dtype=bool)
    for i, (g, t) in enumerate(files):
        pg, pt = prints.get(g), prints.get(t)
        if pg is None or pt is None or (pg[1] < MIN_STD and pt[1] < MIN_STD):
            continue
        out[i] = np.concatenate([pg[0], pt[0]])
        ok[i] = True
    return out, ok, files


def _same_picture(a: str, b: str) -> bool:
    x, y = _decode(a), _decode(b)
    if x is None or y is None or x.shape != y.shape:
        return False
    changed = np.abs(x.astype(np.int16) - y.astype(np.int16)) > TOLERANCE
    return float(changed.mean()) <= MAX_CHANGED


def near_pairs(a: tuple[np.ndarray, np.ndarray, list[tuple[str, str]]],
               b: tuple[np.ndarray, np.ndarray, list[tuple[str, str]]], *, skip: set[int] = frozenset(),
               chunk: int = 256) -> list[tuple[int, int]]:
    """(row of a, row of b) near-duplicates; rows of b in ``skip`` (already exact overlaps) are left out."""
    fa, oka, files_a = a
    fb, okb, files_b = b
    ia, ib = np.flatnonzero(oka), np.array([j for j in np.flatnonzero(okb) if j not in skip], dtype=int)
    if not len(ia) or not len(ib):
        return []
    limit = (RADIUS ** 2) * fa.shape[1]
    # |mean(x) - mean(y)| <= ||x - y|| / sqrt(d) <= RADIUS: only rows of b with a mean that close are compared
    ia = ia[np.argsort(fa[ia].mean(1), kind="stable")]
    ib = ib[np.argsort(fb[ib].mean(1), kind="stable")]
    mb = fb[ib].mean(1)
    found = []
    for start in range(0, len(ia), chunk):
        rows_a = ia[start:start + chunk]
        xa = fa[rows_a]
        ma = xa.mean(1)
        lo, hi = np.searchsorted(mb, ma.min() - RADIUS), np.searchsorted(mb, ma.max() + RADIUS, side="right")
        if lo >= hi:
            continue
        rows_b = ib[lo:hi]
        xb = fb[rows_b]
        d2 = (xa ** 2).sum(1)[:, None] + (xb ** 2).sum(1)[None, :] - 2.0 * xa @ xb.T
        for p, q in zip(*np.nonzero(d2 <= limit), strict=True):
            i, j = int(rows_a[p]), int(rows_b[q])
            if all(_same_picture(files_a[i][k], files_b[j][k]) for k in (0, 1)):
                found.append((i, j))
    seen, out = set(), []
    for i, j in found:  # one pair per row of b
        if j not in seen:
            seen.add(j)
            out.append((i, j))
    return out


__all__ = ["MAX_CHANGED", "RADIUS", "fingerprints", "near_pairs"]
