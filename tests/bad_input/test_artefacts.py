"""Damaged checkpoints and state files, and a CSV evaluated from another workspace: one line, exit 1,
nothing written; a checkpoint never decides where another workspace's images are read from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch


def _kpi(ws: Path) -> Path:
    return ws / "kpi" / "testing_set.csv"


CHECKPOINTS = {
    "zero_bytes": (lambda p, good: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    "text_file": (lambda p, good: p.write_text("not a model\n"), r"cannot be read"),
    "truncated": (lambda p, good: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), r"cannot be read"),
    "foreign_dict": (lambda p, good: torch.save({"weights": torch.zeros(3)}, p), r"not a deftpipe model checkpoint"),
    "foreign_tensor": (lambda p, good: torch.save(torch.zeros(3), p), r"not a deftpipe model checkpoint"),
    "pickled_object": (lambda p, good: torch.save({"x": pd.DataFrame()}, p), r"cannot be read"),
    "missing": (lambda p, good: None, r"does not exist"),
}


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_bad_checkpoint_is_refused_by_evaluate(bad, template_ckpt, case):
    make, match = CHECKPOINTS[case]
    ckpt = bad.root / "model_epoch_001_step_007.pth"
    make(ckpt, template_ckpt)
    bad.refused("model", "evaluate", "--checkpoint", ckpt, "--csv", _kpi(bad.ws), match=match)


def _state_folder(bad) -> Path:
    run = bad.ws / "results" / "run_20260101_000000"
    run.mkdir(parents=True)
    return run


def _state(bad, text: str) -> None:
    (_state_folder(bad) / "deft_state.json").write_text(text)


GOOD = {"version": 1, "status": "in_progress", "iterations": {}, "events": [], "config": {}, "results_dir": "x"}
STATES = {
    "not_json": (lambda b: _state(b, "{\"version\": 1,"), r"is corrupt \(not valid JSON"),
    "zero_bytes": (lambda b: _state(b, ""), r"is corrupt"),
    "top_level_list": (lambda b: _state(b, "[]"), r"is not a deft state"),
    "iterations_is_list": (lambda b: _state(b, json.dumps({**GOOD, "iterations": []})),
                           r"wrong type \(iterations is list, expected dict"),
    "status_is_number": (lambda b: _state(b, json.dumps({**GOOD, "status": 3})), r"status is int, expected str"),
    "iteration_is_text": (lambda b: _state(b, json.dumps({**GOOD, "iterations": {"baseline": "done"}})),
                          r"iterations.baseline is str"),
    "events_hold_numbers": (lambda b: _state(b, json.dumps({**GOOD, "events": [1, 2]})), r"events holds a non-object"),
    "unknown_stage": (lambda b: _state(b, json.dumps({**GOOD, "iterations": {"iter1": {"stage_completed": "x" * 9000}}})),
                      r"is not a stage"),
    "future_version": (lambda b: _state(b, json.dumps({**GOOD, "version": 99})), r"state version 99"),
}


@pytest.mark.parametrize("case", STATES)
def test_bad_state_file_is_refused_by_status(bad, case):
    make, match = STATES[case]
    make(bad)
    r = bad.refused("status", bad.ws, match=match)
    assert len(r.err) < 1000


def test_pipeline_record_of_wrong_types_is_shown_not_crashed(bad):
    run = _state_folder(bad)
    (run / "pipeline_state.json").write_text(json.dumps({"status": ["x"], "phases": "phase1"}))
    r = bad.cli("status", bad.ws)
    assert r.code in (0, 1) and "Traceback" not in r.err and "internal error" not in r.err, r.err


def test_csv_of_another_workspace_reads_its_own_images(bad, template_ws, template_ckpt, tmp_path):
    """The reported case: evaluating OTHER_WS's CSV read the training workspace's images."""
    other = Path(shutil.copytree(template_ws, tmp_path / "other_ws", ignore=shutil.ignore_patterns(".deftpipe_cache")))
    df = pd.read_csv(_kpi(other), dtype=str)
    for _, row in df.iterrows():  # every test image becomes its golden: no visible defect left
        shutil.copy(other / "images" / row["golden_path"] / f"{row['object_name']}.png",
                    other / "images" / row["input_path"] / f"{row['object_name']}.png")
    scores = {}
    for name, csv, extra in (("train_ws", _kpi(template_ws), []), ("other_ws", _kpi(other), []),
                             ("other_ws_images_dir", _kpi(other), ["--images-dir", template_ws / "images"])):
        out = tmp_path / f"{name}.csv"
        r = bad.cli("model", "infer", "--checkpoint", template_ckpt, "--csv", csv, "--out", out, *extra)
        assert r.code == 0, r.err
        scores[name] = pd.read_csv(out)["score"].to_numpy()
    assert not (scores["other_ws"] == scores["train_ws"]).all()  # its own (changed) images were read
    assert (scores["other_ws_images_dir"] == scores["train_ws"]).all()  # --images-dir decides explicitly


def test_csv_of_a_workspace_without_images_is_refused(bad, template_ckpt, tmp_path):
    other = tmp_path / "other_ws"
    (other / "kpi").mkdir(parents=True)
    shutil.copy(bad.ws / "pipeline.yaml", other / "pipeline.yaml")
    shutil.copy(_kpi(bad.ws), _kpi(other))
    bad.refused("model", "evaluate", "--checkpoint", template_ckpt, "--csv", _kpi(other),
                match=r"images folder .*other_ws/images of the workspace holding .* does not exist")


@pytest.mark.parametrize("field,path", [("best_ckpt_path", "/etc/passwd"), ("train_spec", "../../../../etc/hosts")])
def test_state_path_outside_the_run_is_refused_on_resume(bad, field, path):
    run = _state_folder(bad)
    (run / ".lock").touch()  # the earlier run's lock file (resuming takes the lock again)
    state = {**GOOD, "results_dir": str(run.resolve()), "max_iterations": 1, "current_iteration": 0,
             "kpi": {"metric": "far_pct", "operator": "<=", "target": 1.0, "evaluator_command": None},
             "iterations": {"baseline": {"status": "in_progress", "stage_completed": "train",
                                         field: path if path.startswith("/") else str(run / path)}}}
    (run / "deft_state.json").write_text(json.dumps(state))
    bad.refused("deft", "run", bad.ws, "--yes", "--quiet", match=r"outside the run folder and its workspace",
                one_line=False)
