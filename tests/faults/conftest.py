"""The fault suite's machinery: real `deftpipe` processes killed at named points (the hooks of
:mod:`deftpipe._faults`, or a real SIGKILL sent here), a watcher that parses every state file while a
process runs (valid JSON at every instant), and chains computed once per session even under
pytest-xdist (the first worker to need a chain runs it; the others read its result)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

CLI = [sys.executable, "-c", "from deftpipe.cli import main; main()"]
HOOKS = ("DEFTPIPE_FAULT_AT", "DEFTPIPE_FAULT_AFTER", "DEFTPIPE_FAULT_IN", "DEFTPIPE_FAULT_ENOSPC")
#: State files the watcher parses while a run is alive (relative to the run folder).
STATE_GLOBS = ("*.json", "automl/phase1/*.json", "final_automl/*.json", "*/train/metrics.json")


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in HOOKS}
    e.update(OMP_NUM_THREADS="1", DEFTPIPE_NUM_THREADS="1", **extra)
    return e


def bad_json(folder: Path) -> list[str]:
    """State files under ``folder`` (a workspace) that do not parse right now."""
    bad = []
    for run in (folder / "results").glob("run_*"):
        for pattern in STATE_GLOBS:
            for p in run.glob(pattern):
                try:
                    json.loads(p.read_text(encoding="utf-8"))
                except FileNotFoundError:
                    continue  # replaced between glob and read: the rename is atomic
                except ValueError as e:
                    bad.append(f"{p.relative_to(folder)}: {e}")
    return bad


def run_watched(argv: list[str], *, env_: dict[str, str], ws: Path, log: Path,
                kill_when: Callable[[], bool] | None = None, while_alive: Callable[[], Any] | None = None,
                timeout: float = 600) -> dict[str, Any]:
    """Run ``argv``; parse the state files every 20 ms while it lives; SIGKILL it once ``kill_when()``
    (calling ``while_alive()`` first, e.g. to start a competing run). Returns what was seen."""
    seen: dict[str, Any] = {"checks": 0, "bad_json": [], "killed_by_test": False, "while_alive": None}
    with log.open("a") as f:
        f.write(f"\n===== {' '.join(argv[3:])}\n")
        f.flush()
        proc = subprocess.Popen(argv, env=env_, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            seen["bad_json"] += bad_json(ws)
            seen["checks"] += 1
            if kill_when is not None and kill_when():
                if while_alive is not None:
                    seen["while_alive"] = while_alive()
                proc.send_signal(signal.SIGKILL)
                seen["killed_by_test"] = True
                break
            time.sleep(0.02)
        if proc.poll() is None and not seen["killed_by_test"]:
            proc.kill()
        seen["rc"] = proc.wait(timeout=120)
    seen["bad_json_after"] = bad_json(ws)
    return seen


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """A folder every xdist worker of this session sees."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    d = root / "faults_shared"
    d.mkdir(exist_ok=True)
    return d


def computed_once(shared: Path, name: str, compute: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """``compute(folder)`` once per session (across workers); its JSON result is cached."""
    with FileLock(str(shared / f"{name}.lock")):
        cached = shared / f"{name}.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        result = json.loads(json.dumps(compute(shared / name)))  # the same types on every worker
        cached.write_text(json.dumps(result))
        return result
