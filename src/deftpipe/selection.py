"""The one selection rule: which of several candidate models a run keeps.

Every choice a run makes between trained models — the loop's best iteration, the checkpoint the
loop's retrain and Phase 3 warm-start from, Phase 3 against the loop — goes through :func:`pick`:
the candidate with the lowest selection figure wins, ties go to the earlier candidate (the order
the caller gives, which is the order the run made them in). The figure is :data:`RULE_FIGURE`,
computed on the KPI set by :func:`figures` and recorded beside ``far_pct`` as ``selection_figure``.

Why a figure and not ``far_pct`` alone: FAR @ 100 % recall hangs on the single lowest-scored
defect, so one or two defects decide it. The candidate figures below were measured against the
holdout on leave-board-groups-out folds (docs/pipeline.md, "Selection rule"):

* ``far_pct`` — FAR at the 100 %-recall threshold (the KPI itself);
* ``boot_mean`` — the mean of the seeded bootstrap of ``far_pct`` (defects and PASS rows resampled
  apart, as :func:`deftpipe.metrics.compute_metrics` does for the interval);
* ``tail_k`` — the mean FAR at the thresholds set by each of the ``k`` lowest-scored defects;
* ``far_pct_at_995`` — FAR at 99.5 % recall.

Do no harm: a run's candidates form a chain — the user's spec trained once, Phase 1's winner, the
loop's iterations, Phase 3's winner — and a later candidate replaces the one in hand only when
:func:`challenge` finds it better beyond the noise of the KPI set: a paired bootstrap (the same
resampled defects and PASS rows for both models) of the rule's figure, the challenger lower in at
least :data:`CONFIDENCE` of the replicates. A lower figure alone is not enough: one or two defects
set it, and a run that switched on such a difference delivered a model 2.4× worse on unseen boards
than the user's spec it replaced (docs/pipeline.md, "Do no harm").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

TAIL_K = 5
#: The figure the rule compares, on the KPI set: the mean FAR at the thresholds of the 5 lowest-scored
#: defects ranked the candidates most like the holdout on the leave-board-groups-out folds of the
#: current ablation (12 runs, seeds 42-45; docs/pipeline.md, "Which figure: measured"), where FAR at
#: 99.5 % recall — the figure chosen on the first, smaller ablation — ranked them worst.
RULE_FIGURE = f"tail_{TAIL_K}"
N_BOOT = 200
#: A challenger replaces the model in hand when its rule figure is lower in at least this share of
#: the paired bootstrap replicates (one-sided, ~ a 95 % test of "better on this set").
CONFIDENCE = 0.95
N_BOOT_PAIRED = 1000


def _far(pass_scores: np.ndarray, threshold: float) -> float:
    return float((pass_scores >= threshold).mean() * 100.0) if len(pass_scores) else 0.0


def _far_at_recall(d: np.ndarray, p: np.ndarray, recall: float) -> float:
    k = max(1, math.ceil(recall * len(d) - 1e-9))
    return _far(p, float(np.sort(d)[::-1][k - 1]))


def figures(is_defect: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, *,
            seed: int = 0) -> dict[str, float | None]:
    """Every candidate selection figure of one model on one labelled set (lower = better, in %)."""
    y = np.asarray(is_defect, dtype=bool)
    s = np.asarray(scores, dtype=float)
    d, p = s[y], s[~y]
    if not len(d):
        return {"far_pct": 0.0, "boot_mean": 0.0, f"tail_{TAIL_K}": 0.0, "far_pct_at_995": 0.0}
    rng = np.random.default_rng(seed)
    thresholds = d[rng.integers(0, len(d), size=(N_BOOT, len(d)))].min(axis=1)
    boot = (p[rng.integers(0, len(p), size=(N_BOOT, len(p)))] >= thresholds[:, None]).mean(axis=1) * 100.0 \
        if len(p) else np.zeros(N_BOOT)
    lowest = np.sort(d)[:TAIL_K]
    return {"far_pct": _far(p, float(d.min())), "boot_mean": float(boot.mean()),
            f"tail_{TAIL_K}": float(np.mean([_far(p, t) for t in lowest])),
            "far_pct_at_995": _far_at_recall(d, p, 0.995)}


def selection_metrics(is_defect: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, *,
                      seed: int = 0) -> dict[str, float | None]:
    """The figures :func:`figures` adds to ``compute_metrics`` (recorded with every KPI evaluation, so
    any of them can be the rule's figure)."""
    return {k: v for k, v in figures(is_defect, scores, seed=seed).items() if k != "far_pct"}


def rule_figure(records: Iterable[dict[str, Any]]) -> str:
    """The figure a set of evaluated candidates is compared on: :data:`RULE_FIGURE` when every one
    of them recorded it, else ``far_pct`` (a state written before the figure was recorded)."""
    evaluated = [r for r in records if r.get("far_pct") is not None]
    return RULE_FIGURE if all(r.get(RULE_FIGURE) is not None for r in evaluated) else "far_pct"


def pick_by_rule(candidates: Iterable[T], record: Callable[[T], dict[str, Any]]) -> T | None:
    """:func:`pick` on the rule's figure of each candidate's recorded KPI metrics (``record(c)``)."""
    items = list(candidates)
    key = rule_figure(record(c) for c in items)
    return pick(items, lambda c: record(c).get(key))


def beats_by_rule(challenger: dict[str, Any], incumbent: dict[str, Any]) -> bool:
    """A later candidate replaces an earlier one only when strictly better on the rule's figure."""
    key = rule_figure([challenger, incumbent])
    return beats(challenger.get(key), incumbent.get(key))


@dataclass(frozen=True)
class Challenge:
    """The paired comparison of a challenger with the model in hand, on the same labelled rows."""

    figure: str  # the figure compared (tail_<k> or far_pct)
    incumbent: float  # its value on the set, each model (%)
    challenger: float
    confidence: float  # share of paired bootstrap replicates in which the challenger is strictly lower
    replaces: bool  # confidence >= CONFIDENCE
    n_defects: int
    n_pass: int

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "incumbent_value": round(self.incumbent, 4),
                "challenger_value": round(self.challenger, 4),
                "confidence": round(self.confidence, 4), "replaces": self.replaces, "n_defects": self.n_defects,
                "n_pass": self.n_pass}

    def __str__(self) -> str:
        word = "better beyond the noise" if self.replaces else "not better beyond the noise"
        return (f"{self.figure} {self.challenger:.2f} vs {self.incumbent:.2f} % "
                f"(lower in {100 * self.confidence:.0f} % of paired resamples; {word})")


