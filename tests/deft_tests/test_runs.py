"""Which run folder `deftpipe deft run` resumes."""

from __future__ import annotations

import pytest

from deftpipe.config import PipelineConfig
from deftpipe.deft import _runs, _state
from deftpipe.errors import StateError


def _run(ws, name, status, hard=False):
    folder = ws / "results" / name
    state = _state.new_state(workspace=ws, results_dir=folder, config=PipelineConfig(),
                             spec_path=ws / "spec.yaml", max_iterations=1)
    state["status"], state["hard_stop"] = status, hard
    _state.save_state(folder, state)
    return folder


def test_latest_unfinished_run_is_resumed(tmp_path):
    assert _runs.latest_unfinished(tmp_path) is None
    _run(tmp_path, "run_20260101_000000", "in_progress")
    assert _runs.latest_unfinished(tmp_path).name == "run_20260101_000000"
    _run(tmp_path, "run_20260102_000000", "complete")
    assert _runs.latest_unfinished(tmp_path) is None  # the newest run is finished: start a new one
    _run(tmp_path, "run_20260103_000000", "failed")
    assert _runs.latest_unfinished(tmp_path).name == "run_20260103_000000"
    _run(tmp_path, "run_20260104_000000", "failed", hard=True)
    assert _runs.latest_unfinished(tmp_path) is None


def test_new_run_folders_never_collide(tmp_path):
    a, b = _runs.new_run_folder(tmp_path), _runs.new_run_folder(tmp_path)
    assert a != b and a.name.startswith("run_") and b.is_dir()


def test_corrupt_latest_state_is_an_error_not_skipped(tmp_path):
    folder = _run(tmp_path, "run_20260101_000000", "in_progress")
    (folder / "deft_state.json").write_text("{")
    with pytest.raises(StateError, match="is corrupt"):
        _runs.latest_unfinished(tmp_path)
