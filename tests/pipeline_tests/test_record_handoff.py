"""Pipeline record, run-folder choice and the hand-off helpers (no training needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from deftpipe._clock import new_run_folder
from deftpipe._faults import FAULT_POINTS
from deftpipe.config import load_config
from deftpipe.errors import CheckpointError, StateError
from deftpipe.pipeline import PipelineRecord, best_iteration, latest_unfinished, strip_budget
from deftpipe.pipeline._handoff import copy_checkpoint, final_training_csv, merge_winner_spec
from deftpipe.spec import load_spec


def test_record_phases_and_latest_unfinished(tmp_path):
    ws = tmp_path
    assert latest_unfinished(ws) is None
    run = new_run_folder(ws, create=False)
    assert run.name.startswith("run_") and not run.exists()
    rec = PipelineRecord.create(run, workspace=ws)
    rec.begin_attempt()
    rec.start("phase1")
    rec.done("phase1", summary="ok", winner="r1")
    assert latest_unfinished(ws) == run
    again = PipelineRecord.load(run)
    assert again.is_done("phase1") and again.phase("phase1")["winner"] == "r1"
    assert again.phase("phase2")["status"] == "pending"
    again.skip("phase3", "disabled")
    again.finish("complete")
    assert latest_unfinished(ws) is None
    second = new_run_folder(ws, create=False)
    second.mkdir(parents=True)
    assert second != run  # a clash within the same second gets a suffix
    assert [e["status"] for e in again.data["events"]] == ["started", "started", "done", "skipped", "complete"]


def test_corrupt_record_is_never_overwritten(tmp_path):
    run = tmp_path / "results" / "run_20260101_000000"
    run.mkdir(parents=True)
    (run / "pipeline_state.json").write_text("{not json")
    with pytest.raises(StateError, match="is not valid JSON .*never overwritten blindly"):
        PipelineRecord.load(run)
    assert (run / "pipeline_state.json").read_text() == "{not json"


def test_strip_budget_removes_epochs_at_any_depth():
    specs = {"train": {"num_epochs": 7, "optim": {"lr": 0.01}, "batch_size": 16}, "num_epochs": 3}
    assert strip_budget(specs) == {"train": {"optim": {"lr": 0.01}, "batch_size": 16}}
    assert strip_budget(specs, {"num_epochs": 7, "batch_size": 16}) == {"train": {"optim": {"lr": 0.01}}}


def test_merge_winner_spec_keeps_the_epoch_budget(tiny_ws_master, tmp_path):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws_master, ws)
    cfg = load_config(ws)
    before = load_spec(ws / "specs" / "baseline_spec.yaml")
    best = {"rec_id": "r3", "score": 1.5, "observed_budget": {"num_epochs": 9},
            "specs": {"train": {"num_epochs": 9, "optim": {"lr": 0.0042, "optimizer": "sgd"}}}}
    run_copy = merge_winner_spec(ws, cfg, best, tmp_path / "run" / "baseline_spec_automl.yaml")
    merged = load_spec(ws / "specs" / "baseline_spec_automl.yaml")
    assert merged.train.optim.lr == 0.0042 and merged.train.optim.optimizer == "sgd"
    assert merged.train.num_epochs == before.train.num_epochs  # budget never merged
    assert merged.images_dir == before.images_dir  # relative paths still resolve
    assert load_spec(run_copy).train.optim.lr == 0.0042
    raw = yaml.safe_load((ws / "specs" / "baseline_spec_automl.yaml").read_text())
    assert raw["train"].get("num_epochs") == yaml.safe_load((ws / "specs" / "baseline_spec.yaml").read_text())[
        "train"].get("num_epochs")
    with pytest.raises(Exception, match="unknown key 'train.optim.lrr'"):
        merge_winner_spec(ws, cfg, {"specs": {"train": {"optim": {"lrr": 1}}}}, tmp_path / "x.yaml")


def test_copy_checkpoint_verifies_and_is_idempotent(tmp_path):
    src = tmp_path / "trial" / "model_epoch_002_step_040.pth"
    src.parent.mkdir()
    src.write_bytes(b"\x80weights" * 100)
    dest = copy_checkpoint(src, tmp_path / "baseline" / "train", 2, 40)
    assert dest.name == "model_epoch_002_step_040.pth" and dest.read_bytes() == src.read_bytes()
    assert copy_checkpoint(src, tmp_path / "baseline" / "train", 2, 40) == dest
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is missing or empty"):
        copy_checkpoint(empty, tmp_path / "other", 1, 1)
    assert not (tmp_path / "other" / "model_epoch_001_step_001.pth").exists()


def test_best_iteration_never_final_automl_and_final_training_csv(tmp_path):
    csv1, csv2 = tmp_path / "train_combined_iter1.csv", tmp_path / "train_combined_iter2.csv"
    csv1.write_text("x\n")
    csv2.write_text("x\n")
    state = {"iterations": {
        "baseline": {"far_pct": 30.0, "best_ckpt_path": "b.pth"},
        "iter1": {"far_pct": 12.0, "best_ckpt_path": "i1.pth", "combined_training_csv": str(csv1)},
        "iter2": {"far_pct": 12.0, "best_ckpt_path": "i2.pth", "combined_training_csv": str(csv2)},
        "final_automl": {"far_pct": 1.0, "best_ckpt_path": "f.pth"}}}
    assert best_iteration(state)[0] == "iter1"  # lowest far_pct, ties to the earlier, never final_automl
    assert final_training_csv(state, tmp_path / "base.csv") == ("iter2", csv2)
    assert final_training_csv({"iterations": {"baseline": {}}}, tmp_path / "base.csv") == ("base",
                                                                                          tmp_path / "base.csv")
    with pytest.raises(StateError, match="no evaluated iteration"):
        best_iteration({"iterations": {"final_automl": {"far_pct": 1.0, "best_ckpt_path": "f.pth"}}})


def test_fault_point_exits_137_like_kill_9(tmp_path):
    code = textwrap.dedent("""
        from deftpipe._faults import fault_point
        fault_point("phase1.start")
        print("passed")
        fault_point("phase2.done")
        print("not reached")
    """)
    env = {**os.environ, "DEFTPIPE_FAULT_AT": "phase2.done"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 137 and out.stdout.strip() == "passed"
    assert len(FAULT_POINTS) >= 10 and len(set(FAULT_POINTS)) == len(FAULT_POINTS)
    assert json.loads(json.dumps(list(FAULT_POINTS)))[0] == "approved"
