"""``run_pipeline``: pre-flight → approval → Phase 1 → hand-off → Phase 2 → Phase 3 → audit → trajectory.

Reads top to bottom like the run itself. Every phase is wrapped by the pipeline record
(``pipeline_state.json``): a finished phase is never run again, an unfinished one is simply called
again — the sweeps resume from their storage, the loop from ``deft_state.json``, and each hand-off
step checks what an earlier attempt already wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from deftpipe import deft
from deftpipe._clock import fmt_range, new_run_folder
from deftpipe._faults import fault_point
from deftpipe._fs import atomic_write_text, run_lock
from deftpipe.audit import audit_line, audit_run, holdout_headline
from deftpipe.automl import BestRec
from deftpipe.config import PipelineConfig, load_config
from deftpipe.errors import DeftpipeError, StateError
from deftpipe.pipeline import _budget as budget
from deftpipe.pipeline._estimate import record_actuals
from deftpipe.pipeline._handoff import handoff_1_to_2, handoff_2_to_3
from deftpipe.pipeline._phases import load_phase1, run_phase1, run_phase3
from deftpipe.pipeline._pipeline_state import FINISHED, PhaseStatus, PipelineRecord, RecordStatus
from deftpipe.pipeline._preflight import preflight
from deftpipe.pipeline._quality_record import QualityCheck
from deftpipe.pipeline._trajectory import (
    build_trajectory,
    comparison,
    fmt_value,
    headline,
    improvement,
    write_summary,
)
from deftpipe.pipeline._view import render_preflight, render_trajectory

LOCK_NAME = ".pipeline.lock"


class PreflightError(DeftpipeError):
    """The pre-flight found blockers, or the run was not approved."""


def _approve(report: dict[str, Any], *, yes: bool, ask: Callable[[str], str] | None, console: Console) -> None:
    if not report["ok"]:
        first = report["blockers"][0]
        raise PreflightError(f"pre-flight found {len(report['blockers'])} blocker(s), nothing was started; "
                             f"first: {first}")
    if yes:
        console.print("approved by --yes")
        return
    try:
        answer = (ask or input)("Type 'go' to start: ")
    except EOFError:
        raise PreflightError("no approval: stdin is closed; type 'go' at the prompt or pass --yes") from None
    if answer.strip().lower() != "go":
        raise PreflightError(f"not approved (got {answer.strip()!r}, expected 'go'); nothing was written")


@contextlib.contextmanager
def _locked_run_dir(ws: Path, target: dict[str, Any]) -> Iterator[Path]:
    """The run folder of ``target``, held by this process. The workspace's ``results/`` lock is
    taken first, so two `deftpipe run` on one workspace never both start: the second is refused
    (even when both would have created a new run folder at the same instant)."""
    with run_lock(ws / "results", what="pipeline run", name=LOCK_NAME):
        results_dir = Path(target["results_dir"]) if target["mode"] == "resume" else new_run_folder(ws, create=False)
        with run_lock(results_dir, what="pipeline run", name=LOCK_NAME):
            yield results_dir


def _guard(rec: PipelineRecord, name: str, fn: Callable[[], Any]) -> Any:
    """Run one phase; record its failure (the rerun resumes it) and re-raise."""
    try:
        return fn()
    except KeyboardInterrupt:
        rec.fail(name, "interrupted (Ctrl-C); rerun `deftpipe run WS` to resume")
        raise
    except Exception as e:
        rec.fail(name, f"{type(e).__name__}: {e}" if not isinstance(e, DeftpipeError) else str(e))
        raise


def _run_loop(ws: Path, cfg: PipelineConfig, results_dir: Path, show_progress: bool,
              deadline: float | None) -> tuple[dict, str | None]:
    """Phase 2. Returns (final state, hard-stop reason or None)."""
    try:
        state = deft.run_loop(ws, results_dir=results_dir, config=cfg, show_progress=show_progress, deadline=deadline)
    except DeftpipeError as e:
        try:
            state = deft.load_state(results_dir)
        except DeftpipeError:
            raise e from None
        if not (state.get("status") == "failed" and state.get("hard_stop")):
            raise  # an ordinary failure: the phase is recorded failed and a rerun resumes the loop
        state["reason"] = state.get("reason") or str(e)
    if state.get("status") == "failed":  # a hard-stop gate (regression, merge validation)
        return state, state.get("reason") or "the loop marked its state failed"
    return state, None


def _phase3_verdict(results_dir: Path, p3: dict[str, Any], ho: dict[str, Any]) -> dict[str, Any]:
    p3 = {**p3, "loop_best_iteration": ho["warm_start_iteration"], "loop_best_far_pct": ho["warm_start_far_pct"]}
    kept = deft.BestModel.read(results_dir, check_paths=False)
    label = (kept.best_iteration if kept else None) or "?"
    a, b = p3.get("kpi_far_pct"), ho["warm_start_far_pct"]
    if p3.get("no_winner"):
        p3["verdict"] = f"Phase 3 found no usable trial ({p3['no_winner']}); best model kept = {label}"
    elif label == "final_automl":
        p3["verdict"] = f"Phase 3 improved on the loop ({a} vs {b}); best model = final_automl"
    else:
        p3["verdict"] = f"Phase 3 did not beat the loop ({a} vs {b}); best model kept = {label}"
    p3["best_model"] = label
    return p3


@dataclass
class _Run:
    """What the phase steps share: the workspace, the record, and what earlier phases left (in this
    attempt or an earlier one)."""

    ws: Path
    cfg: PipelineConfig
    results_dir: Path
    rec: PipelineRecord
    show_progress: bool
    qc: QualityCheck | None = None  # Phase 1's winner and quality check
    spec: Path | None = None  # the spec the loop and Phase 3 start from
    state: dict[str, Any] = field(default_factory=dict)  # the loop's state after Phase 2
    hard_stop: str | None = None  # why the loop hard-stopped, if it did
    points: list[dict[str, Any]] = field(default_factory=list)  # the trajectory

    def deadline(self, phase: str) -> float | None:
        return budget.deadline(self.cfg, self.rec.state.phases_json(), phase)


@dataclass(frozen=True)
class _Done:
    """A phase step's result: the record's summary line and the fields stored with it."""

    summary: str
    info: dict[str, Any] = field(default_factory=dict)


def _phase1_skip(run: _Run) -> str | None:
    if not run.cfg.automl.phase1.enabled:
        return "disabled in pipeline.yaml (automl.phase1.enabled: false)"
    return None


def _phase1(run: _Run) -> _Done:
    """Phase 1: AutoML baseline on base train / validation."""
    run.qc = qc = run_phase1(run.ws, run.cfg, run.results_dir, show_progress=run.show_progress,
                             deadline=run.deadline("phase1"))
    w = qc.winner
    return _Done(f"winner {w.get('rec_id')} {qc.metric} {w.get('score')}",
                 {"best_rec": qc.best_rec_path, "winner": w.get("rec_id"), "score": w.get("score"),
                  "reference": qc.reference,
                  "user_spec": _user_spec(qc.reference, run.cfg.path(run.ws, run.cfg.data.spec)),
                  "stop_reason": qc.stop_reason})


def _phase1_after(run: _Run) -> None:
    if run.qc is None and run.rec.state.phases["phase1"].status == PhaseStatus.DONE:
        run.qc = load_phase1(run.results_dir)


def _handoff12_skip(run: _Run) -> str | None:
    return "Phase 1 skipped: the loop trains its own baseline" if run.qc is None else None


def _handoff12(run: _Run) -> _Done:
    """Hand-off 1 → 2: merged spec, copied checkpoint, pre-seeded loop state."""
    best_rec = BestRec.load(Path(run.qc.best_rec_path).parent).to_json()
    info = handoff_1_to_2(run.ws, run.cfg, run.results_dir, best_rec, run.qc.winner, run.qc.reference)
    return _Done(f"baseline pre-seeded from {Path(info['checkpoint']).name}", info)


def _handoff12_after(run: _Run) -> None:
    run.spec = Path(run.rec.phase("handoff12").get("spec") or run.cfg.path(run.ws, run.cfg.data.spec))


def _phase2(run: _Run) -> _Done:
    """Phase 2: the DEFT loop (starts at baseline inference when pre-seeded)."""
    state, stop = _run_loop(run.ws, run.cfg, run.results_dir, run.show_progress, run.deadline("phase2"))
    reason = state.get("reason") or ""
    return _Done(f"hard stop: {stop}" if stop else f"loop {state.get('status')}",
                 {"hard_stop": stop, "loop_status": state.get("status"),
                  "stop_reason": reason if reason.startswith("time budget") else None})


def _phase2_after(run: _Run) -> None:
    run.state = deft.load_state(run.results_dir)
    run.hard_stop = run.rec.phase("phase2").get("hard_stop")


def _phase3_skip(run: _Run) -> str | None:
    if run.hard_stop:
        return f"Phase 2 hard-stopped ({run.hard_stop}); Phase 3 skipped"
    if not run.cfg.automl.phase3.enabled:
        return "disabled in pipeline.yaml (automl.phase3.enabled: false)"
    if (budget.seconds_left(run.cfg, run.rec.state.phases_json(), "phase3") or 1.0) <= 0:
        return "time budget spent before Phase 3 (budget.run_seconds)"
    return None


def _phase3(run: _Run) -> _Done:
    """Hand-off 2 → 3 and Phase 3: warm-started refinement, KPI check, best-model hand-off."""
    ho = handoff_2_to_3(run.state, run.cfg.path(run.ws, run.cfg.data.train_csv))
    p3 = run_phase3(run.ws, run.cfg, run.results_dir, spec=run.spec, handoff=ho,
                    enqueue_spec=run.spec if run.qc is not None else None, show_progress=run.show_progress,
                    deadline=run.deadline("phase3"))
    p3 = _phase3_verdict(run.results_dir, p3, ho)
    return _Done(p3["verdict"], {"handoff": ho, **p3})


def _audit_skip(run: _Run) -> str | None:
    return None if (run.results_dir / "best_model.json").is_file() else "no deliverable (best_model.json) to audit"


def _audit(run: _Run) -> _Done:
    """Audit: the deliverable (checkpoint + threshold) is fixed; only now is the holdout read."""
    audit = audit_run(run.results_dir)
    return _Done(audit_line(audit), {"audited": audit["done"]})


def _summary(run: _Run) -> _Done:
    """Trajectory: terminal, pipeline_summary.md, first chart of report.html."""
    rec, results_dir = run.rec, run.results_dir
    state = deft.load_state(results_dir)
    base_rows = _count_rows(run.cfg.path(run.ws, run.cfg.data.train_csv))
    p3_info = rec.phase("phase3") if rec.state.phases["phase3"].status == PhaseStatus.DONE else None
    run.points = build_trajectory(state, run.qc, base_rows, (p3_info or {}).get("handoff", {}).get("train_csv"))
    rec.state.estimate_vs_actual = record_actuals(run.ws, results_dir, rec.state.estimate, rec.state.phases_json())
    write_summary(results_dir, record=rec.state.to_json(), points=run.points, state=state, phase1=run.qc,
                  phase3=p3_info)
    _render_report(results_dir, run.points, rec.state.estimate_vs_actual, comparison(results_dir, state))
    fault_point("summary")
    return _Done("trajectory written")


@dataclass(frozen=True)
class _Step:
    """One row of the run: ``skip`` says why not (None: run it), ``run`` does it, ``after`` reads
    what it left (also when an earlier attempt ran it). ``faults``: the ``<name>.start`` /
    ``<name>.done`` kill points; ``always``: rerun even when recorded done, and ``guarded``: a failure
    is recorded as the phase's (both False only for the summary, which is redone on every attempt)."""

    name: str
    run: Callable[[_Run], _Done]
    skip: Callable[[_Run], str | None] = lambda _run: None
    after: Callable[[_Run], None] = lambda _run: None
    faults: bool = False
    always: bool = False
    guarded: bool = True


