"""Faults for real: a sweep process killed mid-trial and resumed; two workers on one PostgreSQL
study, one of them killed mid-trial. Heartbeats every second so a dead trial goes stale in ~3 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from deftpipe.automl import storage_url

from .conftest import CLI, subprocess_env

TIMEOUT_S = 240
#: Epochs per trial in these tests. Tiny trials take a fraction of a second per epoch since the speed
#: work, so a trial must be long for a poll to find it with most of its epochs left (CI once saw a whole
#: 3-trial sweep of 4-epoch trials end between two polls).
EPOCHS = 12


def _run_args(ws_args: dict, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [*CLI, "automl", "run", "--spec", str(ws_args["spec"]), "--train", str(ws_args["train_csv"]),
            "--val", str(ws_args["val_csv"]), "--out", str(out), "--algorithm", "random", "--epochs", str(epochs),
            "--heartbeat", "1", "--quiet", *extra]


def _wait_for(what: str, check, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            found = check()
        except (KeyError, ValueError, optuna.exceptions.OptunaError, Exception):  # noqa: BLE001 - not created yet
            found = None
        if found is not None:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _halfway(url: str, study: str, host_suffix: str) -> int | None:
    """A RUNNING trial (of the process whose host attr ends with ``host_suffix``) that has reported at
    least one epoch and has at least three of its :data:`EPOCHS` left, so the kill that follows this
    poll lands inside it (a poll that first saw the trial near its last epoch would race its end)."""
    for t in optuna.load_study(study_name=study, storage=url).trials:
        if (t.state == TrialState.RUNNING and 1 <= len(t.intermediate_values) <= EPOCHS - 3
                and str(t.user_attrs.get("host", "")).endswith(host_suffix)):
            return t.number
    return None


def _killed(url: str, study: str, candidate: int, host_suffix: str = "") -> int:
    """The trial the kill interrupted: the one seen halfway unless it finished just before the kill.

    (Read after the kill; another worker may already have failed it as stale, so not only RUNNING.)
    """
    trials = optuna.load_study(study_name=study, storage=url).trials
    if trials[candidate].state != TrialState.COMPLETE:
        return candidate
    running = [t.number for t in trials
               if t.state == TrialState.RUNNING and str(t.user_attrs.get("host", "")).endswith(host_suffix)]
    assert len(running) == 1, f"expected one trial left RUNNING by the kill, found {running}"
    return running[0]


def _assert_retried(trials: list[optuna.trial.FrozenTrial], killed: int, n: int) -> None:
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials))), "duplicated or missing trial numbers"
    assert Counter(t.state for t in trials)[TrialState.COMPLETE] >= n
    assert trials[killed].state == TrialState.FAIL and "fail_reason" not in trials[killed].user_attrs
    retries = [t for t in trials if killed in (t.system_attrs.get("retry_history") or [])]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed].params
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_killed_sweep_resumes_and_retries_the_killed_trial(tmp_path, ws_args):
    out = tmp_path / "out"
    args = _run_args(ws_args, out, "--max-recommendations", "3", epochs=EPOCHS)
    proc = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"sqlite:///{out / 'study.db'}"

    # kill once a trial has reported an epoch and has several left: the kill hits it mid-trial
    halfway = _wait_for("a trial halfway", lambda: _halfway(url, "deftpipe-automl", ""), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = _killed(url, "deftpipe-automl", halfway)
    res = subprocess.run([*args, "--json"], env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-2000:]
    best_rec = json.loads(res.stdout)
    assert best_rec == json.loads((out / "best_rec.json").read_text())
    trials = optuna.load_study(study_name="deftpipe-automl", storage=url).trials
    _assert_retried(trials, killed, 3)
    statuses = {r["rec_id"]: r["status"] for r in best_rec["all_recs"]}
    assert statuses[f"trial_{killed:03d}"] == "retried"
    assert sum(s == "complete" for s in statuses.values()) == 3


@pytest.mark.postgres
def test_two_workers_on_postgres_reach_n_after_one_is_killed(tmp_path, ws_args, postgres_url):
    # 6 trials of EPOCHS epochs: the worker starts after the study exists and must still find trials
    # left to claim
    study, n = "pg-two-workers", 6
    url = storage_url(postgres_url, None)
    env = subprocess_env()
    main = subprocess.Popen(_run_args(ws_args, tmp_path / "out", "--storage", postgres_url, "--study", study,
                                      "--max-recommendations", str(n), "--json", epochs=EPOCHS),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for("the study's settings", lambda: optuna.load_study(study_name=study, storage=url).user_attrs.get(
        "deftpipe_settings"), main)
    worker = subprocess.Popen([*CLI, "automl", "worker", "--storage", postgres_url, "--study", study,
                               "--heartbeat", "1", "--quiet"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)

    halfway = _wait_for("the worker halfway through a trial", lambda: _halfway(url, study, f":{worker.pid}"), worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = _killed(url, study, halfway, f":{worker.pid}")
    stdout, stderr = main.communicate(timeout=TIMEOUT_S)
    assert main.returncode == 0, stderr[-2000:]
    best_rec = json.loads(stdout)
    trials = optuna.load_study(study_name=study, storage=url).trials
    _assert_retried(trials, killed, n)
    assert best_rec["experiment_id"] == study and len(best_rec["all_recs"]) == len(trials)
    assert {t.user_attrs["host"] for t in trials} >= {f"{os.uname().nodename}:{worker.pid}"}
