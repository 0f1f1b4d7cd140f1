"""The bridge: consolidated pre-flight, the Phase 1→2 and 2→3 hand-offs, the three-phase run, the trajectory.

Front door: :func:`preflight` (read-only, nine sections), :func:`run_pipeline` (one approval, then
Phase 1 → 2 → 3, resumable) and :func:`run_demo`. See docs/pipeline.md.
"""

from deftpipe._faults import FAULT_ENV, FAULT_POINTS
from deftpipe.pipeline._demo import DEMO_OVERRIDES, run_demo
from deftpipe.pipeline._handoff import best_iteration, merge_winner_spec, strip_budget
from deftpipe.pipeline._phases import sweep_options
from deftpipe.pipeline._pipeline_state import RECORD_NAME, PipelineRecord, PipelineState, latest_unfinished
from deftpipe.pipeline._preflight import preflight
from deftpipe.pipeline._run import PreflightError, run_pipeline
from deftpipe.pipeline._trajectory import build_trajectory, improvement
from deftpipe.pipeline._view import render_preflight

__all__ = [
    "DEMO_OVERRIDES",
    "FAULT_ENV",
    "FAULT_POINTS",
    "RECORD_NAME",
    "PipelineRecord",
    "PipelineState",
    "PreflightError",
    "best_iteration",
    "build_trajectory",
    "improvement",
    "latest_unfinished",
    "merge_winner_spec",
    "preflight",
    "render_preflight",
    "run_demo",
    "run_pipeline",
    "strip_budget",
    "sweep_options",
]
