"""Local workers: a sweep that runs trials side by side on this host (deftpipe.automl._local_workers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from deftpipe.automl import run_sweep
from deftpipe.automl._local_workers import log_path, resolve

from .conftest import CLI, subprocess_env


def _intervals(db: Path) -> list[tuple[float, float]]:
    study = optuna.load_study(study_name="deftpipe-automl", storage=f"sqlite:///{db}")
    return [(t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in study.trials
            if t.datetime_complete is not None]


def test_two_local_workers_run_trials_side_by_side_and_stop_at_n(tmp_path, ws_args) -> None:
    out = tmp_path / "sweep"
    best = run_sweep(**{**ws_args, "num_epochs": 10}, out_dir=out, max_recommendations=3, local_workers=2,
                     rerun_margin=1e9)
    done = [r for r in best.all_recs if r.status == "complete"]
    assert len(best.all_recs) == 3 and len(done) == 3  # no fourth trial from two workers finishing together
    spans = sorted(_intervals(out / "study.db"))
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), spans  # two trials overlapped in time
    log = log_path(out, 1).read_text()
    ran = int(log.rsplit("local worker done: ", 1)[1].split()[0])
    assert 1 <= ran <= 2, log  # the worker ran trials of this study and exited when it held N


def test_auto_is_two_only_for_the_built_in_model_on_a_multi_core_cpu(monkeypatch) -> None:
    monkeypatch.delenv("DEFTPIPE_NUM_THREADS", raising=False)
    monkeypatch.setattr("deftpipe.automl._local_workers.host_cores", lambda: 2)
    big = 45_600  # DeepPCB's default: 22,800 rows x 2 epochs
    assert resolve("auto", trials=4, cpu_torch=True, row_epochs=big) == 2
    assert resolve("auto", trials=4, cpu_torch=True, row_epochs=6_400) == 1  # trials of seconds
    assert resolve("auto", trials=1, cpu_torch=True, row_epochs=big) == 1
    assert resolve("auto", trials=4, cpu_torch=False, row_epochs=big) == 1  # a GPU, TAO or a command backend
    assert resolve("auto", trials=4, cpu_torch=True, pinned_threads=2, row_epochs=big) == 1
    assert resolve(3, trials=2, cpu_torch=False) == 2  # an explicit count, capped by the trials
    monkeypatch.setenv("DEFTPIPE_NUM_THREADS", "1")
    assert resolve("auto", trials=4, cpu_torch=True, row_epochs=big) == 1
    monkeypatch.delenv("DEFTPIPE_NUM_THREADS")
    monkeypatch.setattr("deftpipe.automl._local_workers.host_cores", lambda: 1)
    assert resolve("auto", trials=4, cpu_torch=True, row_epochs=big) == 1


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_sweep_takes_its_local_worker_with_it_and_resumes_to_n(tmp_path, tiny_ws) -> None:
    out = tmp_path / "sweep"
    cmd = CLI + ["automl", "run", "--spec", str(tiny_ws / "specs" / "baseline_spec.yaml"),
                 "--train", str(tiny_ws / "train" / "base" / "training_set.csv"),
                 "--val", str(tiny_ws / "train" / "base" / "validation_set.csv"), "--out", str(out),
                 "--max-recommendations", "3", "--epochs", "10", "--local-workers", "2", "--heartbeat", "1",
                 "--rerun-margin", "1e9", "--quiet", "--json"]
    parent = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and parent.poll() is None:
        workers = [k for k in _children(parent.pid)
                   if b"_worker_process" in Path(f"/proc/{k}/cmdline").read_bytes()]
        if workers and log_path(out, 1).is_file() and (out / "trials").is_dir():
            break
        time.sleep(0.2)
    assert workers, parent.stderr.read().decode()[-2000:] if parent.poll() is not None else "no worker started"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    end = time.monotonic() + 15
    while time.monotonic() < end and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)  # the worker exited with the sweep that started it
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    recs = json.loads(done.stdout)["all_recs"]
    assert sum(r["status"] == "complete" for r in recs) == 3


@pytest.mark.parametrize("heartbeat", [0])
def test_without_heartbeats_a_sweep_runs_one_trial_at_a_time(tmp_path, ws_args, heartbeat) -> None:
    out = tmp_path / "sweep"
    run_sweep(**ws_args, out_dir=out, max_recommendations=2, local_workers=2, heartbeat_interval=heartbeat)
    assert not log_path(out, 1).exists()  # no worker could tell another's dead trial from a running one


def test_a_worker_without_a_deadline_keeps_starting_trials_after_the_first_is_done(tmp_path, ws_args) -> None:
    from dataclasses import replace

    from deftpipe.automl import run_worker
    from deftpipe.automl._settings import read_settings, write_settings

    out = tmp_path / "sweep"
    run_sweep(**ws_args, out_dir=out, max_recommendations=1)
    url = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="deftpipe-automl", storage=url)
    write_settings(study, replace(read_settings(study), max_recommendations=2))  # one more trial wanted
    summary = run_worker(url, "deftpipe-automl", show_progress=False)
    assert summary["trials_run_here"] == 1 and summary["done"] == 2  # no "time budget" without a budget
