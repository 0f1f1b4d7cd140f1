"""kill -9 at 13 points of one three-phase run (phase boundaries and inside each phase) → every rerun
resumes, and the finished run has the full artefacts, no duplicate trials and no duplicate rows.

One sequence of real `deftpipe run` processes on a small, easily learnt workspace: each run dies at the next
point (the bridge's DEFTPIPE_FAULT_AT hook, the loop's DEFTPIPE_FAULT_AFTER hook, or a real SIGKILL
sent by this test once the Phase 1 sweep has a trial running), the next one resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from deftpipe._fs import run_lock
from deftpipe.data import identity_keys, read_dataset

from ._workspaces import make_easy_ws

pytestmark = pytest.mark.slow

#: (how the run is killed, where). "bridge" = DEFTPIPE_FAULT_AT, "loop" = DEFTPIPE_FAULT_AFTER,
#: "sigkill" = this test sends SIGKILL when the path glob (relative to the run folder) appears.
SEQUENCE = [
    ("bridge", "approved"),
    ("bridge", "phase1.start"),
    ("sigkill", "automl/phase1/trials/*/*.pth"),  # inside Phase 1: a trial is training
    ("bridge", "phase1.swept"),
    ("bridge", "handoff12.spec"),
    ("bridge", "handoff12.checkpoint"),
    ("bridge", "handoff12.preseeded"),
    ("loop", "baseline:evaluate"),  # inside Phase 2, after the baseline's KPI evaluation
    ("loop", "iter1:data_merge"),  # inside Phase 2, after the merged training CSV
    ("bridge", "phase2.done"),
    ("bridge", "phase3.swept"),  # inside Phase 3: sweep done, winner not evaluated
    ("bridge", "phase3.evaluated"),
    ("bridge", "phase3.recorded"),
    ("bridge", "summary"),
]


def _cmd(ws: Path) -> list[str]:
    return [sys.executable, "-c", "from deftpipe.cli import main; main()", "run", str(ws), "--yes"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DEFTPIPE_FAULT_AT", "DEFTPIPE_FAULT_AFTER")}
    env.update(OMP_NUM_THREADS="1", DEFTPIPE_NUM_THREADS="1", **extra)
    return env


def _run_until_killed(ws: Path, kind: str, where: str, log: Path) -> int:
    env = _env(**({"DEFTPIPE_FAULT_AT": where} if kind == "bridge" else
                  {"DEFTPIPE_FAULT_AFTER": where} if kind == "loop" else {}))
    with log.open("a") as f:
        f.write(f"\n===== {kind} {where}\n")
        f.flush()
        proc = subprocess.Popen(_cmd(ws), env=env, stdout=f, stderr=subprocess.STDOUT)
        if kind == "sigkill":
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if any((ws / "results").glob(f"run_*/{where}")):
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.05)
        return proc.wait(timeout=300)


@pytest.fixture
def fast_ws(tmp_path) -> Path:
    """The easily learnt binary task (a sweep on it never ends without a usable trial, so every kill
    point is reached on any machine), with per-job times given so restarts skip the dry run."""
    return make_easy_ws(tmp_path, multiclass=False)


def test_kill_9_at_every_point_then_resume(fast_ws, tmp_path):
    import optuna

    ws, log = fast_ws, tmp_path / "runs.log"
    for n, (kind, where) in enumerate(SEQUENCE):
        rc = _run_until_killed(ws, kind, where, log)
        assert rc in (137, -9), f"run {n} ({kind} {where}) ended with {rc}, not killed:\n{log.read_text()[-3000:]}"
        if n == 0:
            # A second run on the same results folder while one is active is refused.
            run_dir = next((ws / "results").glob("run_*"))
            with run_lock(run_dir, what="pipeline run", name=".pipeline.lock"):
                out = subprocess.run(_cmd(ws), env=_env(), capture_output=True, text=True, timeout=120)
            assert out.returncode == 1
            assert "another deftpipe pipeline run is already writing" in out.stderr
    out = subprocess.run(_cmd(ws), env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, log.read_text()[-2000:] + out.stdout[-3000:] + out.stderr[-3000:]

    runs = sorted((ws / "results").glob("run_*"))
    assert len(runs) == 1, "a resume must not start a new run folder"
    run = runs[0]
    record = json.loads((run / "pipeline_state.json").read_text())
    assert record["status"] == "complete"
    assert {p: v["status"] for p, v in record["phases"].items()} == dict.fromkeys(record["phases"], "done")
    assert record["attempts"] == len(SEQUENCE) + 1

    # The same final artefacts as an uninterrupted run.
    for rel in ("deft_state.json", "best_model.json", "best_model_inference_spec.yaml", "report.html",
                "pipeline_summary.md", "trajectory.json", "automl/phase1/best_rec.json",
                "automl/phase1/quality_check.json", "final_automl/best_rec.json", "final_automl/kpi_metrics.json",
                "final_automl/inference/inference_kpi.csv", "iter1/dataset/train_combined_iter1.csv"):
        assert (run / rel).is_file(), rel
    assert len(list((run / "baseline" / "train").glob("model_epoch_*_step_*.pth"))) == 1
    assert len(list((run / "final_automl" / "train").glob("model_epoch_*_step_*.pth"))) == 1
    assert (ws / "specs" / "baseline_spec_automl.yaml").is_file()
    state = json.loads((run / "deft_state.json").read_text())
    assert state["status"] == "complete"
    assert state["iterations"]["baseline"]["source"] == "automl_phase1"
    assert state["iterations"]["final_automl"]["source"] == "automl_phase3"
    assert set(state["iterations"]) == {"baseline", "iter1", "final_automl"}
    points = json.loads((run / "trajectory.json").read_text())["points"]
    assert [p["label"] for p in points] == ["phase1", "reference", "baseline", "iter1", "final_automl"]
    # The user's spec is Phase 1's first trial (here its retry: the SIGKILL hit trial_000); its
    # checkpoint is kept and scored on the KPI set.
    ref = record["phases"]["phase1"]["reference"]
    recs = {r["rec_id"]: r for r in json.loads((run / "automl/phase1/best_rec.json").read_text())["all_recs"]}
    assert recs["trial_000"]["enqueued_from"] and recs[ref["rec_id"]]["enqueued_from"]
    assert Path(ref["checkpoint"]).is_file() and ref["far_pct"] is not None
    assert Path(ref["checkpoint"]).parent == run / "reference" / "train"
    improvement = json.loads((run / "trajectory.json").read_text())["improvement"]
    assert improvement["reference_step"] == "user spec (KPI)"
    assert improvement["deliverable"] == json.loads((run / "best_model.json").read_text())["far_pct"]

    # No duplicate trials: each study holds exactly N complete trials, with unique numbers.
    for sub, n in (("automl/phase1", 2), ("final_automl", 2)):
        study = optuna.load_study(study_name=f"{run.name}-{'phase1' if 'phase1' in sub else 'phase3'}",
                                  storage=f"sqlite:///{run / sub / 'study.db'}")
        trials = study.get_trials(deepcopy=False)
        assert len({t.number for t in trials}) == len(trials)
        assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == n
        rec_ids = [r["rec_id"] for r in json.loads((run / sub / "best_rec.json").read_text())["all_recs"]]
        assert len(rec_ids) == len(set(rec_ids))

    # No duplicate rows: the combined training set is the base set plus unique new rows.
    combined = read_dataset(run / "iter1" / "dataset" / "train_combined_iter1.csv")
    base = read_dataset(ws / "train" / "base" / "training_set.csv")
    assert not identity_keys(combined).duplicated().any()
    assert set(identity_keys(base)) <= set(identity_keys(combined))
    # The loop committed each of its stages once (a resumed stage is not recorded twice).
    done = [(e["iter"], e["stage"]) for e in state["events"] if e["status"] in ("ok", "done", "complete")
            and e["iter"] in ("baseline", "iter1")]
    assert len(done) == len(set(done)), pd.Series(done).value_counts().head()
