"""`deftpipe deft run` confirmation and `deftpipe status`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deftpipe.cli import app

runner = CliRunner()


def test_deft_run_without_yes_and_no_answer_writes_nothing(ws_copy):
    res = runner.invoke(app, ["deft", "run", str(ws_copy)], input="")
    assert res.exit_code == 1
    assert "aborted; nothing was written" in res.output
    assert not (ws_copy / "results").exists()


def test_deft_run_help_has_an_example():
    res = runner.invoke(app, ["deft", "run", "--help"])
    assert res.exit_code == 0 and "Example: deftpipe deft run" in res.output


def test_status_shows_the_latest_run(finished_run, tiny_ws):
    res = runner.invoke(app, ["status", str(tiny_ws)])
    assert res.exit_code == 0, res.output
    assert "DEFT loop: complete" in res.output and "last event" in res.output and "report.html" in res.output
    res = runner.invoke(app, ["status", str(tiny_ws), "--json"])
    info = json.loads(res.output)
    assert info["deft"]["iterations"]["iter1"]["stage_completed"] == "loop_stop"


def test_status_without_runs_is_a_clear_error(ws_copy):
    res = runner.invoke(app, ["status", str(ws_copy)])
    assert res.exit_code == 1
    assert "no runs in" in str(res.exception)


def test_status_shows_pipeline_phases(finished_run, tmp_path):
    import shutil

    run = tmp_path / "ws" / "results" / "run_20990101_000000"
    shutil.copytree(finished_run, run)
    state = json.loads((run / "deft_state.json").read_text())  # the copy names its own workspace and run
    text = (run / "deft_state.json").read_text().replace(str(finished_run), str(run))
    (run / "deft_state.json").write_text(text.replace(state["workspace"], str(tmp_path / "ws")))
    (run / "pipeline_state.json").write_text(json.dumps(
        {"status": "running", "phases": {"phase1": {"status": "done", "summary": "winner r3"},
                                         "phase2": {"status": "running"}}}))
    res = runner.invoke(app, ["status", str(tmp_path / "ws")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "pipeline: running" in res.output and "winner r3" in res.output and "phase2" in res.output
