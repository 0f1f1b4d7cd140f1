"""A full disk while writing a checkpoint, the training metrics and the loop state, and Ctrl-C in the
middle of training: one line naming the file (exit 1, or 130), nothing half-written (no temp file, no
empty output folder, no metrics.json saying "running"), the previous state intact, and a rerun that
finishes. The disk fills for real on a small tmpfs where root can mount one, else ENOSPC is injected
(``DEFTPIPE_FAULT_ENOSPC``, deftpipe._faults)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deftpipe.data import make_synthetic_workspace

from .conftest import CLI, env


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return make_synthetic_workspace(tmp_path_factory.mktemp("faults_disk") / "ws", seed=0, size="tiny")


def _train(ws: Path, out: Path, *extra: str) -> list[str]:
    return [*CLI, "model", "train", "--spec", str(ws / "specs" / "baseline_spec.yaml"),
            "--train", str(ws / "train" / "base" / "training_set.csv"),
            "--val", str(ws / "train" / "base" / "validation_set.csv"), "--out", str(out), *extra]


def _leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial"))] if folder.exists() else []


def test_disk_full_at_the_first_checkpoint_leaves_no_folder(ws, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(_train(ws, out, "--epochs", "1"), env=env(DEFTPIPE_FAULT_ENOSPC="model_epoch_*"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]  # (above it: the progress bars)
    assert last.startswith("error: cannot write ") and "model_epoch_001" in last, r.stderr
    assert "No space left on device" in last and r.stderr.count("error:") == 1
    assert not out.exists()  # created by this run, nothing finished in it: removed


def test_disk_full_at_a_later_checkpoint_keeps_the_finished_epoch(ws, tmp_path):
    from deftpipe.model._checkpoint import read_checkpoint

    out = tmp_path / "out"
    r = subprocess.run(_train(ws, out, "--epochs", "2"), env=env(DEFTPIPE_FAULT_ENOSPC="model_epoch_*@2"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "cannot write" in r.stderr and "model_epoch_002" in r.stderr, r.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "No space left" in metrics["error"]  # never "running" forever
    assert read_checkpoint(out / metrics["best_checkpoint"])["epoch"] == 1  # the finished epoch is intact
    assert _leftovers(out) == []


@contextlib.contextmanager
def _small_tmpfs(where: Path, size: str):
    where.mkdir(parents=True)
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                                   capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); the injected-ENOSPC tests cover the same path")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_really_full_tmpfs_while_writing_a_checkpoint(ws, tmp_path):
    with _small_tmpfs(tmp_path / "small", "48k") as small:
        out = small / "out"
        r = subprocess.run(_train(ws, out, "--epochs", "1"), env=env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 1, r.stderr[-2000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: cannot write ") and str(small) in last, r.stderr
        assert not out.exists() and _leftovers(small) == []


def test_disk_full_while_writing_the_loop_state_keeps_the_last_good_state(ws, tmp_path):
    from deftpipe.deft import load_state

    w = Path(shutil.copytree(ws, tmp_path / "ws", ignore=shutil.ignore_patterns("results")))
    cmd = [*CLI, "deft", "run", str(w), "--yes", "--quiet", "--max-iterations", "0"]
    r = subprocess.run(cmd, env=env(DEFTPIPE_FAULT_ENOSPC="deft_state.json@3"), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "cannot write" in r.stderr and "deft_state.json" in r.stderr and "Traceback" not in r.stderr
    run = next((w / "results").glob("run_*"))
    state = load_state(run)  # still valid: the previous version
    assert state["status"] != "complete"
    assert _leftovers(run) == []
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    state = load_state(run)
    assert state["status"] == "complete"
    done = [(e["iter"], e["stage"]) for e in state["events"] if e["status"] in ("ok", "done", "complete")]
    assert len(done) == len(set(done))  # no stage recorded twice


def test_ctrl_c_in_training_leaves_no_running_metrics(ws, tmp_path):
    out = tmp_path / "out"
    # A shell that starts CI in the background ignores SIGINT, and a child inherits that: give the trainer
    # the default handler a user's terminal gives it, or Ctrl-C is never delivered.
    proc = subprocess.Popen(_train(ws, out, "--epochs", "50"), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (out / "metrics.json").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before its first epoch was recorded"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: rerun the same command" in err and "Traceback" not in err
    assert json.loads((out / "metrics.json").read_text())["status"] == "interrupted"
    assert _leftovers(out) == []
