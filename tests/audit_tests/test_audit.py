"""The audit: figures at the shipped threshold, per board, through any adapter; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from deftpipe.audit import audit_checkpoint, audit_scores
from deftpipe.cli import app
from deftpipe.data import make_synthetic_workspace
from deftpipe.metrics import far_budget_threshold, shipped_threshold


def _holdout() -> tuple[pd.DataFrame, np.ndarray]:
    rows = [("A", "open", 0.9), ("A", "short", 0.2), ("A", "PASS", 0.1), ("A", "PASS", 0.5),
            ("B", "spur", 0.7), ("B", "PASS", 0.05), ("B", "PASS", 0.3), ("B", "PASS", 0.8)]
    df = pd.DataFrame([{"input_path": f"{b}/test", "golden_path": f"{b}/golden", "label": lab,
                        "object_name": f"{b}_{i}", "boardname": b} for i, (b, lab, _) in enumerate(rows)])
    return df, np.array([s for *_, s in rows])


def test_figures_at_the_shipped_threshold_and_per_board():
    df, scores = _holdout()
    a = audit_scores(df, scores, 0.4)
    # at 0.4 the short (0.2) escapes; 2 of 5 PASS are flagged (0.5, 0.8)
    assert a["n_defects"] == 3 and a["n_pass"] == 5
    assert a["recall_pct"] == pytest.approx(200 / 3) and a["escapes"] == 1
    assert a["far_pct_at_threshold"] == pytest.approx(40.0)
    assert [(r["object_name"], r["label"], r["score"]) for r in a["escaped"]] == [("A_1", "short", 0.2)]
    assert a["escaped"][0]["row"] == 2  # 1-based row of the CSV
    # FAR@100%R is the holdout's own: threshold 0.2 flags 0.5, 0.3, 0.8 -> 3 of 5
    assert a["far_pct"] == pytest.approx(60.0) and a["holdout_threshold"] == pytest.approx(0.2)
    assert a["far_ci_low"] <= a["far_pct"] <= a["far_ci_high"]
    assert a["threshold_setters"][0]["object_name"] == "A_1"
    assert set(a["per_board"]) == {"A", "B"}
    assert a["per_board"]["A"]["escapes"] == 1 and a["per_board"]["B"]["escapes"] == 0
    assert a["per_board"]["B"]["recall_pct"] == 100.0
    assert a["per_board"]["B"]["far_pct_at_threshold"] == pytest.approx(100 / 3)
    # the same scores at a threshold low enough: nothing escapes
    assert audit_scores(df, scores, 0.1)["escapes"] == 0


def test_shipped_threshold_rule():
    assert shipped_threshold(0.2) == 0.2
    assert shipped_threshold(0.2, 0.25) == pytest.approx(0.15)
    with pytest.raises(Exception, match=r"threshold margin must be in \[0, 1\)"):
        shipped_threshold(0.2, 1.0)


def test_far_budget_lowers_the_shipped_threshold_only_within_the_budget():
    passes = np.array([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02])  # 10 KPI PASS rows
    # 10 % of 10 rows: one may be flagged -> just above the second-highest PASS score
    t = far_budget_threshold(passes, 10.0)
    assert 0.5 < t < 0.5001 and (passes >= t).sum() == 1
    assert far_budget_threshold(passes, 0.0) > 0.9 and far_budget_threshold(passes, 100.0) == 0.0
    assert (passes >= far_budget_threshold(passes, 35.0)).sum() == 3  # floor(3.5) rows
    # the KPI defects' lowest score 0.6 flags 1 PASS row (10 %): a 30 % budget lowers it to flag 3
    assert shipped_threshold(0.6, pass_scores=passes, far_budget_pct=30.0) == pytest.approx(0.3, abs=1e-6)
    # never raised above the 100 %-recall threshold, whatever the budget; off when None or 0
    assert shipped_threshold(0.15, pass_scores=passes, far_budget_pct=10.0) == 0.15
    assert shipped_threshold(0.6, pass_scores=passes, far_budget_pct=None) == 0.6
    assert shipped_threshold(0.6, pass_scores=passes, far_budget_pct=0.0) == 0.6
    # with a margin: the lower of the two
    assert shipped_threshold(0.6, 0.5, pass_scores=passes, far_budget_pct=10.0) == pytest.approx(0.3)
    with pytest.raises(Exception, match=r"FAR budget must be in \[0, 100\]"):
        far_budget_threshold(passes, 120.0)


def test_far_reserve_lowers_the_threshold_of_a_model_above_the_budget():
    passes = np.linspace(0.99, 0.0, 100)  # 100 KPI PASS rows, 0.99 .. 0.0
    # the KPI defects' lowest score 0.795 flags 20 PASS rows (20 %): above a 10 % budget, so the budget
    # alone leaves the threshold where it is; a reserve of 0.5 moves the target to 1.5 x 20 = 30 %
    assert shipped_threshold(0.795, pass_scores=passes, far_budget_pct=10.0) == 0.795
    t = shipped_threshold(0.795, pass_scores=passes, far_budget_pct=10.0, far_reserve=0.5)
    assert (passes >= t).sum() == 30 and t < 0.795
    # a model well inside the budget: the reserve changes nothing (the budget is the larger target)
    assert shipped_threshold(0.975, pass_scores=passes, far_budget_pct=10.0, far_reserve=0.5) == \
        shipped_threshold(0.975, pass_scores=passes, far_budget_pct=10.0)
    # capped at 100 % (every PASS row flagged), off with the budget
    assert shipped_threshold(0.3, pass_scores=passes, far_budget_pct=10.0, far_reserve=5.0) == 0.0
    assert shipped_threshold(0.795, pass_scores=passes, far_budget_pct=None, far_reserve=0.5) == 0.795
    with pytest.raises(Exception, match="FAR reserve must be >= 0"):
        shipped_threshold(0.795, pass_scores=passes, far_budget_pct=10.0, far_reserve=-1.0)


def test_threshold_rule_reads_its_settings_from_one_place():
    from deftpipe.config import KpiConfig
    from deftpipe.metrics import ThresholdRule

    rule = ThresholdRule.of(KpiConfig())
    assert rule.settings() == {"threshold_margin": 0.0, "threshold_far_budget": 10.0, "threshold_far_reserve": 0.5}
    assert "10 % or 1.5 x its FAR" in str(rule)
    # a best_model.json / state written before the reserve existed keeps the rule it ran with
    old = ThresholdRule.of({"threshold_margin": 0.0, "threshold_far_budget": 10.0})
    assert old.far_reserve == 0.0 and "x its FAR" not in str(old)
    assert ThresholdRule.of(rule.settings()).settings() == rule.settings()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 1-epoch model of the tiny synthetic workspace, and that workspace."""
    from deftpipe.model import get_adapter
    from deftpipe.spec import load_spec

    ws = make_synthetic_workspace(tmp_path_factory.mktemp("audit") / "ws", size="tiny")
    spec = load_spec(ws / "specs" / "baseline_spec.yaml")
    spec.train.num_epochs, spec.train.num_threads = 1, 1
    result = get_adapter(spec).train(spec, ws / "train/base/training_set.csv", ws / "train/base/validation_set.csv",
                                     tmp_path_factory.mktemp("audit_model"))
    return ws, result.best_checkpoint


