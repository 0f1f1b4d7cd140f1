"""`deftpipe init` and `deftpipe data validate|stats|leakage` as a user runs them (exit codes, output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from deftpipe.cli import app
from deftpipe.errors import DataError

runner = CliRunner()
TRAIN, VAL = "train/base/training_set.csv", "train/base/validation_set.csv"
KPI, POOL = "kpi/testing_set.csv", "mining/mining_pool.csv"


def deftpipe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess: DeftpipeError -> one 'error:' line and exit 1."""
    return subprocess.run([sys.executable, "-c", "from deftpipe.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("cli") / "ws"
    r = runner.invoke(app, ["init", "--synthetic", str(dest), "--size", "tiny", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "workspace ready" in r.output and "pin-hole" in r.output
    return dest


def test_init_synthetic_then_validate_every_split(ws):
    for rel in (TRAIN, VAL, KPI, POOL):
        r = runner.invoke(app, ["data", "validate", str(ws / rel)])
        assert r.exit_code == 0, r.output
        assert "valid" in r.output
    r = runner.invoke(app, ["data", "validate", str(ws / KPI), "--json"])
    assert json.loads(r.stdout) == {"csv": str(ws / KPI), "rows": 100, "valid": True}


def test_init_refuses_a_non_empty_folder(ws):
    r = deftpipe("init", "--synthetic", ws, "--size", "tiny")
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: {ws} already exists and is not empty; choose a new workspace folder " \
                               "or remove the old one first"


@pytest.mark.parametrize("args,match", [
    (["init", "DIR"], "give exactly one of --synthetic, --from-deeppcb PATH or --from-tao SPEC"),
    (["init", "--synthetic", "DIR", "--size", "huge"], "--size must be small or medium"),
    (["init", "--synthetic", "DIR", "--kpi-groups", "1"], "apply to --from-deeppcb only"),
    (["init", "--synthetic", "DIR", "--align"], "--context/--align apply to --from-deeppcb only"),
    (["init", "--synthetic", "DIR", "--context", "1"], "--context/--align apply to --from-deeppcb only"),
    (["data", "leakage", "a.csv"], "give at least two CSVs"),
])
def test_usage_errors_exit_2(tmp_path, args, match):
    args = [str(tmp_path / "ws") if a == "DIR" else a for a in args]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 2
    assert match in r.output
    assert not (tmp_path / "ws").exists()


def test_validate_reports_bad_rows_on_stderr_exit_1(ws, tmp_path):
    df = pd.read_csv(ws / TRAIN, dtype=str)
    df.loc[3, "label"] = "scratchh"
    df.loc[5, "object_name"] = "missing_one"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    r = deftpipe("data", "validate", bad, "--images-dir", ws / "images")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"error: {bad}: 2 problem class(es)")
    assert "unknown label (1): row 4 label 'scratchh'" in r.stderr
    assert "missing image (2): row 6 test" in r.stderr
    assert "Traceback" not in r.stderr


def test_validate_missing_column_and_missing_csv(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("input_path,label,object_name\na,PASS,o\n")
    r = runner.invoke(app, ["data", "validate", str(csv), "--images-dir", str(tmp_path)])
    assert r.exit_code == 1 and isinstance(r.exception, DataError)
    assert "missing column(s) golden_path" in str(r.exception)
    r = runner.invoke(app, ["data", "validate", str(tmp_path / "nope.csv")])
    assert r.exit_code == 1 and "nope.csv does not exist" in str(r.exception)


def test_stats_json_and_table(ws):
    r = runner.invoke(app, ["data", "stats", str(ws / TRAIN), "--json"])
    assert r.exit_code == 0
    s = json.loads(r.stdout)
    assert s["rows"] == 200 and s["labels"]["PASS"] == 160 and s["pass_fail_ratio"] == 4.0
    assert len(s["boards"]) == 3
    r = runner.invoke(app, ["data", "stats", str(ws / TRAIN)])
    assert r.exit_code == 0 and "PASS:FAIL = 4.00:1" in r.output and "train_board01" in r.output


def test_leakage_clean_and_leaky(ws, tmp_path):
    r = runner.invoke(app, ["data", "leakage", *(str(ws / p) for p in (TRAIN, VAL, KPI, POOL))])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == "0 overlapping rows"
    leaky = ws / "kpi" / "leaky.csv"
    pd.concat([pd.read_csv(ws / KPI, dtype=str), pd.read_csv(ws / TRAIN, dtype=str).iloc[:3]]).to_csv(leaky, index=False)
    try:
        r = runner.invoke(app, ["data", "leakage", str(ws / TRAIN), str(leaky)])
        assert r.exit_code == 1
        assert r.output.strip().splitlines()[-1] == "3 overlapping rows"
        r = runner.invoke(app, ["data", "leakage", str(ws / TRAIN), str(leaky), "--json"])
        assert json.loads(r.stdout)["n_overlapping"] == 3
    finally:
        leaky.unlink()


def _fake_deeppcb(dest: Path) -> Path:
    rng = np.random.default_rng(0)
    for g in ("100", "200", "300", "400"):
        for sub in (g, f"{g}_not"):
            (dest / "PCBData" / f"group{g}" / sub).mkdir(parents=True)
        for i in range(2):
            temp = np.full((128, 128), 255, np.uint8)
            temp[:, 30:36] = 0
            temp[60:64, :] = 0
            temp[90:120, 80:110] = 0
            test = temp.copy()
            x, y = (int(v) for v in rng.integers(10, 100, size=2))
            test[y:y + 5, x:x + 5] = 128
            d = dest / "PCBData" / f"group{g}"
            Image.fromarray(temp).save(d / g / f"{g}{i}_temp.jpg")
            Image.fromarray(test).save(d / g / f"{g}{i}_test.jpg")
            (d / f"{g}_not" / f"{g}{i}.txt").write_text(f"{x - 1},{y - 1},{x + 6},{y + 6},{i + 1}")
    return dest


def test_init_from_deeppcb_prints_the_split_and_is_leak_free(tmp_path):
    src = _fake_deeppcb(tmp_path / "dp")
    r = deftpipe("init", "--from-deeppcb", src, tmp_path / "ws", "--crop-size", "32", "--kpi-groups", "300",
                 "--pass-ratio", "2")
    assert r.returncode == 0, r.stderr
    assert "--kpi-groups 300" in r.stderr and "workspace ready" in r.stdout
    r = deftpipe("data", "leakage", *(tmp_path / "ws" / p for p in (TRAIN, VAL, KPI, POOL)))
    assert r.returncode == 0 and r.stdout.strip().endswith("0 overlapping rows")


def test_init_from_deeppcb_missing_annotation_leaves_nothing(tmp_path):
    src = _fake_deeppcb(tmp_path / "dp")
    (src / "PCBData" / "group200" / "200_not" / "2001.txt").unlink()
    r = deftpipe("init", "--from-deeppcb", src, tmp_path / "ws")
    assert r.returncode == 1
    assert "missing annotation" in r.stderr and "2001.txt" in r.stderr
    assert not (tmp_path / "ws").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dp"]


def test_help_has_examples():
    for args in (["init", "--help"], ["data", "validate", "--help"], ["data", "stats", "--help"],
                 ["data", "leakage", "--help"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "xample" in r.output
