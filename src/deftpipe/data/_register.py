"""Local misregistration of a (template, test) window: the integer shift that best aligns them.

DeepPCB images are binarized, so the measure is simply the share of pixels whose phase (copper or
laminate) differs between the template and the shifted test image, over the window's interior;
every shift within ``max_shift`` is tried (no FFT: a repeated pattern such as a row of pads at a
regular pitch makes phase correlation jump to a neighbouring copy, which an exhaustive search with
ties broken towards the smallest shift does not). A defect is a small share of a window larger than
the crop, so it does not move the minimum.
"""

from __future__ import annotations

import numpy as np

MAX_SHIFT = 12  # px tried either way; DeepPCB pairs sit 0-6 px apart (docs/model.md)
TIE = 0.0005  # shifts whose mismatch is within this share of the best count as equally good


def local_shift(golden: np.ndarray, test: np.ndarray, max_shift: int = MAX_SHIFT) -> tuple[int, int, float, float]:
    """``(dy, dx, mismatch_at_0, mismatch_at_best)`` for two equally sized grey windows.

    ``test[y + dy, x + dx]`` matches ``golden[y, x]`` best; mismatch = share of interior pixels whose
    phase (threshold 128) differs. Of the shifts within ``TIE`` of the lowest mismatch, the
    smallest wins (Chebyshev, then Euclidean): a shift along a straight trace or by the pitch of a
    pad row changes almost nothing and must not be taken for misregistration.
    """
    h, w = golden.shape
    m = max_shift
    if h <= 2 * m or w <= 2 * m:
        raise ValueError(f"window {h}x{w} is too small for a {m} px shift search")
    g = golden[m:h - m, m:w - m] < 128
    t = test < 128
    mis = np.array([[np.count_nonzero(g != t[m + dy:h - m + dy, m + dx:w - m + dx]) / g.size
                     for dx in range(-m, m + 1)] for dy in range(-m, m + 1)])
    d = np.arange(-m, m + 1)
    cheb = np.maximum(np.abs(d)[:, None], np.abs(d)[None, :])
    eucl = d[:, None] ** 2 + d[None, :] ** 2
    ok = mis <= mis.min() + TIE
    order = np.lexsort((eucl[ok], cheb[ok]))
    iy, ix = np.nonzero(ok)
    k = order[0]
    return int(d[iy[k]]), int(d[ix[k]]), float(mis[m, m]), float(mis[iy[k], ix[k]])


__all__ = ["MAX_SHIFT", "local_shift"]
