"""deftpipe._malloc: freed memory stays in the process, so the next allocation of the same size does
not fault its pages back in; the user's own allocator settings win."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# In a fresh process: malloc and write 64 MB (a large activation), free it, malloc and write it again,
# and count the minor page faults of the second round. Through the C library itself: numpy would
# ask for huge pages, which fault 512 at a time.
PROBE = """
import ctypes, json, resource, sys
from deftpipe._malloc import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 64 << 20
block = libc.malloc(n); ctypes.memset(block, 1, n); libc.free(block)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(n); ctypes.memset(block, 1, n)
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_freed_memory_is_reused_without_page_faults():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    default = _probe("default")
    kept = _probe("keep")
    assert kept["kept"] is True
    assert default["faults"] > pages // 2  # glibc's default: the block went back to the OS and faults in again
    assert kept["faults"] < pages // 20  # kept: the same pages, already there


def test_the_users_own_allocator_settings_win():
    res = _probe("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert res["kept"] is False
    assert res["faults"] > (64 << 20) // os.sysconf("SC_PAGE_SIZE") // 2


def test_the_command_and_a_local_worker_keep_freed_memory(monkeypatch, capsys):
    import io

    import deftpipe.automl._worker_process as worker
    import deftpipe.cli as cli

    calls: list[str] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("deftpipe") or True)
    monkeypatch.setattr(sys, "argv", ["deftpipe", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    monkeypatch.setattr(worker, "keep_freed_memory", lambda: calls.append("worker") or True)
    monkeypatch.setattr(worker, "exit_with", lambda parent: None)
    monkeypatch.setattr(worker, "run_worker", lambda *a, **k: {"trials_run_here": 0})
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"parent": 1, "storage": "sqlite://", "study": "s",
                                                              "heartbeat": 60})))
    assert worker.main() == 0
    assert calls == ["deftpipe", "worker"]
