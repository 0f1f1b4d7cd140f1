"""`deftpipe automl ...` through the real entry point: exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import CLI, subprocess_env


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=subprocess_env(), capture_output=True, text=True, timeout=120)


def _run(ws_args: dict, out, *extra: str) -> subprocess.CompletedProcess:
    return _cli("automl", "run", "--spec", str(ws_args["spec"]), "--train", str(ws_args["train_csv"]),
                "--val", str(ws_args["val_csv"]), "--out", str(out), *extra)


def test_help_has_an_example():
    for cmd in (["automl", "run", "--help"], ["automl", "worker", "--help"], ["automl", "--help"]):
        res = _cli(*cmd)
        assert res.returncode == 0 and "Example: deftpipe automl" in res.stdout


def test_user_errors_are_one_line_exit_1(tmp_path, ws_args):
    res = _run(ws_args, tmp_path / "o", "--algorithm", "sobol")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "error: unknown algorithm 'sobol'; valid: bayesian, tpe, random, grid, cmaes, hyperband, asha, bohb "
        "(pass one with --algorithm)"]
    space = tmp_path / "space.yaml"
    space.write_text("train.optim.lr: {type: float, low: 0.1, high: 0.01}\n")
    res = _run(ws_args, tmp_path / "o", "--search-space", str(space))
    assert res.returncode == 1 and "low (0.1) must be < high (0.01)" in res.stderr and "Traceback" not in res.stderr
    res = _cli("automl", "worker", "--storage", str(tmp_path / "none.db"), "--study", "nope")
    assert res.returncode == 1 and "error: no study 'nope'" in res.stderr


def test_usage_errors_exit_2(tmp_path):
    assert _cli("automl", "run", "--out", str(tmp_path)).returncode == 2  # --spec etc. missing
    assert _cli("automl", "worker", "--study", "x").returncode == 2


def test_secrets_in_storage_urls_are_never_printed(tmp_path):
    res = _cli("automl", "worker", "--storage", "postgresql://bob:hunter2@127.0.0.1:1/db", "--study", "s")
    assert res.returncode == 1 and "hunter2" not in res.stderr and "bob:***@" in res.stderr


def test_algorithms_lists_the_registry_as_json():
    res = _cli("automl", "algorithms", "--json")
    assert res.returncode == 0
    assert list(json.loads(res.stdout)) == ["bayesian", "tpe", "random", "grid", "cmaes", "hyperband", "asha", "bohb"]


def test_storage_urls_are_normalised_in_one_place(tmp_path):
    from deftpipe.automl import redact, storage_url
    from deftpipe.errors import SweepError

    assert storage_url(None, tmp_path) == f"sqlite:///{tmp_path / 'study.db'}"
    assert storage_url(str(tmp_path / "s.db"), None) == f"sqlite:///{tmp_path / 's.db'}"
    assert storage_url("postgresql://u@h/db", None) in ("postgresql+psycopg2://u@h/db", "postgresql+psycopg://u@h/db")
    assert storage_url("mysql+pymysql://u@h/db", None) == "mysql+pymysql://u@h/db"
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    with pytest.raises(SweepError, match=r"looks like an Optuna journal file; deftpipe needs a database storage"):
        storage_url(str(tmp_path / "journal.log"), None)
