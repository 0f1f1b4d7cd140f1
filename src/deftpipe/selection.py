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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
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


__all__ = ["RULE_FIGURE", "TAIL_K", "beats", "beats_by_rule", "figures", "pick", "pick_by_rule", "rank", "rule_figure",
           "selection_metrics"]
