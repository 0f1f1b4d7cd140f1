"""deft_state.json: atomic commits, events, corrupt files, missing artefacts, the run lock."""

from __future__ import annotations

import json

import pytest

from deftpipe._fs import run_lock
from deftpipe.config import PipelineConfig
from deftpipe.deft import _state, load_state, run_loop
from deftpipe.errors import StateError


def _fresh(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    results = ws / "results" / "run_x"
    state = _state.new_state(workspace=ws, results_dir=results, config=PipelineConfig(),
                             spec_path=ws / "specs" / "baseline_spec.yaml", max_iterations=2)
    _state.save_state(results, state)
    return ws, results, state


def test_commit_records_artefacts_and_appends_events(tmp_path):
    _, results, state = _fresh(tmp_path)
    ckpt = results / "baseline" / "train" / "model_epoch_001_step_001.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    _state.commit(results, state, label="baseline", stage="train", summary="trained", duration_sec=1.5,
                  artefacts={"best_ckpt_path": ckpt}, updates={"train_metric": 12.0})
    _state.commit(results, state, label="baseline", stage="inference", summary="scored", duration_sec=0.5)
    on_disk = load_state(results)
    assert on_disk["status"] == "in_progress"
    assert on_disk["iterations"]["baseline"]["stage_completed"] == "inference"
    assert on_disk["iterations"]["baseline"]["best_ckpt_path"] == str(ckpt)
    assert [e["seq"] for e in on_disk["events"]] == [1, 2]
    assert on_disk["events"][0]["duration_sec"] == 1.5
    assert not list(results.glob(".deft_state.json.*"))  # no temp file left behind


def test_commit_refuses_a_missing_artefact(tmp_path):
    _, results, state = _fresh(tmp_path)
    before = (results / "deft_state.json").read_bytes()
    with pytest.raises(StateError, match="claims artefact best_ckpt_path = .* which does not exist"):
        _state.commit(results, state, label="baseline", stage="train", summary="", duration_sec=0,
                      artefacts={"best_ckpt_path": results / "nope.pth"})
    assert (results / "deft_state.json").read_bytes() == before


def test_corrupt_state_is_a_clear_error_and_left_untouched(tmp_path):
    ws, results, _ = _fresh(tmp_path)
    path = results / "deft_state.json"
    path.write_text('{"version": 1, "status": "in_prog')
    before = path.read_bytes()
    with pytest.raises(StateError, match=r"is corrupt \(not valid JSON.*left untouched"):
        run_loop(ws, results_dir=results, show_progress=False)
    assert path.read_bytes() == before


def test_state_that_is_not_a_deft_state(tmp_path):
    _, results, _ = _fresh(tmp_path)
    (results / "deft_state.json").write_text(json.dumps({"version": 1}))
    with pytest.raises(StateError, match="is not a deft state .missing key"):
        load_state(results)


def test_missing_artefact_named_in_the_state(tmp_path):
    ws, results, state = _fresh(tmp_path)
    state["iterations"]["baseline"] = {"status": "in_progress", "stage_completed": "train",
                                       "best_ckpt_path": str(results / "baseline/train/gone.pth")}
    _state.save_state(results, state)
    with pytest.raises(StateError, match=r"iterations.baseline.best_ckpt_path names .*gone.pth, which does not exist"):
        run_loop(ws, results_dir=results, show_progress=False)


def test_a_copied_run_is_not_resumed_into_the_original(tmp_path):
    """The state's paths name the run it was written for: resuming a copy would write there."""
    import shutil

    ws, results, _ = _fresh(tmp_path)
    copy = shutil.copytree(results, ws / "results" / "run_copy")
    before = (results / "deft_state.json").read_bytes()
    with pytest.raises(StateError, match=r"belongs to the run in .*run_x \(it was copied or moved\)"):
        run_loop(ws, results_dir=copy, show_progress=False)
    assert (results / "deft_state.json").read_bytes() == before
    assert sorted(p.name for p in results.iterdir()) == ["deft_state.json"]  # nothing written in the original


def test_a_second_writer_is_refused_by_the_lock(tmp_path):
    ws, results, _ = _fresh(tmp_path)
    with run_lock(results), pytest.raises(StateError, match="another deftpipe DEFT loop is already writing"):
        run_loop(ws, results_dir=results, show_progress=False)


def test_unknown_stage_in_state(tmp_path):
    _, results, state = _fresh(tmp_path)
    state["iterations"]["iter1"] = {"status": "in_progress", "stage_completed": "dance"}
    _state.save_state(results, state)
    with pytest.raises(StateError, match="stage_completed = 'dance' is not a stage"):
        load_state(results)
