"""Shared fixtures: one tiny synthetic workspace and one finished 1-iteration run per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deftpipe.config import dump_config, load_config
from deftpipe.data import make_synthetic_workspace
from deftpipe.deft import run_loop


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory) -> Path:
    """The tiny workspace with the regression gate off: 1-epoch models are noisy, and the gate
    itself is tested on its own (test_gate_best.py)."""
    ws = make_synthetic_workspace(tmp_path_factory.mktemp("deft") / "ws", seed=0, size="tiny")
    cfg = load_config(ws)
    cfg.deft.regression_gate_pct = None
    dump_config(cfg, ws)
    return ws


@pytest.fixture(scope="session")
def finished_run(tiny_ws) -> Path:
    """An uninterrupted loop: baseline + 1 iteration, 1 epoch each."""
    results = tiny_ws / "results" / "run_full"
    run_loop(tiny_ws, results_dir=results, max_iterations=1, show_progress=False)
    return results


@pytest.fixture
def ws_copy(tiny_ws, tmp_path) -> Path:
    """A private copy of the tiny workspace (without its results) that a test may edit."""
    dest = tmp_path / "ws"
    shutil.copytree(tiny_ws, dest, ignore=shutil.ignore_patterns("results"))
    return dest


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy of the finished run whose state names the copy (its folder and artefacts), so
    stages redone on it never write into the shared ``finished_run``."""
    results = Path(shutil.copytree(finished_run, tmp_path / "run"))
    state = results / "deft_state.json"
    state.write_text(state.read_text().replace(str(finished_run), str(results)))
    return results


def _loop_run(results: Path, **kpi):
    from deftpipe.deft import load_state
    from deftpipe.deft._context import LoopContext
    from deftpipe.deft._progress import LoopProgress
    from deftpipe.deft._steps import Run

    state = load_state(results)
    state["kpi"].update(kpi)
    ctx = LoopContext.from_state(state, show_progress=False)
    return Run(ctx=ctx, state=state, progress=LoopProgress(enabled=False, max_iterations=state["max_iterations"]))


@pytest.fixture
def loop_run():
    """``loop_run(results, **kpi)``: a stage-by-stage :class:`Run` over the run in ``results``
    (``kpi``: overrides of the state's KPI settings)."""
    return _loop_run
