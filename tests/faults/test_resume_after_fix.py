"""A run that failed on a configuration error resumes once the configuration is fixed (it used to
repeat the old error from its settings snapshot forever), keeping the stages it finished."""

from __future__ import annotations

import shutil
import subprocess
import sys

import yaml

from deftpipe.data import make_synthetic_workspace
from deftpipe.deft import load_state

from .conftest import CLI, env


def test_failed_evaluator_command_resumes_after_the_fix(tmp_path_factory, tmp_path):
    ws = make_synthetic_workspace(tmp_path / "ws", seed=0, size="tiny")
    cfg = yaml.safe_load((ws / "pipeline.yaml").read_text())
    cfg["kpi"]["evaluator_command"] = [sys.executable, "-c", "import sys; sys.exit(3)"]  # fails at evaluate
    (ws / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [*CLI, "deft", "run", str(ws), "--yes", "--quiet", "--max-iterations", "0"]
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 1 and "kpi.evaluator_command" in r.stderr, r.stderr[-2000:]
    run = next((ws / "results").glob("run_*"))
    assert load_state(run)["status"] == "failed"

    cfg["kpi"]["evaluator_command"] = None  # the fix
    (ws / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (ws / "results").glob("run_*")) == [run.name]  # the same run, resumed
    state = load_state(run)
    assert state["status"] == "complete" and state["kpi"]["evaluator_command"] is None
    trains = [e for e in state["events"] if (e["iter"], e["stage"]) == ("baseline", "train") and e["status"] == "ok"]
    assert len(trains) == 1  # the trained baseline was kept
    assert any("kpi.evaluator_command" in e["summary"] for e in state["events"] if e["stage"] == "resume")
    shutil.rmtree(ws, ignore_errors=True)
