"""DEFTPIPE_RUNTIME_DIR pointed at a folder other programs use: a dead deftpipe worker's registration
is removed, nothing else is (issue 25: it used to delete every stale ``*.lock``)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

from deftpipe import _cores

HOLD = """
import sys, time
from deftpipe import _cores
with _cores.registered():
    open(sys.argv[1], "w").close()
    time.sleep(60)
"""


def _foreign(d):
    """Files another program keeps in the shared folder, none locked by anyone."""
    d.mkdir(parents=True, exist_ok=True)
    files = {"app.lock": b"", "12345-abc.lock": b"pid 12345\n", "deftpipe-worker-1-x.lock": b"someone else's\n",
             "deftpipe-worker-2-y.lock.bak": _cores.MAGIC, "note.txt": b"keep me"}
    for name, data in files.items():
        (d / name).write_bytes(data)
    return files


def test_a_killed_worker_is_forgotten_and_foreign_lock_files_survive(tmp_path, monkeypatch):
    reg = tmp_path / "shared"
    monkeypatch.setenv(_cores.ENV_DIR, str(reg))
    foreign = _foreign(reg)
    ready = tmp_path / "ready"
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(ready)], env={**os.environ})
    try:
        t0 = time.monotonic()
        while not ready.exists():
            assert time.monotonic() - t0 < 60
            time.sleep(0.05)
        assert _cores.live_workers() == 1
    finally:
        other.kill()
        other.wait()
    assert _cores.live_workers() == 0  # the SIGKILLed worker's registration: provably ours, removed
    assert sorted(p.name for p in reg.iterdir()) == sorted(foreign)
    for name, data in foreign.items():
        assert (reg / name).read_bytes() == data


def test_a_lock_held_by_another_program_is_not_counted_or_touched(tmp_path, monkeypatch):
    reg = tmp_path / "shared"
    monkeypatch.setenv(_cores.ENV_DIR, str(reg))
    reg.mkdir()
    held = reg / "deftpipe-worker-9-abc.lock"
    held.write_bytes(b"not ours")  # right name, wrong content
    with open(held, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with _cores.registered():
            assert _cores.live_workers() == 1  # only this process
        assert held.exists()
    assert _cores.live_workers() == 0 and held.exists()
