"""The DEFT data-improvement loop (DESIGN §7–§8): resumable stages, RCA, routing, SDG, mining,
merge, retrain, KPI gate, best-model hand-off and the HTML report."""

from deftpipe.deft._best import (
    USER_SPEC,
    preseed_baseline,
    record_final_automl,
    record_user_spec,
    write_best_model,
)
from deftpipe.deft._choice import Candidate, Choice, decide, keep, loop_best
from deftpipe.deft._loop import run_loop
from deftpipe.deft._report import render_report
from deftpipe.deft._state import STAGES, STATE_NAME, load_state

__all__ = [
    "STAGES",
    "USER_SPEC",
    "Candidate",
    "Choice",
    "decide",
    "keep",
    "loop_best",
    "record_user_spec",
    "STATE_NAME",
    "load_state",
    "preseed_baseline",
    "record_final_automl",
    "render_report",
    "run_loop",
    "write_best_model",
]