def test_audit_checkpoint_agrees_with_the_adapters_own_evaluation(model, tmp_path):
    from deftpipe.model import get_adapter

    ws, ckpt = model
    holdout = ws / "holdout" / "holdout_set.csv"
    a = audit_checkpoint(ckpt, 0.5, holdout, out_dir=tmp_path, seed=42)  # evaluate's bootstrap seed: train.seed
    m = get_adapter().evaluate(ckpt, holdout, threshold=0.5)
    for key in ("far_pct", "far_ci_low", "far_ci_high", "far_pct_at_99", "auroc", "escapes"):
        assert a[key] == pytest.approx(m[key]), key
    assert a["recall_pct"] == pytest.approx(100 * m["recall"])
    scored = pd.read_csv(tmp_path / "inference_holdout.csv")
    assert len(scored) == a["n_defects"] + a["n_pass"] and "score" in scored
    assert set(a["per_board"]) == {"holdout_board01", "holdout_board02"}
    assert sum(b["n_defects"] for b in a["per_board"].values()) == a["n_defects"]


def test_cli_audit_json_text_and_usage_errors(model):
    ws, ckpt = model
    holdout = ws / "holdout" / "holdout_set.csv"
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "--checkpoint", str(ckpt), "--threshold", "0.5", "--csv", str(holdout),
                            "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["threshold"] == 0.5 and data["n_defects"] > 0
    r = runner.invoke(app, ["audit", "--checkpoint", str(ckpt), "--threshold", "0.5", "--csv", str(holdout)])
    assert r.exit_code == 0 and "audit (holdout, never used for a choice)" in r.stdout
    assert "board holdout_board01" in r.stdout
    r = runner.invoke(app, ["audit", "--checkpoint", str(ckpt), "--threshold", "0.5"])
    assert r.exit_code == 2 and "--csv" in r.output
    r = runner.invoke(app, ["audit", str(ws / "results" / "run_x"), "--threshold", "0.5"])
    assert r.exit_code == 2


def test_audit_of_scores_in_hand_equals_the_audit_that_scores(model, tmp_path):
    """``audit_scored`` on the rows ``audit_checkpoint`` scored gives the same figures (no second pass)."""
    from deftpipe.audit._core import audit_scored
    from deftpipe.data import read_dataset

    ws, ckpt = model
    csv = ws / "holdout" / "holdout_set.csv"
    full = audit_checkpoint(ckpt, 0.3, csv, seed=1, out_dir=tmp_path)
    again = audit_scored(ckpt, 0.3, csv, read_dataset(full["inference_csv"]), seed=1,
                         inference_csv=full["inference_csv"])
    assert again == full
