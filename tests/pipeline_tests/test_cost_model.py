"""The cost model: two-point fit, jobs priced per phase, a range at most 2x wide, calibration by the last run."""

from __future__ import annotations

import json

import pytest

from deftpipe.config import PipelineConfig
from deftpipe.pipeline import _cost_model as cm
from deftpipe.pipeline._dry_run import Rates, fit_line
from deftpipe.pipeline._estimate import calibration_path, load_ratios, record_actuals

RATES = Rates(s_train_row_epoch=0.001 / cm.JOB_OVERHEAD, s_train_job=0.5, s_infer_row=0.0001, s_infer_job=0.1, s_decode_pair=0.0002,
              s_csv_row=0.0)


def test_fit_line_separates_fixed_from_per_row_cost():
    assert fit_line((64, 256), (1.0 + 64 * 0.01, 1.0 + 256 * 0.01)) == pytest.approx((1.0, 0.01))
    assert fit_line((64, 256), (2.0, 1.0)) == (2.0, 0.0)  # noise never makes a negative cost
    assert fit_line((40, 40), (2.0, 2.0)) == (0.0, 0.05)  # one size only: all of it per row


def test_phases_price_the_jobs_the_run_does():
    cfg = PipelineConfig()
    cfg.automl.phase1.max_recommendations, cfg.automl.phase1.num_epochs = 4, 2
    cfg.automl.phase3.max_recommendations, cfg.automl.phase3.num_epochs = 3, 2
    cfg.deft.max_iterations, cfg.deft.num_epochs = 2, 2
    w = cm.Workload(train=1000, val=200, kpi=300, pool=500, cached=frozenset({"train", "val", "kpi", "pool"}))
    costs = cm.price(cfg, RATES, w)
    val_pass = 0.1 + 200 * 0.0001
    trial = 2 * (0.5 + 1000 * 0.001 + val_pass)
    untrained = 0.5 + 32 * 0.001 + val_pass  # its figures are its training's own validation pass
    reference = 0.1 + 300 * 0.0001  # the user's spec scored on the KPI set
    assert costs["phase1"].seconds == pytest.approx(4.5 * trial + untrained + reference)  # + half a re-run
    grow = cm.per_iteration_growth(cfg)
    rows3 = 1000 + cm.LOOP_SHARE * 2 * grow
    assert costs["phase3"].seconds == pytest.approx(3.5 * 2 * (0.5 + rows3 * 0.001 + val_pass) + 0.1 + 300 * 0.0001)
    # a cold cache adds the first decode of every split once
    cold = cm.price(cfg, RATES, cm.Workload(train=1000, val=200, kpi=300, pool=500))
    assert cold["phase1"].seconds - costs["phase1"].seconds == pytest.approx(1500 * 0.0002)  # train, val, KPI
    # the pool in the first iteration, which counts LOOP_SHARE
    assert cold["phase2"].seconds - costs["phase2"].seconds == pytest.approx(cm.LOOP_SHARE * 500 * 0.0002)
    # with flip TTA an inference job makes four passes per row, training's per-epoch validation one
    tta = cm.price(cfg, RATES, cm.Workload(train=1000, val=200, kpi=300, pool=500, cached=w.cached, score_passes=4))
    epochs = 4.5 * 2 + 1  # the trials' epochs (with half a re-run) + the untrained model's one
    assert costs["phase1"].seconds - tta["phase1"].seconds == pytest.approx(epochs * 200 * 0.0001 * 3 / 4)
    # more iterations cost more; Phase 1 off moves the baseline training into Phase 2
    cfg.automl.phase1.enabled = False
    off = cm.price(cfg, RATES, w)
    assert off["phase1"].seconds == 0 and off["phase2"].seconds > costs["phase2"].seconds + trial / 2


