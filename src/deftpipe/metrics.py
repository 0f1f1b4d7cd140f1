"""The metric contract (docs/contracts.md §5): FAR at 100 % recall and what a user needs to trust it.

``far_pct`` hangs on the single hardest defect, so :func:`compute_metrics` reports beside it the
numbers it rests on (``n_defects``, ``n_pass``), ``far_pct_at_99`` (one escape in a hundred
allowed), a seeded bootstrap interval (``far_ci_low`` .. ``far_ci_high``) and the defects that set
the threshold (``hardest_defects``). A gain smaller than the interval is not a gain.

Definitions (``score`` = P(defect), higher = more defective):

* ``threshold`` = the lowest score among true defects; every defect is flagged at
  ``score >= threshold`` (ties with the threshold count as flagged, for PASS rows too).
* ``far_pct`` = PASS rows with ``score >= threshold`` / all PASS rows x 100 (a percentage).
* ``far_pct_at_99``: the same at the highest threshold that still flags ``ceil(0.99 n_defects)``.
* ``auroc``: :func:`sklearn.metrics.roc_auc_score`.
* ``pred_counts``: predictions per class at the operating threshold (the ``threshold`` argument
  when given, else the 100 %-recall threshold): ``{"PASS": n, "FAIL": n}`` for binary scores, or
  the counts of ``predictions`` when a multi-class model passes its argmax classes.
* ``escapes``: defects with ``score < escape_threshold`` (the ``threshold`` argument when given,
  else 0.5), also per true class in ``escapes_by_class``.

Edge cases: no defects → ``far_pct`` 0.0 (nothing needs flagging), ``threshold``/``recall``/
``auroc``/``far_pct_at_99`` ``None``; no PASS rows → ``far_pct`` 0.0, ``auroc`` ``None``; any
NaN/inf score or a length mismatch → :class:`~deftpipe.errors.DataError`. ``None`` (not NaN/inf)
marks an undefined value so every result stays valid JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from deftpipe.errors import DataError

PASS = "PASS"
FAIL = "FAIL"
DEFAULT_ESCAPE_THRESHOLD = 0.5
N_HARDEST = 5


def _check_inputs(is_defect: Any, scores: Any, labels: Any, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(is_defect).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(y) != len(s):
        raise DataError(f"compute_metrics: {len(y)} labels but {len(s)} scores; pass one score per row")
    if len(s) == 0:
        raise DataError("compute_metrics: no rows to evaluate (empty CSV or empty split)")
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"compute_metrics: {int(bad.sum())} of {len(s)} scores are NaN or infinite (first at row {first}); "
            "the model's outputs diverged — retrain with a lower train.optim.lr"
        )
    for name, extra in (("labels", labels), ("predictions", predictions)):
        if extra is not None and len(extra) != len(s):
            raise DataError(f"compute_metrics: {len(extra)} {name} but {len(s)} scores; pass one per row")
    return y, s


def _far(pass_scores: np.ndarray, threshold: float) -> float:
    if len(pass_scores) == 0:
        return 0.0
    return float((pass_scores >= threshold).mean() * 100.0)


def _threshold_at_recall(defect_scores: np.ndarray, recall: float) -> float:
    """Highest threshold flagging at least ``ceil(recall * n)`` defects."""
    k = max(1, math.ceil(recall * len(defect_scores) - 1e-9))
    return float(np.sort(defect_scores)[::-1][k - 1])


def _bootstrap_far(defect_scores: np.ndarray, pass_scores: np.ndarray, *, n_boot: int, seed: int,
                   alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of far_pct, resampling defects and PASS rows separately (seeded).

    Resampling each group on its own keeps the numbers the figure rests on fixed, so the interval
    reflects which samples happened to be drawn, not how many of each.
    """
    if n_boot <= 0 or len(defect_scores) == 0 or len(pass_scores) == 0:
        far = _far(pass_scores, float(defect_scores.min())) if len(defect_scores) else 0.0
        return far, far
    rng = np.random.default_rng(seed)
    d_idx = rng.integers(0, len(defect_scores), size=(n_boot, len(defect_scores)))
    thresholds = defect_scores[d_idx].min(axis=1)
    p_idx = rng.integers(0, len(pass_scores), size=(n_boot, len(pass_scores)))
    fars = (pass_scores[p_idx] >= thresholds[:, None]).mean(axis=1) * 100.0
    return float(np.percentile(fars, 100 * alpha / 2)), float(np.percentile(fars, 100 * (1 - alpha / 2)))


def _prediction_counts(flagged: np.ndarray, true_names: list[str], predictions: Sequence[str] | None
                       ) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """(predicted-class counts, true class -> predicted class -> count); binary PASS/FAIL from
    ``flagged`` unless ``predictions`` names the classes."""
    pred_names = [str(p) for p in predictions] if predictions is not None else [
        FAIL if f else PASS for f in flagged]
    pred_counts = dict(Counter(pred_names))
    if predictions is None:
        pred_counts = {PASS: pred_counts.get(PASS, 0), FAIL: pred_counts.get(FAIL, 0)}
    by_class: dict[str, dict[str, int]] = {}
    for t, p in zip(true_names, pred_names, strict=True):
        by_class.setdefault(t, {}).setdefault(p, 0)
        by_class[t][p] += 1
    return pred_counts, by_class


