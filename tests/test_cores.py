"""The cores rule: an explicit request, else $DEFTPIPE_NUM_THREADS, else cores ÷ live deftpipe workers."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from deftpipe import _cores

HOLD = """
import sys, time
from deftpipe import _cores
with _cores.registered():
    open(sys.argv[1], "w").close()
    time.sleep(60)
"""


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv(_cores.ENV_DIR, str(tmp_path / "reg"))
    monkeypatch.delenv(_cores.ENV_THREADS, raising=False)
    monkeypatch.setattr(_cores, "host_cores", lambda: 4)
    return tmp_path / "reg"


def _wait_for(path, timeout=30.0):
    t0 = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t0 < timeout, "the helper process never registered"
        time.sleep(0.05)


def test_share_counts_live_workers_and_forgets_dead_ones(registry, tmp_path):
    assert _cores.fair_threads() == 4  # nobody registered: every core
    with _cores.registered():
        assert _cores.live_workers() == 1 and _cores.fair_threads() == 4
        ready = tmp_path / "ready"
        other = subprocess.Popen([sys.executable, "-c", HOLD, str(ready)])
        try:
            _wait_for(ready)
            assert _cores.live_workers() == 2 and _cores.fair_threads() == 2
            with _cores.registered():  # nested: still one worker for this process
                assert _cores.live_workers() == 2
        finally:
            other.kill()
            other.wait()
        assert _cores.live_workers() == 1  # the killed process's file is stale: removed
        assert len(list(registry.glob("*.lock"))) == 1
    assert _cores.live_workers() == 0 and not list(registry.glob("*"))


def test_request_and_environment_win(registry, monkeypatch):
    assert _cores.fair_threads(3) == 3
    monkeypatch.setenv(_cores.ENV_THREADS, "1")
    assert _cores.fair_threads() == 1 and _cores.fair_threads(2) == 2


def test_torch_threads_takes_the_share(registry, monkeypatch):
    import torch

    from deftpipe.model._train import torch_threads

    monkeypatch.setattr(_cores, "host_cores", lambda: 2)
    before = torch.get_num_threads()
    with torch_threads() as n:
        assert n == 2 and torch.get_num_threads() == 2 and _cores.live_workers() == 1
    assert torch.get_num_threads() == before and _cores.live_workers() == 0
