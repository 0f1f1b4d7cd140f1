"""Run state written before the typed records (deft RunStatus/Stage, the one clock) still resumes.

``data/deft_state_v1_killed_after_iter1_sdg.json`` is the ``deft_state.json`` that the deftpipe of
2026-12-06 (before the records were typed) left when killed right after ``iter1:sdg`` on the tiny
workspace; ``data/pipeline_state_v1_complete.json`` is a finished demo run's ``pipeline_state.json``
of the same version (timestamps as ``+00:00``). Paths are stored as ``{RUN}`` / ``{WS}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deftpipe.deft import RunStatus, Stage, load_state
from deftpipe.deft._runs import resumable
from deftpipe.pipeline import PipelineRecord

DATA = Path(__file__).parent / "data"


def _old(name: str, run: Path, ws: Path) -> str:
    return (DATA / name).read_text(encoding="utf-8").replace("{RUN}", str(run.resolve())).replace(
        "{WS}", str(ws.resolve()))


def _loop(ws: Path, results: Path, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "DEFTPIPE_FAULT_AFTER": fault, "DEFTPIPE_FAULT_IN": ""}
    code = ("import sys; from deftpipe.deft import run_loop; "
            "run_loop(sys.argv[1], results_dir=sys.argv[2], max_iterations=1, show_progress=False)")
    return subprocess.run([sys.executable, "-c", code, str(ws), str(results)], env=env, capture_output=True,
                          text=True, timeout=600)


def _stage_events(state):
    return [(e["iter"], e["stage"]) for e in state["events"] if e["iter"] != "run"]


def test_a_deft_state_written_by_the_earlier_version_resumes(ws_copy, finished_run):
    results = ws_copy / "results" / "run_old"
    # today's code makes the artefacts up to the same stage; the state that drives the resume is the old file
    assert _loop(ws_copy, results, "iter1:sdg").returncode == 137
    old = json.loads(_old("deft_state_v1_killed_after_iter1_sdg.json", results, ws_copy))
    missing = [p for it in old["iterations"].values() for k, p in it.items()
               if isinstance(p, str) and p.startswith(str(results.resolve())) and not Path(p).exists()]
    assert not missing, f"the fixture names files today's run did not make: {missing}"
    (results / "deft_state.json").write_text(json.dumps(old, indent=2), encoding="utf-8")

    state = load_state(results)
    assert RunStatus(state["status"]) is RunStatus.IN_PROGRESS and resumable(results)
    assert Stage(state["iterations"]["iter1"]["stage_completed"]) is Stage.SDG

    proc = _loop(ws_copy, results)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = load_state(results)
    assert state["status"] == RunStatus.COMPLETE
    assert state["events"][: len(old["events"])] == old["events"]  # the old history is kept as written
    assert _stage_events(state) == _stage_events(load_state(finished_run))  # each stage exactly once


def test_a_pipeline_record_written_by_the_earlier_version_loads_and_resumes(tmp_path):
    ws, run = tmp_path / "ws", tmp_path / "ws" / "results" / "run_20261206_011519"
    run.mkdir(parents=True)
    (ws / "pipeline.yaml").write_text("name: old\n", encoding="utf-8")
    text = _old("pipeline_state_v1_complete.json", run, ws)
    (run / "pipeline_state.json").write_text(text, encoding="utf-8")
    rec = PipelineRecord.load(run)
    assert rec.status == "complete" and all(rec.is_done(p) for p in rec.state.phases)
    created = rec.state.created_at
    rec.begin_attempt()  # what a rerun does first
    again = json.loads((run / "pipeline_state.json").read_text(encoding="utf-8"))
    assert again["created_at"] == created == json.loads(text)["created_at"]  # old timestamps stay as written
    assert again["updated_at"].endswith("Z") and again["attempts"] == json.loads(text)["attempts"] + 1
