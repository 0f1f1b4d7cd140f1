"""Fault injection for the fault tests (tests/faults/): the one hook module, inert unless one of its
environment variables is set. Never set them outside tests.

``DEFTPIPE_FAULT_AT=<point>[,<point>...]``
    :func:`fault_point` ends the process with ``os._exit(137)`` (no ``finally``, no atexit, no flushed
    buffers: for our files the same as ``kill -9``) when the pipeline reaches a named point
    (:data:`FAULT_POINTS`: every phase boundary and each step of a hand-off).
``DEFTPIPE_FAULT_AFTER=<stage>`` or ``<label>:<stage>``
    :func:`die_after_commit`: the DEFT loop dies right after that stage's commit.
``DEFTPIPE_FAULT_IN=<stage>`` or ``<label>:<stage>``
    :func:`die_mid_stage`: the loop dies *inside* that stage: as soon as the stage has put its first
    file (or temp file) in its folder, or, for a stage done before a file is seen, after it returns
    and before its commit. The stage is cut short and uncommitted; a resumed run clears and redoes it.
``DEFTPIPE_FAULT_ENOSPC=<file name>[@<n>]``
    :func:`disk_full`: the ``n``-th (default first) atomic write of a file of that name (``fnmatch``
    pattern, e.g. ``model_epoch_*``) fails with ``ENOSPC``, as on a full disk.

Kills inside an AutoML sweep are real ``SIGKILL``s sent by the tests once a trial has started.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

FAULT_ENV = "DEFTPIPE_FAULT_AT"
FAULT_AFTER = "DEFTPIPE_FAULT_AFTER"
FAULT_IN = "DEFTPIPE_FAULT_IN"
FAULT_ENOSPC = "DEFTPIPE_FAULT_ENOSPC"

#: Every point the pipeline checks, in the order a run reaches them.
FAULT_POINTS = (
    "approved",  # run folder and pipeline_state.json created, nothing run yet
    "phase1.start",  # Phase 1 marked running
    "phase1.swept",  # run_sweep returned, quality check not done
    "phase1.done",  # Phase 1 recorded done
    "handoff12.spec",  # baseline_spec_automl.yaml written
    "handoff12.checkpoint",  # winning checkpoint copied, state not pre-seeded
    "handoff12.preseeded",  # deft_state.json pre-seeded, hand-off not recorded
    "phase2.start",  # Phase 2 marked running
    "phase2.done",  # loop finished and recorded
    "phase3.start",  # Phase 3 marked running
    "phase3.swept",  # Phase 3 sweep returned, winner not evaluated on the KPI set
    "phase3.evaluated",  # KPI inference written, final_automl not recorded
    "phase3.recorded",  # final_automl recorded, best model not recomputed
    "phase3.done",  # Phase 3 recorded done
    "summary",  # trajectory and pipeline_summary.md written, run not marked complete
)

_writes: dict[str, int] = {}


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(137)


def fault_point(name: str) -> None:
    """Die with exit code 137 when ``name`` is listed in ``$DEFTPIPE_FAULT_AT``."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted and name in {p.strip() for p in wanted.split(",")}:
        _die()


def die_after_commit(label: str, stage: str) -> None:
    """Die with exit code 137 when ``$DEFTPIPE_FAULT_AFTER`` names this just-committed stage."""
    fault = os.environ.get(FAULT_AFTER)
    if fault and fault in (stage, f"{label}:{stage}"):
        os._exit(137)


def _has_file(folder: Path) -> bool:
    with contextlib.suppress(OSError):  # the stage is writing: entries come and go
        return any(p.is_file() for p in folder.rglob("*"))
    return False


@contextlib.contextmanager
def die_mid_stage(label: str, stage: str, folder: Path) -> Iterator[None]:
    """Around a loop stage writing ``folder``: die inside it when ``$DEFTPIPE_FAULT_IN`` names it."""
    fault = os.environ.get(FAULT_IN)
    if not fault or fault not in (stage, f"{label}:{stage}"):
        yield
        return

    def watch() -> None:
        while True:
            if _has_file(folder):
                os._exit(137)
            time.sleep(0.001)

    threading.Thread(target=watch, daemon=True).start()
    yield
    os._exit(137)  # done before a file was seen: die with the stage uncommitted


def disk_full(path: Path) -> None:
    """Raise ``OSError(ENOSPC)`` for the write of ``path`` that ``$DEFTPIPE_FAULT_ENOSPC`` names."""
    spec = os.environ.get(FAULT_ENOSPC)
    if not spec:
        return
    pattern, _, nth = spec.partition("@")
    if fnmatch.fnmatch(path.name, pattern):
        _writes[pattern] = _writes.get(pattern, 0) + 1
        if _writes[pattern] == int(nth or 1):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


__all__ = ["FAULT_AFTER", "FAULT_ENOSPC", "FAULT_ENV", "FAULT_IN", "FAULT_POINTS", "die_after_commit",
           "die_mid_stage", "disk_full", "fault_point"]
