"""A test hook that kills the pipeline at a named point, exactly like ``kill -9`` would.

``DEFTPIPE_FAULT_AT=<point>[,<point>...]`` makes :func:`fault_point` call ``os._exit(137)`` (no
``finally`` blocks, no atexit handlers, no flushed buffers — the same as SIGKILL for our files)
when the bridge reaches one of the named points. The points sit at every phase boundary and at each
step inside a hand-off, so the fault test can prove that a rerun resumes without redoing work.
Kills *inside* a sweep or the loop are done by the test itself (a real SIGKILL once a trial or a
stage has committed), because those phases belong to other parts.
"""

from __future__ import annotations

import os
import sys

FAULT_ENV = "DEFTPIPE_FAULT_AT"

#: Every point the bridge checks, in the order a run reaches them.
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


def fault_point(name: str) -> None:
    """Die with exit code 137 when ``name`` is listed in ``$DEFTPIPE_FAULT_AT`` (tests only)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    if name in {p.strip() for p in wanted.split(",")}:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(137)


__all__ = ["FAULT_ENV", "FAULT_POINTS", "fault_point"]
