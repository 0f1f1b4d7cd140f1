"""Do no harm at the Phase 1 hand-off: a Phase 1 winner that is worse than the user's spec trained
once (chosen on the noise of the validation set) is not handed to the loop; the user's spec is."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest
import yaml

from deftpipe.deft import USER_SPEC, load_state
from deftpipe.pipeline import _phases, run_pipeline

pytestmark = pytest.mark.slow


def _worst_trial_wins(monkeypatch) -> None:
    """Phase 1 'chooses on noise': the quality check's winner is the worst sampled trial."""
    real = _phases.quality_check

    def fake(best_rec, *, untrained):
        qc = real(best_rec, untrained=untrained)
        sampled = [r for r in best_rec.all_recs if not r.enqueued_from and r.score is not None
                   and r.checkpoint_uri and Path(r.checkpoint_uri).is_file()]
        qc["winner"] = {"observed_budget": best_rec.best.observed_budget,
                        **max(sampled, key=lambda r: r.score).to_json()}
        return qc

    monkeypatch.setattr(_phases, "quality_check", fake)


def test_a_worse_phase1_winner_hands_over_the_users_spec(tiny_ws, monkeypatch):
    spec = yaml.safe_load((tiny_ws / "specs" / "baseline_spec.yaml").read_text())
    lr = spec["train"]["optim"]["lr"]
    # the sampled trials learn nothing (lr 1e-9); the user's spec (enqueued first) keeps its own lr
    (tiny_ws / "space.yaml").write_text(yaml.safe_dump(
        {"train.optim.lr": {"type": "categorical", "choices": [1.0e-9, lr]}}))
    cfg = yaml.safe_load((tiny_ws / "pipeline.yaml").read_text())
    cfg["automl"]["phase1"].update(max_recommendations=3, num_epochs=2, search_space="space.yaml", seed=3)
    cfg["automl"]["phase3"].update(enabled=False)
    cfg["deft"].update(max_iterations=1, num_epochs=1)
    (tiny_ws / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    best_rec = {}
    _worst_trial_wins(monkeypatch)
    run = Path(run_pipeline(tiny_ws, yes=True, show_progress=False)["results_dir"])

    qc = json.loads((run / "automl" / "phase1" / "quality_check.json").read_text())
    best_rec = json.loads((run / "automl" / "phase1" / "best_rec.json").read_text())
    ref = qc["reference"]
    choice = qc["handoff_choice"]
    assert choice["incumbent"] == USER_SPEC and choice["replaces"] is False, choice
    assert choice["how"] == "paired bootstrap on the KPI rows"
    assert qc["winner"]["rec_id"] == ref["rec_id"] and qc["winner"]["user_spec"] is True
    assert any("the user's spec is handed to the loop" in n for n in qc["notes"])
    enq = next(r for r in best_rec["all_recs"] if r.get("enqueued_from"))
    assert qc["winner"]["rec_id"] == enq["rec_id"]
    # the loop's baseline is the user's spec's checkpoint, byte for byte
    state = load_state(run)
    base = Path(state["iterations"]["baseline"]["best_ckpt_path"])
    assert filecmp.cmp(base, ref["checkpoint"], shallow=False)
    assert state[USER_SPEC]["rec_id"] == ref["rec_id"]
    # the user's spec's KPI scores were computed once: the loop's baseline inference is a copy of them
    base_inf = Path(state["iterations"]["baseline"]["inference_csv"])
    assert filecmp.cmp(base_inf, ref["inference_csv"], shallow=False)
    assert [e["stage"] for e in state["events"] if e["iter"] == "baseline"][:2] == ["train", "inference"]
    record = json.loads((run / "pipeline_state.json").read_text())
    assert record["phases"]["handoff12"]["user_spec_handed_over"] is True
    assert record["phases"]["phase1"]["winner"] == ref["rec_id"]
    # the deliverable is never the rejected winner, and the summary says what was handed over
    bm = json.loads((run / "best_model.json").read_text())
    assert bm["best_iteration"] in ("baseline", "iter1", USER_SPEC)
    assert "the user's spec is handed to the loop" in (run / "pipeline_summary.md").read_text()
    # the audit: when the deliverable is the user's spec's model, the holdout is scored once and both are
    # audited from those scores; otherwise the user's spec is scored on the holdout itself
    audit = json.loads((run / "audit" / "audit.json").read_text())
    mine, user = audit["deliverable"], audit["references"]["user_spec"]
    if filecmp.cmp(bm["checkpoint"], ref["checkpoint"], shallow=False):
        assert not (run / "audit" / "user_spec" / "inference_holdout.csv").exists()
        assert user["inference_csv"] == mine["inference_csv"]
        assert (user["far_pct"], user["auroc"]) == (mine["far_pct"], mine["auroc"])
    else:
        assert Path(user["inference_csv"]).is_file() and user["inference_csv"] != mine["inference_csv"]
