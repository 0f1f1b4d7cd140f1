"""KPI gate decisions and the best-model hand-off (loop best vs Phase 3)."""

from __future__ import annotations

import json
import shutil

from deftpipe.deft import load_state, write_best_model
from deftpipe.deft._context import LoopContext
from deftpipe.deft._loop import gate
from deftpipe.deft._progress import LoopProgress
from deftpipe.deft._steps import Run


def _run(finished_run, baseline, iter1, *, target=5.0, gate_pts=20.0, max_iterations=3, iter1_ci_low=None):
    state = load_state(finished_run)
    state["iterations"]["baseline"].update(far_pct=baseline, far_ci_low=baseline - 5, far_ci_high=baseline)
    state["iterations"]["iter1"].update(far_pct=iter1, far_ci_high=iter1,
                                        far_ci_low=iter1 - 5 if iter1_ci_low is None else iter1_ci_low)
    state["kpi"]["target"] = target
    state["config"]["regression_gate_pct"] = gate_pts
    state["max_iterations"] = max_iterations
    ctx = LoopContext.from_state(state, show_progress=False)
    return Run(ctx=ctx, state=state, progress=LoopProgress(enabled=False, max_iterations=max_iterations))


def test_gate(finished_run):
    status, reason, hard = gate(_run(finished_run, 10.0, 40.0), "iter1")
    assert (status, hard) == ("failed", True)
    assert reason == ("regression gate: iter1 FAR@100%R 40.0% is worse than the baseline 10.0% "
                      "by more than 20 points (beyond the bootstrap interval); "
                      "raise deft.regression_gate_pct or set it to null to continue")
    # a regression whose interval reaches back to the baseline is noise, not a hard stop
    assert gate(_run(finished_run, 10.0, 40.0, iter1_ci_low=9.0), "iter1") is None
    assert gate(_run(finished_run, 10.0, 4.0), "iter1") == ("complete", "KPI met: far_pct 4.0 <= 5", False)
    assert gate(_run(finished_run, 10.0, 8.0), "iter1") is None
    assert gate(_run(finished_run, 10.0, 8.0, max_iterations=1), "iter1")[1] == "max_iterations (1) reached"
    assert gate(_run(finished_run, 10.0, 29.0), "iter1") is None  # within the gate
    assert gate(_run(finished_run, 10.0, 90.0, gate_pts=None), "iter1") is None  # gate off


def test_warm_start_lr_scale_applies_to_retrains_only(finished_run):
    from deftpipe.deft._model_stages import effective_spec

    state = load_state(finished_run)
    state["config"]["warm_start_lr_scale"] = 0.3
    ctx = LoopContext.from_state(state, show_progress=False)
    lr = ctx.spec.train.optim.lr
    assert effective_spec(ctx, num_epochs=2, warm_start=True)["train"]["optim"]["lr"] == 0.3 * lr
    baseline = effective_spec(ctx, num_epochs=2)
    assert baseline["train"]["optim"]["lr"] == lr and baseline["train"]["num_epochs"] == 2
    del state["config"]["warm_start_lr_scale"]  # a state written before the knob existed: unchanged
    ctx = LoopContext.from_state(state, show_progress=False)
    assert effective_spec(ctx, num_epochs=2, warm_start=True)["train"]["optim"]["lr"] == lr


def test_shipped_threshold_spends_the_far_budget_on_the_kpi_set(finished_run, tmp_path):
    import numpy as np
    import pandas as pd

    from deftpipe.data import is_defect
    from deftpipe.metrics import far_budget_threshold

    results = tmp_path / "run"
    shutil.copytree(finished_run, results)
    state = load_state(results)
    best = write_best_model(results)
    kpi = pd.read_csv(best["inference_csv"])
    y = is_defect(kpi["label"]).to_numpy()
    passes = kpi["score"].to_numpy()[~y]
    t100 = best["kpi_threshold"]
    assert t100 == kpi["score"].to_numpy()[y].min()
    budget = state["kpi"]["threshold_far_budget"]
    assert budget == 10.0  # the default
    reserve = state["kpi"]["threshold_far_reserve"]
    assert reserve == 0.5 and best["threshold_far_reserve"] == reserve  # the default, recorded
    target = min(100.0, max(budget, (1 + reserve) * best["far_pct"]))  # a share: at most 100 %
    want = min(t100, far_budget_threshold(passes, target))
    assert best["threshold"] == want <= t100
    assert best["kpi_far_pct_at_threshold"] == 100.0 * np.mean(passes >= want)
    assert best["kpi_far_pct_at_threshold"] <= target
    assert "FAR reaches 10 % or 1.5 x its FAR" in best["threshold_rule"]
    # a model whose KPI defects all score above every PASS row: the budget lowers the threshold
    state["iterations"][best["best_iteration"]]["threshold"] = high = float(passes.max()) + 1e-3
    (results / "deft_state.json").write_text(json.dumps(state))
    lowered = write_best_model(results)
    assert lowered["kpi_threshold"] == high and lowered["threshold"] < high
    assert 0.0 < lowered["kpi_far_pct_at_threshold"] <= budget
    # the budget off (a run started with kpi.threshold_far_budget: null): the KPI threshold ships
    state["kpi"]["threshold_far_budget"] = None
    (results / "deft_state.json").write_text(json.dumps(state))
    off = write_best_model(results)
    assert off["threshold"] == high and off["kpi_far_pct_at_threshold"] == 0.0
