"""The one selection rule (deftpipe.selection) and the headline that compares with the user's spec."""

from __future__ import annotations

import numpy as np
import pytest

from deftpipe.metrics import compute_metrics
from deftpipe.pipeline._trajectory import headline, improvement
from deftpipe.selection import RULE_FIGURE, TAIL_K, beats, beats_by_rule, figures, pick, pick_by_rule, rank


def test_pick_lowest_ties_to_the_earlier_and_none_never_wins():
    cands = [("baseline", 5.0), ("iter1", None), ("iter2", 3.0), ("iter3", 3.0), ("iter4", float("nan"))]
    assert pick(cands, lambda c: c[1]) == ("iter2", 3.0)
    assert [c[0] for c in rank(cands, lambda c: c[1])] == ["iter2", "iter3", "baseline"]
    assert pick([("a", None)], lambda c: c[1]) is None
    assert beats(2.9, 3.0) and not beats(3.0, 3.0) and not beats(None, 3.0) and beats(1.0, None)
    # the rule's figure when every candidate recorded it, else far_pct for all (an older state)
    a, b = {"far_pct": 4.0, RULE_FIGURE: 1.0}, {"far_pct": 3.0, RULE_FIGURE: 2.0}
    assert pick_by_rule([a, b], lambda r: r) is a and not beats_by_rule(b, a)
    assert pick_by_rule([a, {"far_pct": 3.0}], lambda r: r)["far_pct"] == 3.0 and beats_by_rule(b, {"far_pct": 9.0})


def test_figures_agree_with_the_metric_contract_and_are_ordered():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(200, bool), np.zeros(800, bool)]
    s = np.r_[rng.beta(5, 1, 200), rng.beta(1, 5, 800)]
    f = figures(y, s)
    m = compute_metrics(y, s)
    assert f["far_pct"] == pytest.approx(m["far_pct"])
    # the k hardest defects set thresholds at or above the hardest one: the tail mean is never higher
    assert f[f"tail_{TAIL_K}"] <= f["far_pct"] and f["far_pct_at_995"] <= f["far_pct"]
    assert m["far_ci_low"] - 1e-9 <= f["boot_mean"] <= m["far_ci_high"] + 1e-9
    s2 = s.copy()
    s2[np.argmin(np.where(y, s, np.inf))] = 0.0  # one defect falls to the bottom: FAR@100%R jumps to 100
    g = figures(y, s2)
    assert g["far_pct"] == 100.0 and g[f"tail_{TAIL_K}"] < 100.0


def _points(ref, ref_ci, steps):
    pts = [{"step": "Phase 1 best (val)", "label": "phase1", "set": "validation", "value": 1.0},
           {"step": "user spec (KPI)", "label": "reference", "set": "KPI test", "value": ref, "ci": ref_ci}]
    return pts + [{"step": f"{lb} (KPI)", "label": lb, "set": "KPI test", "value": v, "ci": ci}
                  for lb, v, ci in steps]


def test_headline_compares_the_deliverable_with_the_spec_trained_once():
    # The baseline (Phase 1's winner) is worse than the user's spec: the headline ignores it.
    pts = _points(4.6, [4.2, 5.0], [("baseline", 66.5, [60.0, 67.0]), ("final_automl", 31.1, [25.0, 32.0])])
    gain = improvement(pts, "final_automl")
    assert gain["reference"] == 4.6 and gain["deliverable"] == 31.1 and gain["verdict"] == "worse"
    assert "worse than the spec trained once" in headline(gain)
    gain = improvement(_points(10.0, [8.0, 12.0], [("baseline", 9.0, [7.0, 9.5])]), "baseline")
    assert gain["verdict"] == "no gain" and not gain["improved"] and "no gain" in headline(gain)
    gain = improvement(_points(10.0, [8.0, 12.0], [("iter1", 2.0, [1.0, 3.0])]), "iter1")
    assert gain["verdict"] == "gain" and gain["relative_reduction_pct"] == 80.0 and "a gain" in headline(gain)
    # Without Phase 1 the loop's baseline is the spec trained once.
    no_p1 = [{"step": "baseline (KPI)", "label": "baseline", "set": "KPI test", "value": 5.0, "ci": [4.0, 6.0]},
             {"step": "iter1 (KPI)", "label": "iter1", "set": "KPI test", "value": 1.0, "ci": [0.5, 1.5]}]
    assert improvement(no_p1, "iter1")["reference_step"] == "baseline (KPI)"
    # Phase 1 ran but left no reference: no headline rather than one against an intermediate.
    assert improvement([p for p in pts if p["label"] != "reference"], "final_automl") is None


def test_every_choice_uses_the_rule_and_warm_start_modes():
    from deftpipe.deft._steps import best_so_far, warm_start_label
    from deftpipe.pipeline._handoff import best_iteration

    its = {"baseline": {"far_pct": 4.0, "best_ckpt_path": "b"}, "iter1": {"far_pct": 9.0, "best_ckpt_path": "1"},
           "iter2": {"far_pct": 4.0, "best_ckpt_path": "2"}, "iter3": {"far_pct": None, "best_ckpt_path": "3"},
           "final_automl": {"far_pct": 0.1, "best_ckpt_path": "f"}}
    state = {"iterations": its}
    assert best_iteration(state)[0] == "baseline"  # tie with iter2: the earlier; never final_automl
    assert best_so_far(state, "iter3") == "baseline"
    assert warm_start_label(state, "iter2", "best") == "baseline"
    assert warm_start_label(state, "iter2", "analysed") == "iter1"  # the model RCA looked at
    assert warm_start_label(state, "iter1", "analysed") == "baseline"


def test_every_kpi_evaluation_records_the_selection_figures(tmp_path):
    import pandas as pd

    from deftpipe.deft._model_stages import evaluate_scores, pick_metrics

    csv = tmp_path / "inference.csv"
    pd.DataFrame({"label": ["short", "open", "PASS", "PASS", "PASS"], "score": [0.9, 0.4, 0.5, 0.1, 0.3]}).to_csv(
        csv, index=False)
    recorded = pick_metrics(evaluate_scores(csv, tmp_path).metrics)
    assert recorded["far_pct"] == pytest.approx(100 / 3)  # the open at 0.4 lets one PASS (0.5) through
    assert recorded[f"tail_{TAIL_K}"] <= recorded["far_pct"] and "boot_mean" in recorded
