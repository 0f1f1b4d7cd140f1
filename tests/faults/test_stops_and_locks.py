"""Stops and refusals a user meets outside the kill chain: SIGTERM (a scheduler's stop) says how to
resume like Ctrl-C and leaves the same records; a folder another process holds is refused with advice
that fits the command; a read-only workspace is a pre-flight blocker, not a failure at the run's first
write; a full disk while writing an inference CSV leaves no file and the inputs intact (issue 25)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deftpipe._fs import run_lock
from deftpipe.data import make_synthetic_workspace

from .conftest import CLI, env

RESUME = "terminated (SIGTERM): rerun the same command to resume where it stopped"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return make_synthetic_workspace(tmp_path_factory.mktemp("faults_stops") / "ws", seed=0, size="tiny")


def _train(ws: Path, out: Path, *extra: str) -> list[str]:
    return [*CLI, "model", "train", "--spec", str(ws / "specs" / "baseline_spec.yaml"),
            "--train", str(ws / "train" / "base" / "training_set.csv"),
            "--val", str(ws / "train" / "base" / "validation_set.csv"), "--out", str(out), *extra]


def _wait(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"the process ended before {path.name} appeared"


def _leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial"))] if folder.exists() else []


def test_sigterm_in_training_says_how_to_resume_and_records_interrupted(ws, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_train(ws, out, "--epochs", "50"), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait(out / "metrics.json", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert RESUME in err and "Traceback" not in err
    assert json.loads((out / "metrics.json").read_text())["status"] == "interrupted"
    assert _leftovers(out) == []


def test_sigterm_before_the_first_epoch_leaves_no_folder(ws, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_train(ws, out, "--epochs", "50"), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait(out / ".lock", proc)  # the training holds its folder: it has started, no epoch is finished
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and RESUME in err, err[-2000:]
    assert not out.exists() or not (out / "metrics.json").exists() and not list(out.glob("*.pth"))


def test_sigterm_in_a_sweep_then_the_same_command_finishes_it(ws, tmp_path):
    out = tmp_path / "sweep"
    argv = [*CLI, "automl", "run", "--spec", str(ws / "specs" / "baseline_spec.yaml"),
            "--train", str(ws / "train" / "base" / "training_set.csv"),
            "--val", str(ws / "train" / "base" / "validation_set.csv"), "--out", str(out),
            "--max-recommendations", "2", "--epochs", "2", "--quiet"]
    proc = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait(out / "trials", proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and RESUME in err, err[-2000:]
    again = subprocess.run([*argv, "--json"], env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "best_rec.json").is_file()


def test_training_into_a_folder_another_training_holds_advises_another_out(ws, tmp_path):
    out = tmp_path / "held"
    with run_lock(out, what="training"):
        r = subprocess.run(_train(ws, out, "--epochs", "1"), env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: another deftpipe training is already writing") and "another --out folder" in line
    assert "--new" not in line
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_run_new_while_a_run_holds_the_workspace_does_not_advise_new(ws, tmp_path):
    w = Path(shutil.copytree(ws, tmp_path / "ws"))
    with run_lock(w / "results", what="pipeline run", name=".pipeline.lock"):
        r = subprocess.run([*CLI, "run", str(w), "--yes", "--new"], env=env(), capture_output=True, text=True,
                           timeout=600)
    assert r.returncode == 1, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert "another deftpipe pipeline run is already writing" in line and "with or without --new" in line
    assert "`deftpipe run WS --new`" not in line
    assert not list((w / "results").glob("run_*"))


def test_read_only_workspace_is_a_preflight_blocker(ws, tmp_path):
    src = Path(shutil.copytree(ws, tmp_path / "src"))
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (not root)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        r = subprocess.run([*CLI, "preflight", str(mnt), "--no-dry-run", "--json"], env=env(), capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 1, r.stderr[-2000:]
        blockers = json.loads(r.stdout)["blockers"]
        assert any("is read-only (it is on a read-only file system)" in b for b in blockers), blockers
        r = subprocess.run([*CLI, "run", str(mnt), "--yes"], env=env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and "read-only" in r.stderr + r.stdout
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_while_writing_an_inference_csv_leaves_no_file(ws, tmp_path):
    out = tmp_path / "m"
    r = subprocess.run(_train(ws, out, "--epochs", "1"), env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = next(out.glob("model_epoch_*.pth"))
    kpi = ws / "kpi" / "testing_set.csv"
    before = kpi.read_bytes()
    scores = tmp_path / "scores.csv"
    r = subprocess.run([*CLI, "model", "infer", "--checkpoint", str(ckpt), "--csv", str(kpi), "--out", str(scores)],
                       env=env(DEFTPIPE_FAULT_ENOSPC="scores.csv"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "cannot write" in r.stderr and "No space left" in r.stderr, r.stderr[-2000:]
    assert not scores.exists() and _leftovers(tmp_path) == [] and kpi.read_bytes() == before
