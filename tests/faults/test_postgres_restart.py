"""A PostgreSQL server restarted in the middle of a two-worker study: the processes fail cleanly or
carry on (no hang, no traceback, no password in any message), the study completes on rerun, and no
trial is counted twice (unique numbers and rec ids, none left RUNNING)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from deftpipe.automl import storage_url
from deftpipe.data import make_synthetic_workspace

from .conftest import CLI, env

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _require(reason: str) -> None:
    if os.environ.get("DEFTPIPE_REQUIRE_SERVICES"):
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


class Server:
    """A throw-away PostgreSQL server (Debian binaries, run as the ``postgres`` user when root)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            _require("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin")
        pytest.importorskip("psycopg2")
        self.bin = Path(found[-1]).parent
        self.as_user: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="deftpipe-pg-restart-"))
        self.sock = self.root / "sock"
        self.sock.mkdir()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            os.chown(self.sock, owner.pw_uid, owner.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", str(self.root / "data"), "-A", "md5", "-U", "deftpipe", "--no-sync",
                  "--pwfile", self._pwfile())
        self.start()
        env_pw = dict(os.environ, PGPASSWORD="s3cret-pw")
        subprocess.run([*self.as_user, str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                        "deftpipe", "optuna"], check=True, capture_output=True, timeout=120, env=env_pw)
        self.url = f"postgresql://deftpipe:s3cret-pw@127.0.0.1:{self.port}/optuna"

    def _pwfile(self) -> str:
        pw = self.root / "pw"
        pw.write_text("s3cret-pw\n")
        if self.as_user:
            owner = pwd.getpwnam("postgres")
            os.chown(pw, owner.pw_uid, owner.pw_gid)
        return str(pw)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def server():
    try:
        s = Server()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, KeyError) as err:
        _require(f"could not start a PostgreSQL server: {err}")
    yield s
    s.close()


def _running_halfway(url: str, study: str) -> bool:
    try:
        trials = optuna.load_study(study_name=study, storage=url).trials
    except Exception:  # noqa: BLE001 - not created yet
        return False
    return any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials)


def test_server_restart_mid_two_worker_study(server, tmp_path):
    ws = make_synthetic_workspace(tmp_path / "ws", seed=0, size="tiny")
    study, n = "pg-restart", 4
    url = storage_url(server.url, None)
    run = [*CLI, "automl", "run", "--spec", str(ws / "specs" / "baseline_spec.yaml"),
           "--train", str(ws / "train" / "base" / "training_set.csv"),
           "--val", str(ws / "train" / "base" / "validation_set.csv"), "--out", str(tmp_path / "sweep"),
           "--algorithm", "random", "--epochs", "2", "--heartbeat", "1", "--quiet", "--storage", server.url,
           "--study", study, "--max-recommendations", str(n)]
    main = subprocess.Popen(run, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not _running_halfway(url, study) and time.monotonic() < deadline and main.poll() is None:
        time.sleep(0.2)
    worker = subprocess.Popen([*CLI, "automl", "worker", "--storage", server.url, "--study", study, "--heartbeat", "1",
                               "--quiet"], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    server.stop()  # immediate: every connection is cut mid-transaction
    time.sleep(2)
    server.start()
    outs = [p.communicate(timeout=600) for p in (main, worker)]
    for p, (out, err) in zip((main, worker), outs, strict=True):
        assert "Traceback" not in err and "s3cret-pw" not in err + out, err[-2000:]
        if p.returncode != 0:
            assert p.returncode == 1 and err.strip().splitlines()[-1].startswith("error: "), err[-2000:]
    again = subprocess.run(run, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = optuna.load_study(study_name=study, storage=url).trials
    assert [t.number for t in trials] == list(range(len(trials)))  # none counted twice, none lost
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= n
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    import json

    recs = json.loads((tmp_path / "sweep" / "best_rec.json").read_text())["all_recs"]
    assert len({r["rec_id"] for r in recs}) == len(recs) == len(trials)
    for f in (tmp_path / "sweep").rglob("*.json"):
        assert "s3cret-pw" not in f.read_text()  # no secret in any artefact
