"""Real sweeps on the tiny synthetic workspace (real training, real Optuna storage)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from deftpipe.automl import BestRec, RecStatus, run_sweep, validate_best_rec
from deftpipe.automl._select import win_margin
from deftpipe.errors import SweepError
from deftpipe.spec import load_spec

from .conftest import write_variant

# A space wide enough to hold a diverging (NaN) and a collapsing configuration.
WIDE_SPACE = {
    "train.optim.lr": {"type": "float", "low": 1e-6, "high": 10.0, "log": True},
    "train.optim.optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "train.optim.momentum": {"type": "float", "low": 0.0, "high": 0.99},
    "train.optim.weight_decay": {"type": "float", "low": 0.0, "high": 1.0},
    "pinned": {"train.optim.scheduler": "none"},
}


def _pth_dirs(out: Path) -> set[str]:
    return {p.parent.name for p in (out / "trials").glob("*/*.pth")}


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="deftpipe-automl", storage=f"sqlite:///{out / 'study.db'}").trials


def test_sweep_writes_best_rec_reruns_a_suspicious_winner_and_resumes_to_n(tmp_path, tiny_ws, ws_args):
    out = tmp_path / "sweep"
    first = [write_variant(tiny_ws, tmp_path / "a.yaml", optimizer="sgd", lr=1e-6, scheduler="none"),
             write_variant(tiny_ws, tmp_path / "b.yaml", optimizer="adamw", lr=1e-3, scheduler="none")]
    rec = run_sweep(**ws_args, out_dir=out, algorithm="random", max_recommendations=2, enqueue_spec=first,
                    keep_checkpoints=1, search_space=WIDE_SPACE, rerun_margin=0.0)
    assert json.loads((out / "best_rec.json").read_text()) == rec.to_json()
    assert BestRec.load(out) == rec
    validate_best_rec(rec.to_json())
    assert rec.metric_name == "far_pct" and rec.direction == "minimize"
    best = rec.best
    assert "num_epochs" not in json.dumps(best.specs) and "batch_size" not in json.dumps(best.specs)
    batch = load_spec(ws_args["spec"]).train.batch_size
    assert best.observed_budget == {"num_epochs": 1, "batch_size": batch, "epochs_run": 1}
    assert best.specs["train"]["optim"]["scheduler"] == "none"  # pinned values travel with the winner
    assert Path(best.checkpoint_uri).is_file() and best.checkpoint_epoch == 1
    assert [r.rec_id for r in rec.all_recs] == ["trial_000", "trial_001"]
    winner, runner = sorted(rec.all_recs, key=lambda r: r.score)
    assert winner.pred_counts and winner.duration > 0 and winner.status is RecStatus.COMPLETE
    # the winner beat the runner-up by more than the margin (0 here): re-run with a fresh seed
    assert winner.score < runner.score
    assert winner.rerun_seed == 42 + 1000 and winner.rerun_score is not None
    confirmed = winner.rerun_score <= runner.score
    assert best.rec_id == (winner.rec_id if confirmed else runner.rec_id)
    # retention: both trials were enqueued (the references a run is compared with), so both keep theirs
    assert _pth_dirs(out) == {best.rec_id, winner.rec_id, runner.rec_id}

    # resume: same command with a larger N continues the same study, no duplicate trial numbers
    rec2 = run_sweep(**ws_args, out_dir=out, algorithm="random", max_recommendations=3, enqueue_spec=first,
                     keep_checkpoints=1, search_space=WIDE_SPACE)
    numbers = [t.number for t in _trials(out)]
    assert numbers == [0, 1, 2]
    assert [r.specs for r in rec2.all_recs[:2]] == [r.specs for r in rec.all_recs]
    # a resume that changes what the experiment is, is refused
    with pytest.raises(SweepError, match=r"cannot resume study 'deftpipe-automl' with different settings "
                                         r"\(algorithm: study has 'random', this run has 'tpe'"):
        run_sweep(**ws_args, out_dir=out, algorithm="tpe", max_recommendations=3, search_space=WIDE_SPACE)
    with pytest.raises(SweepError, match=r"space_hash: study has"):
        run_sweep(**ws_args, out_dir=out, algorithm="random", max_recommendations=3)
    assert len(_trials(out)) == 3


def test_failed_and_collapsed_trials_are_recorded_and_the_sweep_goes_on(tmp_path, tiny_ws, ws_args):
    enqueue = [write_variant(tiny_ws, tmp_path / "nan.yaml", optimizer="sgd", lr=10.0, momentum=0.99,
                             weight_decay=1.0, scheduler="none"),
               write_variant(tiny_ws, tmp_path / "collapse.yaml", optimizer="adamw", lr=10.0, scheduler="none"),
               write_variant(tiny_ws, tmp_path / "ok.yaml", optimizer="sgd", lr=1e-6, scheduler="none")]
    rec = run_sweep(**ws_args, out_dir=tmp_path / "out", metric="val_loss", algorithm="random",
                    max_recommendations=3, enqueue_spec=enqueue, search_space=WIDE_SPACE)
    nan, collapsed, ok = rec.all_recs
    assert nan.status is RecStatus.FAILED and "TrainingError: training diverged" in nan.reason
    assert collapsed.status is RecStatus.REJECTED and collapsed.pred_counts["PASS"] == 0
    assert collapsed.reason.startswith("rejected: predictions collapsed to one class")
    assert ok.status is RecStatus.COMPLETE and rec.best.rec_id == "trial_002"
    assert rec.metric_name == "val_loss" and rec.best.score == pytest.approx(ok.score)


def test_a_sweep_with_no_usable_trial_says_why(tmp_path, tiny_ws, ws_args):
    nan = write_variant(tiny_ws, tmp_path / "nan.yaml", optimizer="sgd", lr=10.0, momentum=0.99, weight_decay=1.0,
                        scheduler="none")
    with pytest.raises(SweepError, match=r"no usable trial among 1 \(1 failed\); first reason: TrainingError"):
        run_sweep(**ws_args, out_dir=tmp_path / "out", algorithm="random", max_recommendations=1,
                  enqueue_spec=nan, search_space=WIDE_SPACE)


@pytest.mark.parametrize("algorithm", ["hyperband", "asha"])
def test_pruning_algorithms_stop_bad_trials_early(tmp_path, tiny_ws, ws_args, algorithm):
    good = write_variant(tiny_ws, tmp_path / "good.yaml", optimizer="adamw", lr=1e-3)
    bad = write_variant(tiny_ws, tmp_path / "bad.yaml", optimizer="adamw", lr=1.0)
    # Hyperband hashes (study name, trial number) into brackets and compares trials within a bracket
    # only; in study "prune-4" trials 0-2 share the bracket that stops after epoch 1.
    rec = run_sweep(**{**ws_args, "num_epochs": 3}, out_dir=tmp_path / "out", metric="val_loss",
                    study_name="prune-4", algorithm=algorithm, max_recommendations=3, enqueue_spec=[good, bad, bad],
                    search_space={k: v for k, v in WIDE_SPACE.items() if k != "pinned"})
    statuses = [r.status for r in rec.all_recs]
    assert statuses[0] is RecStatus.COMPLETE and RecStatus.PRUNED in statuses
    pruned = [r for r in rec.all_recs if r.status is RecStatus.PRUNED]
    assert all(r.epochs_run < 3 and r.reason.startswith("pruned after epoch") for r in pruned)
    assert sum(r.epochs_run for r in rec.all_recs) < 9  # fewer trial-epochs than the full budget
    assert rec.best.rec_id == "trial_000"


def test_enqueue_best_rec_and_warm_start(tmp_path, tiny_ws, ws_args):
    ok = write_variant(tiny_ws, tmp_path / "ok.yaml", optimizer="sgd", lr=1e-6, scheduler="none")  # no collapse
    first = run_sweep(**ws_args, out_dir=tmp_path / "p1", algorithm="tpe", max_recommendations=1, enqueue_spec=ok,
                      search_space=WIDE_SPACE)
    ckpt = first.best.checkpoint_uri
    rec = run_sweep(**ws_args, out_dir=tmp_path / "p3", algorithm="tpe", max_recommendations=1,
                    enqueue_spec=tmp_path / "p1" / "best_rec.json", pretrained=ckpt, search_space=WIDE_SPACE)
    assert rec.all_recs[0].specs == first.best.specs  # Phase 1's winner is trial 0
    used = json.loads((tmp_path / "p3" / "trials" / "trial_000" / "metrics.json").read_text())["spec"]
    assert used["train"]["pretrained_model_path"] == ckpt
    assert used["train"]["num_epochs"] == 1


def test_bad_arguments_are_refused_before_any_trial(tmp_path, ws_args):
    with pytest.raises(SweepError, match=r"unknown metric 'auroc'; valid: far_pct, val_loss"):
        run_sweep(**ws_args, out_dir=tmp_path / "o", metric="auroc")
    with pytest.raises(Exception, match=r"--pretrained checkpoint .*missing.pth does not exist"):
        run_sweep(**ws_args, out_dir=tmp_path / "o", pretrained=tmp_path / "missing.pth")
    with pytest.raises(Exception, match=r"--val .*nope.csv does not exist"):
        run_sweep(**{**ws_args, "val_csv": tmp_path / "nope.csv"}, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_rerun_margin_is_in_far_points_or_percent_of_the_runner_up_loss():
    assert win_margin("far_pct", 10.0, 16.0, "minimize") == pytest.approx(6.0)
    assert win_margin("val_loss", 0.5, 1.0, "minimize") == pytest.approx(50.0)
    assert win_margin("far_pct", 16.0, 10.0, "maximize") == pytest.approx(6.0)


def test_each_epoch_reports_the_figure_of_the_checkpoint_the_trial_keeps(tmp_path, tiny_ws, ws_args):
    spec = write_variant(tiny_ws, tmp_path / "s.yaml", optimizer="adamw", lr=1e-3)
    out = tmp_path / "out"
    run_sweep(**{**ws_args, "num_epochs": 3}, out_dir=out, algorithm="random", max_recommendations=1,
              enqueue_spec=spec, search_space={k: v for k, v in WIDE_SPACE.items() if k != "pinned"})
    history = json.loads((out / "trials" / "trial_000" / "metrics.json").read_text())["history"]
    reported = _trials(out)[0].intermediate_values
    assert sorted(reported) == [1, 2, 3] and [h["epoch"] for h in history] == [1, 2, 3]
    for h in history:  # the kept epoch's far_pct, which is the trial's score if it stops there
        assert reported[h["epoch"]] == pytest.approx(history[h["kept_epoch"] - 1]["far_pct"])
        assert h["kept_epoch"] <= h["epoch"]