def compute_metrics(
    is_defect: Sequence[bool] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    threshold: float | None = None,
    predictions: Sequence[str] | None = None,
    seed: int = 0,
    n_boot: int = 200,
) -> dict[str, Any]:
    """FAR at 100 % recall and its companions (see the module docstring for every definition).

    Args:
        is_defect: True for every defect row (any non-PASS label).
        scores: P(defect) per row, finite.
        labels: true class names per row (for ``escapes_by_class`` and ``hardest_defects``).
        threshold: a fixed operating threshold (e.g. chosen on validation) for ``pred_counts``,
            ``far_pct_at_threshold``, ``recall`` and ``escapes``; ``None`` = the 100 %-recall one.
        predictions: predicted class names per row (multi-class); replaces the binary
            PASS/FAIL split in ``pred_counts``.
        seed, n_boot: bootstrap of ``far_pct`` (0 resamples = no interval, both ends = far_pct).
    Returns:
        A JSON-safe dict: far_pct, threshold, recall, auroc, n_defects, n_pass, far_pct_at_99,
        threshold_at_99, far_ci_low, far_ci_high, operating_threshold, far_pct_at_threshold,
        pred_counts, pred_counts_by_class, escapes, escape_threshold, escapes_by_class,
        hardest_defects.
    Raises:
        DataError: NaN/inf scores, no rows, or mismatched lengths.
    """
    y, s = _check_inputs(is_defect, scores, labels, predictions)
    true_names = [str(x) for x in labels] if labels is not None else [FAIL if d else PASS for d in y]
    d_scores, p_scores = s[y], s[~y]
    n_def, n_pass = int(y.sum()), int((~y).sum())

    far_threshold = float(d_scores.min()) if n_def else None
    far_pct = _far(p_scores, far_threshold) if n_def else 0.0
    t99 = _threshold_at_recall(d_scores, 0.99) if n_def else None
    ci_low, ci_high = _bootstrap_far(d_scores, p_scores, n_boot=n_boot, seed=seed) if n_def else (0.0, 0.0)

    auroc = None
    if n_def and n_pass:
        from sklearn.metrics import roc_auc_score

        auroc = float(roc_auc_score(y, s))

    operating = float(threshold) if threshold is not None else far_threshold
    flagged = s >= operating if operating is not None else np.zeros(len(s), dtype=bool)
    recall = float(flagged[y].mean()) if n_def else None
    pred_counts, by_class = _prediction_counts(flagged, true_names, predictions)

    escape_t = float(threshold) if threshold is not None else DEFAULT_ESCAPE_THRESHOLD
    escaped = y & (s < escape_t)
    escapes_by_class = dict(Counter(true_names[i] for i in np.flatnonzero(escaped)))
    order = np.flatnonzero(y)[np.argsort(d_scores, kind="stable")][:N_HARDEST]
    hardest = [{"row": int(i), "label": true_names[i], "score": float(s[i])} for i in order]

    return {
        "far_pct": far_pct,
        "threshold": far_threshold,
        "recall": recall,
        "auroc": auroc,
        "n_defects": n_def,
        "n_pass": n_pass,
        "far_pct_at_99": _far(p_scores, t99) if t99 is not None else None,
        "threshold_at_99": t99,
        "far_ci_low": ci_low,
        "far_ci_high": ci_high,
        "operating_threshold": operating,
        "far_pct_at_threshold": _far(p_scores, operating) if operating is not None else 0.0,
        "pred_counts": pred_counts,
        "pred_counts_by_class": by_class,
        "escapes": int(escaped.sum()),
        "escape_threshold": escape_t,
        "escapes_by_class": escapes_by_class,
        "hardest_defects": hardest,
    }


def far_budget_threshold(pass_scores: Any, far_budget_pct: float) -> float:
    """The lowest threshold that flags at most ``far_budget_pct`` % of ``pass_scores`` (flagged:
    ``score >= threshold``); 0.0 when the budget covers every PASS row, and just above the highest
    PASS score when the budget allows none."""
    p = np.sort(np.asarray(pass_scores, dtype=float))[::-1]
    if not 0.0 <= far_budget_pct <= 100.0:
        raise DataError(f"FAR budget must be in [0, 100] %, got {far_budget_pct}; set kpi.threshold_far_budget")
    k = int(math.floor(len(p) * far_budget_pct / 100.0 + 1e-9))  # PASS rows the budget allows to flag
    if k >= len(p):
        return 0.0
    return float(np.nextafter(p[k], np.inf))  # flags p[0..k-1] (fewer on ties), never p[k]


