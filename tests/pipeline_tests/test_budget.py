"""Wall-clock budgets: the pre-flight refuses a plan whose low estimate exceeds one; a run stops at them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from deftpipe.pipeline import preflight, run_pipeline
from deftpipe.pipeline._cost_model import RATE_LOW


def _config(ws, **budget):
    raw = yaml.safe_load((ws / "pipeline.yaml").read_text())
    raw["automl"]["phase1"]["per_trial_seconds"] = raw["automl"]["phase3"]["per_trial_seconds"] = 0.001
    raw["deft"]["per_iteration_seconds"] = 0.001
    raw["automl"]["phase1"]["max_recommendations"] = 3
    raw["deft"]["max_iterations"] = 2
    raw["kpi"]["operator"], raw["kpi"]["target"] = "<", 0.0  # never met: only the budget stops the loop
    raw["budget"] = budget
    (ws / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    return raw


def test_preflight_refuses_a_plan_over_budget(tiny_ws):
    raw = _config(tiny_ws, phase1_seconds=5.0, run_seconds=1000.0)
    raw["automl"]["phase1"]["per_trial_seconds"] = 10.0  # 3 trials x 10 s: the low end is RATE_LOW x 30 s
    (tiny_ws / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    report = preflight(tiny_ws)
    assert not report["ok"]
    low = f"{RATE_LOW * 30:g}"
    assert any(b.startswith(f"budget.phase1_seconds is 5 s but the estimate's low end is {low} s")
               for b in report["blockers"]), report["blockers"]
    items = {i["name"]: i for i in report["sections"][7]["items"]}
    assert items["budget.phase1_seconds"]["status"] == "BLOCKER" and items["budget.run_seconds"]["status"] is None


def test_budgets_stop_between_trials_and_iterations(tiny_ws):
    _config(tiny_ws, phase1_seconds=0.01, run_seconds=0.05)
    result = run_pipeline(tiny_ws, yes=True, show_progress=False)
    run = Path(result["results_dir"])
    phases = json.loads((run / "pipeline_state.json").read_text())["phases"]
    best1 = json.loads((run / "automl" / "phase1" / "best_rec.json").read_text())
    assert len([r for r in best1["all_recs"] if not r.get("retry_of")]) == 1  # no second trial started
    assert phases["phase1"]["stop_reason"] == "time budget (phase1 0.01 s / run 0.05 s) reached after 1 of 3 trials"
    state = json.loads((run / "deft_state.json").read_text())
    assert "iter1" not in state["iterations"] or not state["iterations"]["iter1"].get("stage_completed")
    assert phases["phase2"]["stop_reason"] == "time budget reached after baseline: no new iteration started"
    assert phases["phase3"]["status"] == "skipped" and "time budget spent" in phases["phase3"]["reason"]
    assert result["status"] == "complete"
    summary = (run / "pipeline_summary.md").read_text()
    assert "stopped early: time budget" in summary
    # the pre-flight's estimate travels with the run; the summary sets it beside each phase's time
    record = json.loads((run / "pipeline_state.json").read_text())
    est = record["estimate"]["seconds"]
    assert 0 <= est["total_low"] <= est["total_high"] <= 2 * est["total_low"]  # (tiny per-job times here)
    compared = {r["phase"]: r for r in record["estimate_vs_actual"]["phases"]}
    assert {"phase1", "phase2"} <= set(compared) and "phase3" not in compared  # Phase 3 was skipped
    assert compared["phase1"]["actual"] == phases["phase1"]["duration_sec"]
    assert "| phase | status | duration | estimate | note |" in summary
    assert f"| phase1 | done | {phases['phase1']['duration_sec']:.0f} s | {est['phase1_low']:.0f}–" in summary
