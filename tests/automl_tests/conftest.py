"""Fixtures of the automl tests: one tiny synthetic workspace, small spec files, a throw-away
PostgreSQL server (started from Debian's binaries as the ``postgres`` user, torn down after)."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from deftpipe.data import make_synthetic_workspace
from deftpipe.spec import load_spec

CLI = [sys.executable, "-c", "from deftpipe.cli import main; main()"]


def require_service(reason: str) -> None:
    """tests/conftest.py's require_service (loaded by path: several test folders have a conftest)."""
    spec = importlib.util.spec_from_file_location("_deftpipe_root_conftest", Path(__file__).parents[1] / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.require_service(reason)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", DEFTPIPE_NUM_THREADS="1")
    env.pop("DEFTPIPE_DEBUG", None)
    return env


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory) -> Path:
    return make_synthetic_workspace(tmp_path_factory.mktemp("automl") / "ws", seed=0, size="tiny")


@pytest.fixture(scope="session")
def ws_args(tiny_ws) -> dict:
    """The run_sweep keyword arguments every test shares (1 epoch, quiet)."""
    return {"spec": tiny_ws / "specs" / "baseline_spec.yaml",
            "train_csv": tiny_ws / "train" / "base" / "training_set.csv",
            "val_csv": tiny_ws / "train" / "base" / "validation_set.csv",
            "num_epochs": 1, "show_progress": False}


def write_variant(tiny_ws: Path, dest: Path, **optim) -> Path:
    """The workspace spec with ``train.optim`` overrides, as a YAML file (for --enqueue-spec)."""
    data = load_spec(tiny_ws / "specs" / "baseline_spec.yaml").model_dump(mode="json")
    data["train"]["optim"].update(optim)
    dest.write_text(yaml.safe_dump(data))
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server on a free loopback port, in a temporary folder; yields its URL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        require_service("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    pytest.importorskip("psycopg2")
    bindir = Path(found[-1]).parent
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            require_service("running as root but there is no 'postgres' OS user to run the server")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="deftpipe-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if owner:
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(sock, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "deftpipe", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        shutil.rmtree(root, ignore_errors=True)
        require_service(f"could not start a PostgreSQL server: {err}")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "deftpipe", "optuna")
        yield f"postgresql://deftpipe@127.0.0.1:{port}/optuna"
    finally:
        with contextlib.suppress(Exception):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