def test_trials_side_by_side_cost_a_shared_round_and_a_lone_last_trial():
    cfg = PipelineConfig()
    cfg.automl.phase1.max_recommendations, cfg.automl.phase3.max_recommendations = 4, 3
    cached = frozenset({"train", "val", "kpi", "pool"})
    one = cm.price(cfg, RATES, cm.Workload(train=1000, val=200, kpi=300, pool=500, cached=cached))
    two = cm.price(cfg, RATES, cm.Workload(train=1000, val=200, kpi=300, pool=500, cached=cached, workers=(2, 2)))
    assert cm.trials(cfg.automl.phase1, 0.0, 2) == pytest.approx(4 * cm.SHARED_TRIAL)  # two rounds of two
    assert cm.trials(cfg.automl.phase3, 0.0, 2) == pytest.approx(2 * cm.SHARED_TRIAL + 1)  # the third runs alone
    assert cm.trials(cfg.automl.phase3, 0.5, 2) == pytest.approx(2 * cm.SHARED_TRIAL + 1.5)  # the re-run: alone
    trial = 2 * (0.5 + 1000 * 0.001 + 0.1 + 200 * 0.0001)
    assert one["phase1"].seconds - two["phase1"].seconds == pytest.approx(4 * (1 - cm.SHARED_TRIAL) * trial)
    assert two["phase3"].seconds < one["phase3"].seconds and "(2 at a time)" in two["phase3"].parts[0]


def test_a_phase_range_spans_its_least_to_its_most_work():
    cfg = PipelineConfig()
    cfg.automl.phase1.max_recommendations = cfg.automl.phase3.max_recommendations = 3
    cfg.deft.max_iterations = 2
    w = cm.Workload(train=1000, val=200, kpi=300, pool=500, cached=frozenset({"train", "val", "kpi", "pool"}))
    costs = cm.price(cfg, RATES, w)
    sec = cm.ranges(costs, {})
    p1, p2 = costs["phase1"], costs["phase2"]
    trial = cfg.automl.phase1.num_epochs * (0.5 + 1000 * 0.001 + 0.1 + 200 * 0.0001)
    assert p1.most - p1.least == pytest.approx(trial)  # one fresh-seed re-run of the winner, or none
    assert sec["phase1_low"] == pytest.approx(cm.RATE_LOW * p1.least, abs=0.05)
    assert sec["phase1_high"] == pytest.approx(cm.RATE_HIGH * p1.most, abs=0.05)
    assert sec["phase1_high"] <= 2 * sec["phase1_low"]
    # the loop may stop at its baseline (no RCA) or run every iteration: Phase 2 spans both
    rca = 0.1 + 200 * 0.0001
    assert p2.least < p2.seconds < p2.most
    assert p2.most - p2.least > p2.full + rca  # every iteration, each adding all the rows it may
    assert sec["phase2_low"] < cm.RATE_LOW * p2.seconds and sec["phase2_high"] > cm.RATE_HIGH * p2.seconds
    # Phase 3 on the base set (no iteration) .. on every iteration's rows with a re-run
    assert costs["phase3"].least < costs["phase3"].seconds < costs["phase3"].most
    assert sec["total_high"] <= 2 * sec["total_low"]


def test_range_is_at_most_twice_wide_and_calibrated_by_the_last_run(tmp_path):
    costs = {name: cm.PhaseCost(v, least=v, most=v) for name, v in (("phase1", 100.0), ("phase2", 50.0),
                                                                      ("phase3", 30.0))}
    sec = cm.ranges(costs, {})
    assert sec["total"] == 180.0 and sec["total_high"] <= 2 * sec["total_low"]
    assert sec["total_low"] < 180.0 < sec["total_high"]
    est = {"seconds": {**sec, "model": {"phase1": 100.0, "phase2": 50.0, "phase3": 30.0}},
           "rates": {"source": "measured dry run"}}
    phases = {"phase1": {"status": "done", "duration_sec": 50.0}, "phase2": {"status": "done", "duration_sec": 55.0},
              "phase3": {"status": "skipped"}}
    out = record_actuals(tmp_path, tmp_path / "results" / "run_x", est, phases)
    assert [r["phase"] for r in out["phases"]] == ["phase1", "phase2"]
    assert out["phases"][0]["inside"] is False and out["phases"][1]["inside"] is True
    assert json.loads(calibration_path(tmp_path).read_text())["ratios"] == {"phase1": 0.5, "phase2": 1.1}
    calib = load_ratios(tmp_path)
    again = cm.ranges(costs, calib["ratios"])
    assert again["phase1"] == 50.0 and again["phase2"] == 55.0 and again["phase3"] == 30.0
    calibration_path(tmp_path).write_text("{not json")
    assert load_ratios(tmp_path)["ratios"] == {}
