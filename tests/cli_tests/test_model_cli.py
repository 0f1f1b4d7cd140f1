"""`deftpipe model ...` from the command line: outputs, JSON, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deftpipe.data import make_synthetic_workspace


def deftpipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deftpipe", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    ws = make_synthetic_workspace(tmp_path_factory.mktemp("cli") / "ws", size="tiny")
    out = ws.parent / "run"
    r = deftpipe("model", "train", "--spec", ws / "specs" / "baseline_spec.yaml",
                 "--train", ws / "train" / "base" / "training_set.csv",
                 "--val", ws / "train" / "base" / "validation_set.csv", "--out", out, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    return ws, out, r


def test_train_prints_the_best_checkpoint_and_writes_metrics(cli_run) -> None:
    ws, out, r = cli_run
    ckpt = next(out.glob("model_epoch_001_step_*.pth"))
    assert f"best: {ckpt}" in r.stdout.replace("\n", "") and "FAR@100%R" in r.stdout
    assert json.loads((out / "metrics.json").read_text())["status"] == "complete"


def test_evaluate_json_infer_embed(cli_run, tmp_path) -> None:
    ws, out, _ = cli_run
    ckpt = next(out.glob("model_epoch_*.pth"))
    kpi = ws / "kpi" / "testing_set.csv"
    r = deftpipe("model", "evaluate", "--checkpoint", ckpt, "--csv", kpi, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert 0.0 <= m["far_pct"] <= 100.0 and m["n_defects"] > 0
    assert deftpipe("model", "infer", "--checkpoint", ckpt, "--csv", kpi, "--out", tmp_path / "s.csv").returncode == 0
    assert "score" in (tmp_path / "s.csv").read_text().splitlines()[0]
    assert deftpipe("model", "embed", "--checkpoint", ckpt, "--csv", kpi, "--out", tmp_path / "e.npy").returncode == 0
    assert np.load(tmp_path / "e.npy").dtype == np.float32


def test_bad_checkpoint_is_one_line_exit_1(cli_run, tmp_path) -> None:
    ws, out, _ = cli_run
    bad = tmp_path / "bad.pth"
    bad.write_bytes(next(out.glob("model_epoch_*.pth")).read_bytes()[:100])
    r = deftpipe("model", "evaluate", "--checkpoint", bad, "--csv", ws / "kpi" / "testing_set.csv")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: checkpoint") and "truncated or corrupt" in r.stderr


def test_usage_error_exits_2_and_help_has_an_example() -> None:
    assert deftpipe("model", "train", "--spec").returncode == 2
    h = deftpipe("model", "evaluate", "--help")
    assert h.returncode == 0 and "Example: deftpipe model evaluate" in h.stdout


def test_missing_spec_is_a_clear_error(tmp_path: Path) -> None:
    r = deftpipe("model", "train", "--spec", tmp_path / "nope.yaml", "--train", "a.csv", "--val", "b.csv",
                 "--out", tmp_path / "o")
    assert r.returncode == 1 and "does not exist" in r.stderr and not (tmp_path / "o").exists()
