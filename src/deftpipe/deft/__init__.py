"""The DEFT data-improvement loop (docs/contracts.md §7–§8): resumable stages, RCA, routing, SDG, mining,
merge, retrain, KPI gate, best-model hand-off and the HTML report."""

from deftpipe.deft._best import (
    USER_SPEC,
    kpi_pass_scores,
    preseed_baseline,
    record_final_automl,
    record_user_spec,
    write_best_model,
)
from deftpipe.deft._choice import Candidate, Choice, decide, keep, loop_best
from deftpipe.deft._evaluator import PLACEHOLDERS as EVALUATOR_PLACEHOLDERS
from deftpipe.deft._html_report import render_report
from deftpipe.deft._loop import run_loop
from deftpipe.deft._model_stages import kpi_metrics
from deftpipe.deft._records import BEST_MODEL_NAME, BestModel, DeftState, Event, IterationRecord
from deftpipe.deft._runs import describe as describe_run
from deftpipe.deft._runs import latest_unfinished, new_run_folder, run_folders, sweep_line
from deftpipe.deft._state import STAGES, STATE_NAME, IterationStatus, RunStatus, Stage, load_state, save_state

__all__ = [
    "BEST_MODEL_NAME",
    "BestModel",
    "DeftState",
    "Event",
    "IterationRecord",
    "IterationStatus",
    "RunStatus",
    "Stage",
    "EVALUATOR_PLACEHOLDERS",
    "describe_run",
    "kpi_metrics",
    "kpi_pass_scores",
    "latest_unfinished",
    "new_run_folder",
    "run_folders",
    "sweep_line",
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
    "save_state",
    "preseed_baseline",
    "record_final_automl",
    "render_report",
    "run_loop",
    "write_best_model",
]