def _tail_far(d_sorted: np.ndarray, p_sorted: np.ndarray, wd: np.ndarray, wp: np.ndarray, k: int) -> np.ndarray:
    """Per replicate (rows of the weights ``wd``/``wp``: resample counts over the sorted scores): the
    mean FAR (%) at the thresholds set by each of the ``k`` lowest-scored resampled defects."""
    cum_d = np.cumsum(wd, axis=1)
    cum_p = np.concatenate([np.zeros((len(wp), 1), dtype=wp.dtype), np.cumsum(wp, axis=1)], axis=1)
    n_p = max(int(cum_p[0, -1]), 1)
    rows = np.arange(len(wp))
    out = np.zeros(len(wd))
    for j in range(1, k + 1):
        t = d_sorted[np.argmax(cum_d >= j, axis=1)]  # the j-th lowest resampled defect score
        below = cum_p[rows, np.searchsorted(p_sorted, t, side="left")]  # PASS rows under it
        out += (n_p - below) / n_p * 100.0
    return out / k


def _resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``n_boot`` bootstrap resamples of ``n`` rows as counts per row (shape n_boot x n)."""
    idx = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.int32)


def challenge(is_defect: Sequence[bool] | np.ndarray, incumbent: Sequence[float] | np.ndarray,
              challenger: Sequence[float] | np.ndarray, *, figure: str = RULE_FIGURE, seed: int = 0,
              n_boot: int = N_BOOT_PAIRED) -> Challenge:
    """Does ``challenger`` beat ``incumbent`` on these rows beyond the noise? (scores aligned row by row)

    Both models are scored on the same bootstrap resamples (defects and PASS rows resampled apart, as
    the KPI interval is), so what the two share — the hard defects, the PASS rows that look defective —
    cancels, and what remains is the difference between the models.
    """
    y = np.asarray(is_defect, dtype=bool)
    a, b = np.asarray(incumbent, dtype=float), np.asarray(challenger, dtype=float)
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"challenge: {len(y)} labels, {len(a)} and {len(b)} scores")
    k = 1 if figure == "far_pct" else int(figure.removeprefix("tail_"))
    nd, np_ = int(y.sum()), int((~y).sum())
    if nd == 0 or np_ == 0:
        return Challenge(figure, 0.0, 0.0, 0.0, False, nd, np_)
    k = min(k, nd)
    rng = np.random.default_rng(seed)
    wd, wp = _resample_counts(rng, nd, n_boot), _resample_counts(rng, np_, n_boot)
    ones_d, ones_p = np.ones((1, nd), dtype=np.int32), np.ones((1, np_), dtype=np.int32)
    values = []
    for s in (a, b):
        od, op = np.argsort(s[y], kind="stable"), np.argsort(s[~y], kind="stable")
        d_sorted, p_sorted = s[y][od], s[~y][op]
        point = float(_tail_far(d_sorted, p_sorted, ones_d, ones_p, k)[0])
        values.append((point, _tail_far(d_sorted, p_sorted, wd[:, od], wp[:, op], k)))
    (va, ba), (vb, bb) = values
    conf = float((bb < ba).mean())
    return Challenge(figure, va, vb, conf, conf >= CONFIDENCE, nd, np_)


def rank(candidates: Iterable[T], value: Callable[[T], float | None]) -> list[T]:
    """Candidates with a value, best first: lowest ``value``, ties in the given (earlier-first) order."""
    valued = [(v, i, c) for i, c in enumerate(candidates) if (v := value(c)) is not None and not math.isnan(v)]
    return [c for _, _, c in sorted(valued, key=lambda x: (x[0], x[1]))]


def pick(candidates: Iterable[T], value: Callable[[T], float | None]) -> T | None:
    """The candidate with the lowest ``value`` (ties: the earliest); None when none has a value."""
    ranked = rank(candidates, value)
    return ranked[0] if ranked else None


def beats(challenger: float | None, incumbent: float | None) -> bool:
    """A later candidate replaces an earlier one only when strictly better (the tie rule of :func:`pick`)."""
    return challenger is not None and (incumbent is None or challenger < incumbent)


__all__ = ["CONFIDENCE", "RULE_FIGURE", "TAIL_K", "Challenge", "beats", "challenge", "beats_by_rule", "figures", "pick", "pick_by_rule", "rank", "rule_figure",
           "selection_metrics"]
