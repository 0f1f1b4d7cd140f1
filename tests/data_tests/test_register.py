"""Local misregistration: the shift search finds a known shift and does not invent one."""

from __future__ import annotations

import numpy as np
import pytest

from deftpipe.data._register import local_shift


def _board(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 255, np.uint8)
    for _ in range(10):
        y, x = rng.integers(0, size - 10, size=2)
        img[y:y + 5, x:x + int(rng.integers(10, 50))] = 0
        y, x = rng.integers(0, size - 10, size=2)
        img[y:y + int(rng.integers(10, 50)), x:x + 5] = 0
    return img


@pytest.mark.parametrize("dy,dx", [(0, 0), (3, -5), (-7, 2)])
def test_recovers_a_shift_of_the_test_image(dy: int, dx: int) -> None:
    g = _board()
    t = np.roll(g, (dy, dx), (0, 1))
    got_dy, got_dx, at0, best = local_shift(g, t)
    assert (got_dy, got_dx) == (dy, dx)
    assert best == 0.0 and (at0 > 0) == bool(dy or dx)


def test_a_pattern_that_does_not_change_under_a_shift_reads_as_aligned() -> None:
    g = np.full((64, 64), 255, np.uint8)
    g[:, 20:26] = 0  # one vertical trace: any vertical shift matches it equally well
    assert local_shift(g, g.copy())[:2] == (0, 0)
    assert local_shift(g, np.roll(g, 2, 1))[:2] == (0, 2)


def test_window_must_exceed_the_search() -> None:
    with pytest.raises(ValueError, match="too small"):
        local_shift(np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8))
