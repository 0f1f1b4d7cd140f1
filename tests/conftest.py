"""Shared fixtures. Tests run on tiny self-generated workspaces; nothing here needs a GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEEPPCB = Path(os.environ.get("DEFTPIPE_DEEPPCB", SHARED / "deeppcb"))

# Under pytest-xdist each worker gets one core: no oversubscription on the 2-core CI box.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("DEFTPIPE_NUM_THREADS", "1")


def require_service(reason: str) -> None:
    """Skip locally when a service is missing, but fail in CI (DEFTPIPE_REQUIRE_SERVICES=1)."""
    if os.environ.get("DEFTPIPE_REQUIRE_SERVICES"):
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def deeppcb_path() -> Path:
    if not (DEEPPCB / "PCBData").is_dir():
        pytest.skip(f"DeepPCB not found at {DEEPPCB}")
    return DEEPPCB


#: Closing counts of the two systematic suites (tests/bad_input, tests/faults), printed after any run
#: that included them: "bad inputs: N tried, N handled" and "faults: N injected, N survived".
_SUITES = {"tests/bad_input/": ("bad inputs", "tried", "handled"), "tests/faults/": ("faults", "injected", "survived")}


def pytest_terminal_summary(terminalreporter) -> None:
    for prefix, (name, tried, ok) in _SUITES.items():
        reports = [r for key in ("passed", "failed", "error") for r in terminalreporter.stats.get(key, [])
                   if getattr(r, "when", "call") in ("call", "setup") and prefix in getattr(r, "nodeid", "")
                   and (r.when == "call" or r.outcome != "passed")]
        if reports:
            n_ok = sum(r.outcome == "passed" for r in reports)
            terminalreporter.write_line(f"{name}: {len(reports)} {tried}, {n_ok} {ok}")