#: The run, top to bottom: the three phases, the hand-offs between them, the audit, the summary.
STEPS = (
    _Step("phase1", _phase1, skip=_phase1_skip, after=_phase1_after, faults=True),
    _Step("handoff12", _handoff12, skip=_handoff12_skip, after=_handoff12_after),
    _Step("phase2", _phase2, after=_phase2_after, faults=True),
    _Step("phase3", _phase3, skip=_phase3_skip, faults=True),
    _Step("audit", _audit, skip=_audit_skip),
    _Step("summary", _summary, always=True, guarded=False),
)


def _do_step(run: _Run, step: _Step) -> None:
    """Run one step unless the record says it is finished, and commit its result (or its skip) to the
    record: the one place a phase's outcome is written."""
    rec = run.rec
    if step.always or not rec.is_done(step.name):
        reason = None if step.always else step.skip(run)
        if reason is not None:
            rec.skip(step.name, reason)
        else:
            rec.start(step.name)
            if step.faults:
                fault_point(f"{step.name}.start")
            done = _guard(rec, step.name, lambda: step.run(run)) if step.guarded else step.run(run)
            rec.done(step.name, summary=done.summary, **done.info)
            if step.faults:
                fault_point(f"{step.name}.done")
    step.after(run)


def _open_record(ws: Path, cfg: PipelineConfig, results_dir: Path, report: dict[str, Any]) -> PipelineRecord:
    """The run's record: loaded on a resume, else created (with the resolved settings beside it)."""
    try:
        rec = PipelineRecord.load(results_dir)
    except StateError:
        if (results_dir / "pipeline_state.json").exists():
            raise
        atomic_write_text(results_dir / "pipeline_config.yaml",
                          yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        rec = PipelineRecord.create(results_dir, workspace=ws)
    if rec.status in FINISHED:
        raise StateError(f"{results_dir} is already {rec.status}; start another with `deftpipe run WS --new`")
    if "estimate" not in rec.state.model_fields_set:
        rec.state.estimate = next((s for s in report["sections"] if s["name"] == "estimate"), None)
    return rec


def run_pipeline(ws: str | Path, *, yes: bool = False, new: bool = False, show_progress: bool = True,
                 console: Console | None = None, ask: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The three-phase run with one approval; resumable after Ctrl-C or ``kill -9``.

    Args:
        ws: workspace folder (holding ``pipeline.yaml``).
        yes: approve the pre-flight without asking.
        new: start a fresh ``results/run_<timestamp>/`` even when an unfinished run exists
            (default: resume the latest unfinished run, else start a new one).
        console: where the pre-flight and the trajectory are printed (default: stdout).
        ask: the prompt function (default :func:`input`); tests pass a fake.
    Returns:
        ``{"results_dir", "status" (complete|stopped), "trajectory", "improvement", "phases", ...}``.
    Raises:
        PreflightError: blockers, or not approved (nothing written under results/).
        StateError: another run holds the results folder.
        DeftpipeError: a phase failed (recorded in pipeline_state.json; rerun to resume).
    """
    console = console or Console()
    ws = Path(ws).resolve()
    report = preflight(ws, new=new)
    render_preflight(report, console)
    _approve(report, yes=yes, ask=ask, console=console)

    # --- approved: from here on we write under results/ -------------------------------------------
    cfg = load_config(ws)
    with _locked_run_dir(ws, report["target"]) as results_dir:
        rec = _open_record(ws, cfg, results_dir, report)
        rec.begin_attempt()
        console.print(f"results: {results_dir}", highlight=False)
        fault_point("approved")
        run = _Run(ws=ws, cfg=cfg, results_dir=results_dir, rec=rec, show_progress=show_progress)
        for step in STEPS:
            _do_step(run, step)
        status = RecordStatus.STOPPED if run.hard_stop else RecordStatus.COMPLETE
        rec.finish(status, summary=run.hard_stop or "")
    _print_outcome(run, console)
    return {"results_dir": str(results_dir), "status": status, "trajectory": run.points,
            "improvement": _gain(run), "hard_stop": run.hard_stop, "phases": rec.state.phases_json()}


def _best_model(results_dir: Path) -> dict[str, Any] | None:
    bm = deft.BestModel.read(results_dir, check_paths=False)
    return bm.to_json() if bm is not None else None


def _gain(run: _Run) -> dict[str, Any] | None:
    bm = _best_model(run.results_dir)
    return improvement(run.points, bm.get("best_iteration") if bm is not None else None)


def _print_outcome(run: _Run, console: Console) -> None:
    """The trajectory table and the run's headlines, in the terminal."""
    rec, results_dir = run.rec, run.results_dir
    render_trajectory(run.points, console, title=f"Trajectory — {results_dir.name}")
    bm = _best_model(results_dir)
    gain = _gain(run)
    first = holdout_headline(bm) if bm is not None else None
    if first:
        console.print(first, highlight=False)
    if gain:
        console.print(headline(gain), highlight=False)
    p3_info = rec.phase("phase3") if rec.state.phases["phase3"].status == PhaseStatus.DONE else None
    if p3_info:
        console.print(p3_info["verdict"], highlight=False)
    console.print(rec.phase("audit").get("summary") or rec.phase("audit").get("reason") or "", highlight=False)
    if run.hard_stop:
        console.print(f"[yellow]Phase 2 hard-stopped: {run.hard_stop}; Phase 3 skipped[/]", highlight=False)
    console.print(f"summary: {results_dir / 'pipeline_summary.md'}", highlight=False)


def _user_spec(reference: dict[str, Any] | None, spec: Path) -> dict[str, Any] | None:
    """The reference in the form the audit reads (``deftpipe.audit.reference_models``)."""
    if not reference:
        return None
    return {"checkpoint": reference["checkpoint"], "kpi_threshold": reference.get("threshold"), "spec": str(spec),
            "kpi_inference_csv": reference.get("inference_csv")}


def _count_rows(csv: Path) -> int | None:
    if not csv.is_file():
        return None
    with open(csv, encoding="utf-8") as f:
        return max(sum(1 for _ in f) - 1, 0)


def _render_report(results_dir: Path, points: list[dict[str, Any]], cost: dict[str, Any] | None,
                   table: dict[str, Any] | None) -> None:
    """Hand the trajectory (its first chart), the estimate vs actual time per phase and the selection
    vs audit table to the loop's report."""
    chart = [{"label": p["step"], "far_pct": p["value"], "kind": p["label"]}
             for p in points if p["metric"] == "far_pct"]
    notes = [f"{p['step']}: {p['metric']} {fmt_value(p['value'])}"
             + (f" (95 % CI {fmt_value(p['ci'][0])}–{fmt_value(p['ci'][1])})" if p.get("ci") else "")
             + f" on the {p['set']} set" for p in points]
    notes += [f"{c['phase']}: estimated {fmt_range(c['low'], c['high'])}, took {c['actual']:.0f} s"
              for c in (cost or {}).get("phases", [])]
    bm = _best_model(results_dir) or {}
    gain = improvement(points, bm.get("best_iteration"))
    headlines = [h for h in (holdout_headline(bm) if bm else None, headline(gain) if gain else None) if h]
    deft.render_report(results_dir, extra={"trajectory": chart, "notes": notes, "comparison": table,
                                           "headlines": headlines,
                                           "title": f"deftpipe pipeline report — {results_dir.name}"})


__all__ = ["PreflightError", "run_pipeline"]
