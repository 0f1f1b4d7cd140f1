"""The metric contract (docs/contracts.md §5) and its edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deftpipe.errors import DataError
from deftpipe.metrics import compute_metrics, is_collapsed


def test_far_at_full_recall_is_a_percentage_of_pass_above_the_lowest_defect() -> None:
    y = [1, 1, 0, 0, 0, 0]
    s = [0.9, 0.6, 0.7, 0.5, 0.1, 0.65]
    m = compute_metrics(y, s)
    assert m["threshold"] == pytest.approx(0.6)
    assert m["far_pct"] == pytest.approx(50.0)  # 0.7 and 0.65 of 4 PASS
    assert m["recall"] == 1.0
    assert m["n_defects"] == 2 and m["n_pass"] == 4
    assert m["pred_counts"] == {"PASS": 2, "FAIL": 4}
    assert m["auroc"] == pytest.approx(0.75)  # 6 of 8 (defect, PASS) pairs ordered
    json.dumps(m, allow_nan=False)  # always valid JSON


def test_ties_at_the_threshold_count_as_flagged() -> None:
    m = compute_metrics([1, 0, 0], [0.4, 0.4, 0.2])
    assert m["far_pct"] == pytest.approx(50.0)


def test_perfect_separation_gives_zero_far() -> None:
    m = compute_metrics([1, 1, 0, 0], [0.8, 0.9, 0.1, 0.2])
    assert m["far_pct"] == 0.0 and m["auroc"] == 1.0
    assert not is_collapsed(m["pred_counts"])


def test_no_defects_is_defined_and_json_safe() -> None:
    m = compute_metrics([0, 0, 0], [0.1, 0.9, 0.5])
    assert m["far_pct"] == 0.0
    assert m["threshold"] is None and m["recall"] is None and m["auroc"] is None
    assert m["far_pct_at_99"] is None
    assert m["pred_counts"] == {"PASS": 3, "FAIL": 0}
    json.dumps(m, allow_nan=False)


def test_no_pass_rows_give_zero_far() -> None:
    m = compute_metrics([1, 1], [0.3, 0.9], labels=["open", "short"])
    assert m["far_pct"] == 0.0 and m["auroc"] is None
    assert m["threshold"] == pytest.approx(0.3)
    assert m["escapes"] == 1 and m["escapes_by_class"] == {"open": 1}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_scores_are_an_error(bad: float) -> None:
    with pytest.raises(DataError, match=r"1 of 3 scores are NaN or infinite \(first at row 1\).*lower train.optim.lr"):
        compute_metrics([1, 0, 0], [0.5, bad, 0.1])


def test_length_mismatch_and_empty_input_are_errors() -> None:
    with pytest.raises(DataError, match="2 labels but 3 scores"):
        compute_metrics([1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="no rows to evaluate"):
        compute_metrics([], [])


def test_far_at_99_ignores_the_single_worst_defect() -> None:
    rng = np.random.default_rng(0)
    d = np.r_[rng.uniform(0.8, 1.0, 199), 0.05]  # one hard defect at the bottom
    p = rng.uniform(0.0, 0.7, 1000)
    m = compute_metrics(np.r_[np.ones(200), np.zeros(1000)], np.r_[d, p])
    assert m["far_pct"] > 90.0
    assert m["far_pct_at_99"] == 0.0
    assert m["hardest_defects"][0]["score"] == pytest.approx(0.05)


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(50), np.zeros(500)]
    s = np.r_[rng.uniform(0.3, 1.0, 50), rng.uniform(0.0, 0.6, 500)]
    a = compute_metrics(y, s, seed=3)
    b = compute_metrics(y, s, seed=3)
    c = compute_metrics(y, s, seed=4)
    assert (a["far_ci_low"], a["far_ci_high"]) == (b["far_ci_low"], b["far_ci_high"])
    assert (a["far_ci_low"], a["far_ci_high"]) != (c["far_ci_low"], c["far_ci_high"])
    assert a["far_ci_low"] <= a["far_pct"] + 1e-9 and a["far_ci_high"] >= a["far_ci_low"]


def test_fixed_threshold_drives_pred_counts_and_escapes() -> None:
    y = [1, 1, 1, 0, 0]
    labels = ["open", "short", "short", "PASS", "PASS"]
    m = compute_metrics(y, [0.9, 0.3, 0.2, 0.4, 0.1], labels=labels, threshold=0.35)
    assert m["escapes"] == 2 and m["escapes_by_class"] == {"short": 2}
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["pred_counts"] == {"PASS": 3, "FAIL": 2}
    assert m["pred_counts_by_class"]["short"] == {"PASS": 2}
    assert m["far_pct_at_threshold"] == pytest.approx(50.0)
    assert m["far_pct"] == pytest.approx(50.0)  # far_pct stays the 100 %-recall figure (t = 0.2)


def test_multiclass_predictions_are_counted_per_class() -> None:
    m = compute_metrics([1, 1, 0], [0.9, 0.8, 0.1], predictions=["open", "short", "PASS"])
    assert m["pred_counts"] == {"open": 1, "short": 1, "PASS": 1}


def test_collapse_detector() -> None:
    assert is_collapsed({"PASS": 0, "FAIL": 10})
    assert is_collapsed({"PASS": 5})
    assert is_collapsed({})
    assert not is_collapsed({"PASS": 1, "FAIL": 9})
    constant = compute_metrics([1, 0, 0], [0.5, 0.5, 0.5])
    assert constant["far_pct"] == 100.0 and is_collapsed(constant["pred_counts"])
