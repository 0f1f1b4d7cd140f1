"""The typed run records (issue 27 item 1) read the JSON the code writes and write it back unchanged.

Each record is read from a file written by the current code (a finished loop run of the session
fixture) or by the code before the records were typed (``data/*_v1_*.json``), and a round trip keeps
every key and value; keys a record does not name are kept, keys a newer version added are defaulted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deftpipe.audit import AuditSummary
from deftpipe.deft import BestModel, DeftState, IterationRecord, IterationStatus, RunStatus, Stage
from deftpipe.errors import StateError
from deftpipe.pipeline import PipelineRecord, PipelineState

DATA = Path(__file__).parent / "data"


def _raw(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _old(name: str, run: Path, ws: Path) -> dict:
    text = (DATA / name).read_text(encoding="utf-8")
    return json.loads(text.replace("{RUN}", str(run.resolve())).replace("{WS}", str(ws.resolve())))


def test_deft_state_written_by_the_loop_round_trips_every_key(finished_run):
    raw = _raw(finished_run / "deft_state.json")
    state = DeftState.load(finished_run)
    assert state.to_json() == raw
    assert state.status is RunStatus.COMPLETE and state.schema_version == 1
    base = state.iterations["baseline"]
    assert isinstance(base, IterationRecord) and base.far_pct == raw["iterations"]["baseline"]["far_pct"]
    assert isinstance(base.stage_completed, Stage) and isinstance(base.status, IterationStatus)
    assert [e.seq for e in state.events] == [e["seq"] for e in raw["events"]]


def test_best_model_written_by_the_loop_round_trips_every_key(finished_run):
    raw = _raw(finished_run / "best_model.json")
    best = BestModel.load(finished_run)
    assert best.to_json() == raw
    assert best.schema_version == 1 and raw["schema_version"] == 1
    assert best.best_iteration in raw["best_iteration"] and best.threshold == raw["threshold"]


def test_records_saved_again_are_the_same_file(finished_run, tmp_path):
    for name, record in (("deft_state.json", DeftState), ("best_model.json", BestModel)):
        record.load(finished_run).write(tmp_path / name)
        assert _raw(tmp_path / name) == _raw(finished_run / name), name


def test_deft_state_of_the_earlier_version_round_trips(tmp_path):
    run, ws = tmp_path / "ws" / "results" / "run_old", tmp_path / "ws"
    old = _old("deft_state_v1_killed_after_iter1_sdg.json", run, ws)
    state = DeftState.from_json(old, where="fixture")
    assert state.to_json() == old
    assert state.status is RunStatus.IN_PROGRESS and state.iterations["iter1"].stage_completed is Stage.SDG


def test_pipeline_state_of_the_earlier_version_round_trips_and_resumes(tmp_path):
    ws, run = tmp_path / "ws", tmp_path / "ws" / "results" / "run_20261206_011519"
    run.mkdir(parents=True)
    (ws / "pipeline.yaml").write_text("name: old\n", encoding="utf-8")
    old = _old("pipeline_state_v1_complete.json", run, ws)
    (run / "pipeline_state.json").write_text(json.dumps(old), encoding="utf-8")
    state = PipelineState.load(run)
    assert state.to_json() == old
    assert state.phases["phase1"].is_done() and state.schema_version == 1
    rec = PipelineRecord.load(run)
    rec.begin_attempt()
    rec.start("summary")
    rec.done("summary", "again", note={"kept": 1})
    again = _raw(run / "pipeline_state.json")
    assert set(old) <= set(again) and set(old["phases"]["phase1"]) <= set(again["phases"]["phase1"])
    assert again["phases"]["summary"]["note"] == {"kept": 1} and "t_start_unix" not in again["phases"]["summary"]
    assert again["events"][: len(old["events"])] == old["events"]


def test_unknown_keys_are_kept_and_new_keys_defaulted(tmp_path):
    best = BestModel.from_json({"best_iteration": "iter1", "far_pct": 5, "a_later_key": [1, 2]}, where="t")
    assert best.schema_version == 1 and best.audit is None and best.far_pct == 5
    assert best.to_json() == {"best_iteration": "iter1", "far_pct": 5, "a_later_key": [1, 2]}
    assert isinstance(best.to_json()["far_pct"], int)  # 5 stays 5, not 5.0
    best.save(tmp_path)
    assert _raw(tmp_path / "best_model.json") == {"schema_version": 1, "best_iteration": "iter1", "far_pct": 5,
                                                  "a_later_key": [1, 2]}
    it = IterationRecord.from_json({"status": "complete", "rca_gaps": "x.json"}, where="t")
    assert it.status is IterationStatus.COMPLETE and it.stage_completed is None and it.to_json()["rca_gaps"] == "x.json"


def test_a_record_of_the_wrong_types_is_refused_with_the_field(tmp_path):
    with pytest.raises(StateError, match=r"far_pct.*found 'low'"):
        BestModel.from_json({"far_pct": "low"}, where="best_model.json")
    with pytest.raises(StateError, match=r"phases.phase1.status"):
        PipelineState.from_json({"phases": {"phase1": {"status": "dancing"}}}, where="pipeline_state.json")
    (tmp_path / "best_model.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(StateError, match="not a best-model record"):
        BestModel.load(tmp_path)
    assert BestModel.load_if_any(tmp_path) is None and BestModel.read(tmp_path / "none") is None


def test_audit_summary_keeps_the_figures_it_does_not_name():
    raw = {"label": "audit", "done": True, "threshold": 0.25, "far_pct": 3.5, "escaped": [], "references": {}}
    summary = AuditSummary.from_json(raw, where="t")
    assert summary.done and summary.threshold == 0.25 and summary.to_json() == raw
