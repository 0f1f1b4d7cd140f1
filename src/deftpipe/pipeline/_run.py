"""``run_pipeline``: pre-flight → approval → Phase 1 → hand-off → Phase 2 → Phase 3 → audit → trajectory.

Reads top to bottom like the run itself. Every phase is wrapped by the pipeline record
(``pipeline_state.json``): a finished phase is never run again, an unfinished one is simply called
again — the sweeps resume from their storage, the loop from ``deft_state.json``, and each hand-off
step checks what an earlier attempt already wrote.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from deftpipe import deft
from deftpipe._clock import fmt_range, new_run_folder
from deftpipe._faults import fault_point
from deftpipe._fs import atomic_write_text, run_lock
from deftpipe.audit import audit_line, audit_run, holdout_headline
from deftpipe.config import PipelineConfig, load_config
from deftpipe.errors import DeftpipeError, StateError
from deftpipe.pipeline import _budget as budget
from deftpipe.pipeline._estimate import record_actuals
from deftpipe.pipeline._handoff import handoff_1_to_2, handoff_2_to_3
from deftpipe.pipeline._phases import load_phase1, run_phase1, run_phase3
from deftpipe.pipeline._pipeline_state import PipelineRecord
from deftpipe.pipeline._preflight import preflight
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
    bm_path = results_dir / "best_model.json"
    kept = json.loads(bm_path.read_text(encoding="utf-8")) if bm_path.is_file() else {}
    label = kept.get("best_iteration") or "?"
    a, b = p3.get("kpi_far_pct"), ho["warm_start_far_pct"]
    if p3.get("no_winner"):
        p3["verdict"] = f"Phase 3 found no usable trial ({p3['no_winner']}); best model kept = {label}"
    elif label == "final_automl":
        p3["verdict"] = f"Phase 3 improved on the loop ({a} vs {b}); best model = final_automl"
    else:
        p3["verdict"] = f"Phase 3 did not beat the loop ({a} vs {b}); best model kept = {label}"
    p3["best_model"] = label
    return p3


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
        try:
            rec = PipelineRecord.load(results_dir)
        except StateError:
            if (results_dir / "pipeline_state.json").exists():
                raise
            atomic_write_text(results_dir / "pipeline_config.yaml",
                              yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            rec = PipelineRecord.create(results_dir, workspace=ws)
        if rec.status in ("complete", "stopped"):
            raise StateError(f"{results_dir} is already {rec.status}; start another with `deftpipe run WS --new`")
        rec.data.setdefault("estimate", next((s for s in report["sections"] if s["name"] == "estimate"), None))
        rec.begin_attempt()
        console.print(f"results: {results_dir}", highlight=False)
        fault_point("approved")

        # Phase 1: AutoML baseline on base train / validation.
        qc: dict[str, Any] | None = None
        if rec.phase("phase1")["status"] == "done":
            qc = load_phase1(results_dir)
        elif rec.phase("phase1")["status"] != "skipped":
            if not cfg.automl.phase1.enabled:
                rec.skip("phase1", "disabled in pipeline.yaml (automl.phase1.enabled: false)")
            else:
                rec.start("phase1")
                fault_point("phase1.start")
                qc = _guard(rec, "phase1", lambda: run_phase1(ws, cfg, results_dir, show_progress=show_progress,
                                                              deadline=budget.deadline(cfg, rec.data["phases"], "phase1")))
                w = qc["winner"]
                rec.done("phase1", summary=f"winner {w.get('rec_id')} {qc['verdict']['metric']} {w.get('score')}",
                         best_rec=qc["best_rec_path"], winner=w.get("rec_id"), score=w.get("score"),
                         reference=qc.get("reference"), user_spec=_user_spec(qc.get("reference"), cfg.path(ws, cfg.data.spec)),
                         stop_reason=qc.get("stop_reason"))
                fault_point("phase1.done")

        # Hand-off 1 → 2: merged spec, copied checkpoint, pre-seeded loop state.
        if not rec.is_done("handoff12"):
            if qc is None:
                rec.skip("handoff12", "Phase 1 skipped: the loop trains its own baseline")
            else:
                rec.start("handoff12")
                best_rec = json.loads(Path(qc["best_rec_path"]).read_text(encoding="utf-8"))
                info = _guard(rec, "handoff12", lambda: handoff_1_to_2(ws, cfg, results_dir, best_rec, qc["winner"],
                                                                          qc.get("reference")))
                rec.done("handoff12", summary=f"baseline pre-seeded from {Path(info['checkpoint']).name}", **info)
        spec = Path(rec.phase("handoff12").get("spec") or cfg.path(ws, cfg.data.spec))

        # Phase 2: the DEFT loop (starts at baseline inference when pre-seeded).
        if not rec.is_done("phase2"):
            rec.start("phase2")
            fault_point("phase2.start")
            state, stop = _guard(rec, "phase2", lambda: _run_loop(
                ws, cfg, results_dir, show_progress, budget.deadline(cfg, rec.data["phases"], "phase2")))
            reason = state.get("reason") or ""
            rec.done("phase2", summary=f"hard stop: {stop}" if stop else f"loop {state.get('status')}",
                     hard_stop=stop, loop_status=state.get("status"),
                     stop_reason=reason if reason.startswith("time budget") else None)
            fault_point("phase2.done")
        state = deft.load_state(results_dir)
        hard_stop = rec.phase("phase2").get("hard_stop")

        # Hand-off 2 → 3 and Phase 3: warm-started refinement, KPI check, best-model hand-off.
        if not rec.is_done("phase3"):
            if hard_stop:
                rec.skip("phase3", f"Phase 2 hard-stopped ({hard_stop}); Phase 3 skipped")
            elif not cfg.automl.phase3.enabled:
                rec.skip("phase3", "disabled in pipeline.yaml (automl.phase3.enabled: false)")
            elif (budget.seconds_left(cfg, rec.data["phases"], "phase3") or 1.0) <= 0:
                rec.skip("phase3", "time budget spent before Phase 3 (budget.run_seconds)")
            else:
                rec.start("phase3")
                fault_point("phase3.start")
                ho = _guard(rec, "phase3", lambda: handoff_2_to_3(state, cfg.path(ws, cfg.data.train_csv)))
                p3 = _guard(rec, "phase3", lambda: run_phase3(
                    ws, cfg, results_dir, spec=spec, handoff=ho, enqueue_spec=spec if qc is not None else None,
                    show_progress=show_progress, deadline=budget.deadline(cfg, rec.data["phases"], "phase3")))
                p3 = _phase3_verdict(results_dir, p3, ho)
                rec.done("phase3", summary=p3["verdict"], handoff=ho, **p3)
                fault_point("phase3.done")

        # Audit: the deliverable (checkpoint + threshold) is fixed; only now is the holdout read.
        if not rec.is_done("audit"):
            if not (results_dir / "best_model.json").is_file():
                rec.skip("audit", "no deliverable (best_model.json) to audit")
            else:
                rec.start("audit")
                audit = _guard(rec, "audit", lambda: audit_run(results_dir))
                rec.done("audit", summary=audit_line(audit), audited=audit["done"])

        # Trajectory: terminal, pipeline_summary.md, first chart of report.html.
        rec.start("summary")
        state = deft.load_state(results_dir)
        base_rows = _count_rows(cfg.path(ws, cfg.data.train_csv))
        p3_info = rec.phase("phase3") if rec.phase("phase3")["status"] == "done" else None
        points = build_trajectory(state, qc, base_rows, (p3_info or {}).get("handoff", {}).get("train_csv"))
        rec.data["estimate_vs_actual"] = record_actuals(ws, results_dir, rec.data.get("estimate"), rec.data["phases"])
        write_summary(results_dir, record=rec.data, points=points, state=state, phase1=qc, phase3=p3_info)
        _render_report(results_dir, points, rec.data["estimate_vs_actual"], comparison(results_dir, state))
        fault_point("summary")
        rec.done("summary", summary="trajectory written")
        status = "stopped" if hard_stop else "complete"
        rec.finish(status, summary=hard_stop or "")
    render_trajectory(points, console, title=f"Trajectory — {results_dir.name}")
    bm_path = results_dir / "best_model.json"
    gain = improvement(points, json.loads(bm_path.read_text(encoding="utf-8")).get("best_iteration")
                       if bm_path.is_file() else None)
    first = holdout_headline(json.loads(bm_path.read_text(encoding="utf-8"))) if bm_path.is_file() else None
    if first:
        console.print(first, highlight=False)
    if gain:
        console.print(headline(gain), highlight=False)
    if p3_info:
        console.print(p3_info["verdict"], highlight=False)
    console.print(rec.phase("audit").get("summary") or rec.phase("audit").get("reason") or "", highlight=False)
    if hard_stop:
        console.print(f"[yellow]Phase 2 hard-stopped: {hard_stop}; Phase 3 skipped[/]", highlight=False)
    console.print(f"summary: {results_dir / 'pipeline_summary.md'}", highlight=False)
    return {"results_dir": str(results_dir), "status": status, "trajectory": points, "improvement": gain,
            "hard_stop": hard_stop, "phases": rec.data["phases"]}


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
    bm_path = results_dir / "best_model.json"
    bm = json.loads(bm_path.read_text(encoding="utf-8")) if bm_path.is_file() else {}
    gain = improvement(points, bm.get("best_iteration"))
    headlines = [h for h in (holdout_headline(bm) if bm else None, headline(gain) if gain else None) if h]
    deft.render_report(results_dir, extra={"trajectory": chart, "notes": notes, "comparison": table,
                                           "headlines": headlines,
                                           "title": f"deftpipe pipeline report — {results_dir.name}"})


__all__ = ["PreflightError", "run_pipeline"]
