"""Two `deftpipe run` on one workspace: while one is alive, or started at the same instant, exactly
one runs; the other is refused with one line and creates no run folder."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pipeline_tests._workspaces import make_easy_ws

from .conftest import CLI, env

pytestmark = pytest.mark.slow
REFUSED = "another deftpipe pipeline run is already writing"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return make_easy_ws(tmp_path_factory.mktemp("concurrent"), multiclass=False)


def _ws(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "ws"))


def test_second_run_while_one_is_alive_is_refused(template, tmp_path):
    ws = _ws(template, tmp_path)
    first = subprocess.Popen([*CLI, "run", str(ws), "--yes"], env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list((ws / "results").glob("run_*/pipeline_state.json")) and time.monotonic() < deadline:
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        runs = sorted(p.name for p in (ws / "results").glob("run_*"))
        second = subprocess.run([*CLI, "run", str(ws), "--yes"], env=env(), capture_output=True, text=True,
                                timeout=300)
        alive = first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert alive, "the first run finished before the second was refused; the test proves nothing"
    assert second.returncode == 1, second.stderr[-2000:]
    assert second.stderr.strip().splitlines()[-1].startswith(f"error: {REFUSED}")
    assert sorted(p.name for p in (ws / "results").glob("run_*")) == runs  # no run folder created


def test_two_runs_started_together_one_is_refused(template, tmp_path):
    ws = _ws(template, tmp_path)
    procs = [subprocess.Popen([*CLI, "run", str(ws), "--yes", "--new"], env=env(DEFTPIPE_FAULT_AT="phase1.swept"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [1, 137], results  # one ran (until the hook stopped it), one was refused
    refused = next(err for rc, err in results if rc == 1)
    assert REFUSED in refused
    assert len(list((ws / "results").glob("run_*"))) == 1  # the refused one created no run folder
