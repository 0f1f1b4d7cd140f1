"""The DEFT loop driver (docs/contracts.md §8): a table of stages, a KPI gate, resume from the state.

    baseline:  train → inference → evaluate → [gate] → rca
    iter<N>:   routing → sdg → mining → data_merge → train → inference → evaluate → [gate] → rca

The gate runs after every evaluate: a regression beyond ``regression_gate_pct`` points over the
baseline is a hard stop (status ``failed``); the KPI met or ``max_iterations`` reached ends the
run (``complete``, ``stage_completed = loop_stop``); otherwise RCA runs and the next iteration
starts. Every stage's folder is cleared before the stage runs, so a stage cut short by a crash
is simply redone on the next start.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from deftpipe._faults import die_mid_stage
from deftpipe._fs import run_lock
from deftpipe._redact import scrub
from deftpipe.config import PipelineConfig, load_config
from deftpipe.deft import _state
from deftpipe.deft._best import write_best_model
from deftpipe.deft._commit import commit, refresh_report
from deftpipe.deft._context import HardStop, LoopContext
from deftpipe.deft._progress import LoopProgress, fmt_pct
from deftpipe.deft._state import IterationStatus, RunStatus
from deftpipe.deft._steps import (
    Run,
    evaluated,
    iter_no,
    step_evaluate,
    step_inference,
    step_merge,
    step_mining,
    step_rca,
    step_routing,
    step_sdg,
    step_train,
)
from deftpipe.errors import DeftpipeError, StateError

BASELINE_STAGES = {
    "train": step_train,
    "inference": step_inference,
    "evaluate": step_evaluate,
    "rca": step_rca,
}
ITERATION_STAGES = {
    "routing": step_routing,
    "sdg": step_sdg,
    "mining": step_mining,
    "data_merge": step_merge,
    "train": step_train,
    "inference": step_inference,
    "evaluate": step_evaluate,
    "rca": step_rca,
}
STAGE_FOLDER = {"data_merge": "dataset"}  # docs/contracts.md §2 names the merge stage's folder "dataset"


def run_loop(workspace: str | Path, *, results_dir: str | Path, config: PipelineConfig | None = None,
             max_iterations: int | None = None, show_progress: bool = True, lock: bool = True,
             deadline: float | None = None) -> dict[str, Any]:
    """Run (or resume) the DEFT loop in ``results_dir`` and return the final ``deft_state``.

    Args:
        workspace: folder holding ``pipeline.yaml``.
        results_dir: the run folder (``<ws>/results/run_<stamp>``); an existing ``deft_state.json``
            there is resumed at the stage after each iteration's ``stage_completed``.
        config: the pipeline config (None: read ``<ws>/pipeline.yaml``). On resume the state's
            snapshot is used, except that a run resumed after a failure takes the settings of
            ``_state.RESUMABLE_DEFT``/``RESUMABLE_KPI`` (those only stages not yet run use) from it.
        max_iterations: None = ``config.deft.max_iterations`` (on resume: the state's value).
        show_progress: per-stage lines and Rich bars on stderr.
        lock: hold ``results_dir/.lock`` (pass False when the caller already holds it).
        deadline: wall-clock time (``time.time()``) after which the loop starts no new iteration;
            it then completes with the reason "time budget reached" (a time budget).
    Raises:
        StateError: corrupt state, missing artefact, run locked or hard-stopped.
        DeftpipeError: any stage failure (the state is marked ``failed`` with the reason first).
    """
    workspace, results_dir = Path(workspace).resolve(), Path(results_dir).resolve()
    guard = run_lock(results_dir, what="DEFT loop") if lock else contextlib.nullcontext()
    with guard:
        state = open_state(workspace, results_dir, config=config, max_iterations=max_iterations)
        if state["status"] == RunStatus.COMPLETE:
            write_best_model(results_dir)  # idempotent: repairs a kill between the last commit and the hand-off
            return state
        ctx = LoopContext.from_state(state, show_progress=show_progress)
        progress = LoopProgress(enabled=show_progress, max_iterations=ctx.max_iterations)
        return drive(Run(ctx=ctx, state=state, progress=progress, deadline=deadline))


def open_state(workspace: Path, results_dir: Path, *, config: PipelineConfig | None,
               max_iterations: int | None) -> dict[str, Any]:
    """Load the run's state (resume) or create it (new run)."""
    if _state.state_path(results_dir).exists():
        state = _state.load_state(results_dir)
        recorded = Path(state["results_dir"]).resolve()
        if recorded != results_dir:  # a copied or moved run: its paths (and writes) would go to the other folder
            raise StateError(f"{_state.state_path(results_dir)} belongs to the run in {recorded} (it was copied or "
                             "moved); resume that run where it is, or start a new one with "
                             "`deftpipe deft run WS --new`")
        if state["status"] == RunStatus.FAILED:
            if state.get("hard_stop"):
                raise StateError(f"the run in {results_dir} hard-stopped ({state.get('reason')}); it is not resumed "
                                 "— start a new run with `deftpipe deft run WS --new`")
            _state.add_event(state, label="run", stage="resume", status="ok", duration_sec=0.0,
                             summary=f"resuming after failure: {state.get('reason')}")
            state["status"], state["reason"] = RunStatus.IN_PROGRESS, None
            changed = _state.refresh_resumable_settings(state, config or load_config(workspace))
            if changed:  # e.g. the evaluator command that failed, now fixed
                _state.add_event(state, label="run", stage="resume", status="ok", duration_sec=0.0,
                                 summary=f"settings taken from pipeline.yaml on resume: {', '.join(changed)}")
        if max_iterations is not None and max_iterations != state["max_iterations"] and state["status"] != RunStatus.COMPLETE:
            _state.add_event(state, label="run", stage="resume", status="ok", duration_sec=0.0,
                             summary=f"max_iterations {state['max_iterations']} → {max_iterations}")
            state["max_iterations"] = int(max_iterations)
        _state.verify_state_artefacts(state, results_dir, workspace)
        _state.save_state(results_dir, state)
        return state
    config = config or load_config(workspace)
    n = config.deft.max_iterations if max_iterations is None else max_iterations
    state = _state.new_state(workspace=workspace, results_dir=results_dir, config=config,
                             spec_path=config.path(workspace, config.data.spec), max_iterations=n)
    _state.save_state(results_dir, state)
    return state


def next_stages(stages: dict, done: str | None) -> list[str]:
    names = list(stages)
    if done is None:
        return names
    if done not in names:
        return []  # loop_stop, or a stage of another table: nothing left in this iteration
    return names[names.index(done) + 1:]


def gate(run: Run, label: str) -> tuple[str, str, bool] | None:
    """None to go on, else (run status, reason, hard stop) after ``label``'s evaluate."""
    ctx, it = run.ctx, run.it(label)
    far, base = it.get("far_pct"), run.it("baseline").get("far_pct")
    gate_pts = ctx.regression_gate_pct
    # FAR@100%R swings by tens of points between epochs, so the gate also asks for the regression to
    # lie beyond the bootstrap intervals (iteration's low end above the baseline's high end).
    lo, base_hi = it.get("far_ci_low"), run.it("baseline").get("far_ci_high")
    beyond_noise = lo is None or base_hi is None or lo > base_hi
    if (label != "baseline" and gate_pts is not None and far is not None and base is not None
            and far > base + gate_pts and beyond_noise):
        return ("failed", f"regression gate: {label} FAR@100%R {fmt_pct(far)} is worse than the baseline "
                          f"{fmt_pct(base)} by more than {gate_pts:g} points (beyond the bootstrap interval); "
                          "raise deft.regression_gate_pct or set it to null to continue", True)
    if ctx.kpi.met(it.get(ctx.kpi.metric)):
        return "complete", f"KPI met: {ctx.kpi.metric} {it.get(ctx.kpi.metric)} {ctx.kpi.operator} {ctx.kpi.target:g}", False
    if iter_no(label) >= ctx.max_iterations:
        return "complete", f"max_iterations ({ctx.max_iterations}) reached", False
    if run.deadline is not None and time.time() >= run.deadline:
        return "complete", f"time budget reached after {label}: no new iteration started", False
    return None


def run_stage(run: Run, label: str, stage: str, fn, next_stage: str | None, *, last: bool) -> None:
    folder = run.ctx.stage_dir(label, STAGE_FOLDER.get(stage, stage))
    if folder.exists():
        shutil.rmtree(folder)  # leftovers of a stage cut short: redo it from scratch
    folder.mkdir(parents=True)
    t0 = time.monotonic()
    with die_mid_stage(label, stage, folder):  # test hook (DEFTPIPE_FAULT_IN); a no-op otherwise
        outcome = fn(run, label)
    seconds = time.monotonic() - t0
    commit(run.ctx.results_dir, run.state, label=label, stage=stage, summary=outcome.summary,
           duration_sec=seconds, updates={**outcome.updates, f"seconds_{stage}": round(seconds, 3)},
           artefacts=outcome.artefacts, status=outcome.status,
           iteration_status=IterationStatus.COMPLETE if last else IterationStatus.IN_PROGRESS)
    if stage == "evaluate":
        write_best_model(run.ctx.results_dir)
        stop = gate(run, label)
        next_stage = f"stop ({stop[1]})" if stop else next_stage
    run.progress.line(label, stage, outcome.summary, seconds, next_stage)


def drive(run: Run) -> dict[str, Any]:
    state, ctx = run.state, run.ctx
    labels = ["baseline"] + [f"iter{n}" for n in range(1, ctx.max_iterations + 1)]
    label, stage = "run", "start"
    try:
        for label in labels:
            it = _state.iteration(state, label)
            table = BASELINE_STAGES if label == "baseline" else ITERATION_STAGES
            todo = next_stages(table, it.get("stage_completed"))
            if it.get("stage_completed") == "loop_stop":
                return state
            if not todo:
                continue
            state["current_iteration"] = iter_no(label)
            for i, stage in enumerate(todo):
                if stage == "rca":
                    stop = gate(run, label)
                    if stop is not None:
                        return finish(run, label, *stop)
                nxt = todo[i + 1] if i + 1 < len(todo) else ("routing" if label != labels[-1] else None)
                run_stage(run, label, stage, table[stage], nxt, last=stage == list(table)[-1])
        # every iteration ran its RCA (max_iterations grew on a resume, then shrank): close the run
        return finish(run, labels[-1], "complete", f"max_iterations ({ctx.max_iterations}) reached", False)
    except DeftpipeError as err:
        fail(run, label, stage, str(err), hard=isinstance(err, HardStop))
        raise
    except Exception as err:
        fail(run, label, stage, f"{type(err).__name__}: {err}")
        raise


def finish(run: Run, label: str, status: str, reason: str, hard: bool) -> dict[str, Any]:
    commit(run.ctx.results_dir, run.state, label=label, stage="loop_stop", summary=reason, duration_sec=0.0,
           iteration_status="complete", status=status, run_status=status, reason=reason, hard_stop=hard)
    best = write_best_model(run.ctx.results_dir)
    done = evaluated(run.state)
    trail = " → ".join(f"{lb} {fmt_pct(run.it(lb)['far_pct'])}" for lb in done)
    run.progress.note(f"[deft · {status}] {reason}; FAR@100%R {trail}"
                      + (f"; best: {best['best_iteration']}" if best else ""))
    return run.state


def fail(run: Run, label: str, stage: str, reason: str, *, hard: bool = False) -> None:
    """Mark the run failed with its reason (never raises over the original error)."""
    reason = scrub(reason)  # an exception's text may quote a user program's output
    with contextlib.suppress(Exception):
        run.state["status"], run.state["reason"] = RunStatus.FAILED, f"{label}/{stage}: {reason}"
        run.state["hard_stop"] = hard
        _state.add_event(run.state, label=label, stage=stage, status="failed", summary=reason, duration_sec=0.0)
        _state.save_state(run.ctx.results_dir, run.state)
        refresh_report(run.ctx.results_dir)


__all__ = ["BASELINE_STAGES", "ITERATION_STAGES", "gate", "run_loop"]