def shipped_threshold(kpi_threshold: float, margin: float = 0.0, *, pass_scores: Any = None,
                      far_budget_pct: float | None = None, far_reserve: float = 0.0) -> float:
    """The operating threshold a run ships, from the KPI set alone (the audit never sees it).

    The KPI set's 100 %-recall threshold, lowered by ``margin`` as a share of itself
    (``kpi.threshold_margin``, 0 <= margin < 1), and lowered further to the threshold at which the
    KPI set's FAR reaches ``far_budget_pct`` (``kpi.threshold_far_budget``) when that is lower: a
    model that separates the KPI set with room to spare spends the false-alarm budget the line
    accepts on recall for boards the KPI set does not show. A model whose own FAR at 100 % recall
    is already near or above the budget gets a reserve in proportion to it instead
    (``kpi.threshold_far_reserve``): the FAR target is the larger of the budget and
    ``(1 + far_reserve)`` x that FAR, so such a model, whose defects sit among the PASS rows, is not
    shipped at the bare KPI threshold. The threshold is never raised above the one that catches
    every KPI defect. The audit measures recall and FAR at this very threshold on the holdout
    (docs/pipeline.md, "The shipped threshold").
    """
    if not 0.0 <= margin < 1.0:
        raise DataError(f"threshold margin must be in [0, 1), got {margin}; set kpi.threshold_margin")
    if not far_reserve >= 0.0:
        raise DataError(f"FAR reserve must be >= 0, got {far_reserve}; set kpi.threshold_far_reserve")
    t = float(kpi_threshold) * (1.0 - float(margin))
    if far_budget_pct and pass_scores is not None and len(pass_scores):
        p, target = np.asarray(pass_scores, dtype=float), float(far_budget_pct)
        if far_reserve:
            far_at_kpi = 100.0 * float((p >= float(kpi_threshold)).mean())
            target = min(100.0, max(target, (1.0 + float(far_reserve)) * far_at_kpi))
        t = min(t, far_budget_threshold(p, target))
    return t


@dataclass(frozen=True)
class ThresholdRule:
    """The shipped-threshold settings of a run, read from one place (``kpi.threshold_*`` in
    ``pipeline.yaml``, the state's ``kpi`` snapshot or ``best_model.json``, which share the keys).

    A state or ``best_model.json`` written before a setting existed keeps the rule it ran with
    (a missing key is "off").
    """

    margin: float = 0.0
    far_budget_pct: float | None = None
    far_reserve: float = 0.0

    KEYS: ClassVar[tuple[str, ...]] = ("threshold_margin", "threshold_far_budget", "threshold_far_reserve")

    @classmethod
    def of(cls, settings: Any) -> ThresholdRule:
        """From a mapping with :attr:`KEYS` (missing = off) or an object with those attributes."""
        get = settings.get if isinstance(settings, dict) else (lambda k: getattr(settings, k, None))
        return cls(float(get("threshold_margin") or 0.0), get("threshold_far_budget"),
                   float(get("threshold_far_reserve") or 0.0))

    def threshold(self, kpi_threshold: float, pass_scores: Any = None) -> float:
        """The threshold this rule ships for a model with these KPI figures."""
        return shipped_threshold(kpi_threshold, self.margin, pass_scores=pass_scores,
                                 far_budget_pct=self.far_budget_pct, far_reserve=self.far_reserve)

    def settings(self) -> dict[str, Any]:
        """The rule as ``kpi`` keys (what a state snapshot and ``best_model.json`` store)."""
        return dict(zip(self.KEYS, (self.margin, self.far_budget_pct, self.far_reserve), strict=True))

    def __str__(self) -> str:
        """The rule in words (best_model.json, the pre-flight, the summary)."""
        rule = "the KPI set's 100 %-recall threshold" + (f" x (1 - {self.margin:g})" if self.margin else "")
        if self.far_budget_pct:
            target = f"{self.far_budget_pct:g} %"
            if self.far_reserve:
                target += f" or {1.0 + self.far_reserve:g} x its FAR at that threshold, whichever is higher,"
            rule += f", lowered to where the KPI set's FAR reaches {target} when that is lower"
        return rule


def is_collapsed(pred_counts: dict[str, int]) -> bool:
    """True when every prediction falls into one class (or there are none): a degenerate model.

    At the 100 %-recall threshold this means every PASS row is flagged (``far_pct`` = 100).
    """
    return sum(1 for n in pred_counts.values() if n > 0) <= 1


def fmt_value(v: Any) -> str:
    """A metric figure rounded to 2 decimals, "—" when missing (summaries and the report)."""
    return "—" if v is None else f"{float(v):.2f}"


__all__ = ["DEFAULT_ESCAPE_THRESHOLD", "ThresholdRule", "compute_metrics", "far_budget_threshold", "fmt_value",
           "is_collapsed", "shipped_threshold"]
