"""Progress when stderr is a log, not a terminal (nohup, CI, a scheduler): one line per trial with its
figure and time and an estimate of what is left, one per epoch of a long trial; ``progress.json`` in
the sweep folder, which ``deftpipe status`` shows as "trial n of N in progress" (issue 25)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from deftpipe._fs import run_lock
from deftpipe.automl import _console
from deftpipe.data import make_synthetic_workspace

CLI = [sys.executable, "-c", "from deftpipe.cli import main; main()"]


def test_a_sweep_logged_to_a_file_prints_a_line_per_trial(tmp_path):
    ws = make_synthetic_workspace(tmp_path / "ws", seed=1, size="tiny")
    out = tmp_path / "sweep"
    r = subprocess.run([*CLI, "automl", "run", "--spec", str(ws / "specs" / "baseline_spec.yaml"),
                        "--train", str(ws / "train" / "base" / "training_set.csv"),
                        "--val", str(ws / "train" / "base" / "validation_set.csv"), "--out", str(out),
                        "--max-recommendations", "2", "--epochs", "1", "--algorithm", "random"],
                       capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "DEFTPIPE_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ": trial " in ln]
    assert len(lines) == 2, r.stderr[-3000:]
    assert "trial 1/2 trial_000" in lines[0] and "complete" in lines[0] and "far_pct=" in lines[0]
    assert "left" in lines[0] and lines[1].rstrip().endswith("s")
    rec = json.loads((out / _console.PROGRESS_FILE).read_text())
    assert rec["done"] == 2 and rec["total"] == 2 and rec["running"] is None and rec["finished"] is True


def test_a_long_trial_prints_a_line_per_epoch(monkeypatch, capsys, tmp_path):
    from rich.console import Console

    monkeypatch.setattr(_console, "LONG_TRIAL_S", 0.0)
    shown = _console.SweepProgress(3, title="automl s", console=Console(file=sys.stderr, force_terminal=False))
    with _console.ProgressRecord(shown, tmp_path, 3, "automl s") as p:
        p.trial_start("rec_0000", 0)
        p.epoch("rec_0000", 1, 4, "far_pct=3.2")
        p.epoch("rec_0000", 2, 4, "far_pct=2.9")
        rec = json.loads((tmp_path / "progress.json").read_text())
        assert rec["running"] == "rec_0000" and rec["epoch"] == "2/4"
        p.trial_end("rec_0000", "complete", "far_pct=2.9", 12.0, 1)
    err = capsys.readouterr().err
    assert "automl s: rec_0000 epoch 1/4 far_pct=3.2" in err and "epoch 2/4 far_pct=2.9" in err
    assert "trial 1/3 rec_0000 complete · far_pct=2.9 · ~24s left · 12s" in err


def _run_with_sweep(ws: Path, data: dict) -> Path:
    run = ws / "results" / "run_20260101_000000"
    (run / "automl" / "phase1").mkdir(parents=True)
    (run / "pipeline_state.json").write_text(json.dumps({"status": "running", "phases": {
        "phase1": {"status": "running"}}}))
    (run / "automl" / "phase1" / "progress.json").write_text(json.dumps(data))
    return run


def test_status_shows_the_trial_in_progress_and_what_is_left(tmp_path):
    ws = tmp_path / "ws"
    run = _run_with_sweep(ws, {"title": "automl phase1", "total": 12, "done": 3, "running": "rec_0003",
                               "epoch": "2/5", "figure": "far_pct=3.1", "mean_trial_s": 45.0, "eta_s": 400.0,
                               "updated_at": time.time()})
    with run_lock(run, name=".pipeline.lock"):
        r = subprocess.run([*CLI, "status", str(ws)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert ("sweep automl/phase1: 3 of 12 trials done; trial 4 of 12 in progress (rec_0003, epoch 2/5, "
            "far_pct=3.1); 45s per trial, about 6m left") in text


def test_status_of_a_dead_sweep_claims_no_trial_in_progress(tmp_path):
    ws = tmp_path / "ws"
    _run_with_sweep(ws, {"total": 12, "done": 3, "running": "rec_0003", "eta_s": 400.0})
    r = subprocess.run([*CLI, "status", str(ws)], capture_output=True, text=True, timeout=120)
    text = " ".join(r.stdout.split())
    assert "3 of 12 trials done" in text and "in progress" not in text and "left" not in text
