"""The trajectory Phase 1 best (val) → baseline KPI eval → iter 1…N → Phase 3, and the run summary.

Built only from what the phases recorded (``automl/phase1/quality_check.json``, ``deft_state.json``,
``best_model.json``); written to ``trajectory.json`` and ``pipeline_summary.md`` and handed to the
loop's report so it becomes the first chart of ``report.html``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from deftpipe._fs import atomic_write_json, atomic_write_text
from deftpipe.audit import audit_markdown, holdout_headline, side_by_side, side_by_side_markdown
from deftpipe.deft import BestModel
from deftpipe.metrics import fmt_value
from deftpipe.pipeline._quality_record import QualityCheck

SUMMARY_NAME = "pipeline_summary.md"
TRAJECTORY_NAME = "trajectory.json"


def _rows(csv: str | None) -> int | None:
    if not csv or not Path(csv).is_file():
        return None
    with open(csv, encoding="utf-8") as f:
        return max(sum(1 for _ in f) - 1, 0)


def _iter_key(label: str) -> int:
    m = re.fullmatch(r"iter(\d+)", label)
    return int(m.group(1)) if m else -1


def build_trajectory(state: dict[str, Any] | None, phase1: QualityCheck | None,
                     base_train_rows: int | None = None, phase3_train_csv: str | None = None) -> list[dict[str, Any]]:
    """One point per step; ``value`` is the phase's metric (KPI ``far_pct`` for the loop and Phase 3)."""
    points: list[dict[str, Any]] = []
    if phase1:
        w = phase1.winner
        metric = phase1.metric
        points.append({"step": "Phase 1 best (val)", "label": "phase1", "set": "validation", "metric": metric,
                       "value": w.get("score"), "train_rows": base_train_rows,
                       "note": f"rec {w.get('rec_id')}"})
        ref = phase1.reference
        if ref and ref.get("far_pct") is not None:
            ci = [ref.get("far_ci_low"), ref.get("far_ci_high")]
            points.append({"step": "user spec (KPI)", "label": "reference", "set": "KPI test", "metric": "far_pct",
                           "value": ref["far_pct"], "ci": ci if None not in ci else None, "auroc": ref.get("auroc"),
                           "train_rows": base_train_rows,
                           "note": f"the workspace's spec trained once (Phase 1's first trial, {ref.get('rec_id')})"})
    iters = (state or {}).get("iterations", {})
    kpi_metric = (state or {}).get("kpi", {}).get("metric", "far_pct")
    labels = ["baseline"] + sorted((k for k in iters if _iter_key(k) >= 0), key=_iter_key) + ["final_automl"]
    for label in labels:
        it = iters.get(label)
        if not it or it.get(kpi_metric) is None:
            continue
        step = {"baseline": "baseline (KPI)", "final_automl": "Phase 3 (KPI)"}.get(label, f"{label} (KPI)")
        ci = (it.get("far_ci_low"), it.get("far_ci_high")) if kpi_metric == "far_pct" else None
        points.append({"step": step, "label": label, "set": "KPI test", "metric": kpi_metric,
                       "value": it.get(kpi_metric), "ci": list(ci) if ci and None not in ci else None,
                       "auroc": it.get("auroc"),
                       "train_rows": _rows(it.get("combined_training_csv")) or {
                           "baseline": base_train_rows, "final_automl": _rows(phase3_train_csv)}.get(label),
                       "note": it.get("source") or ""})
    return points


def improvement(points: list[dict[str, Any]], deliverable: str | None) -> dict[str, Any] | None:
    """The deliverable against the user's spec trained once, on the KPI set, with both intervals.

    The reference is the spec trained once: Phase 1's first trial (``reference``), or the loop's own
    baseline when Phase 1 did not run (the loop then trains the spec). Never an intermediate step.
    ``verdict``: ``gain`` when the deliverable's 95 % bootstrap interval lies wholly below the
    reference's, ``worse`` when wholly above, else ``no gain`` (the intervals overlap: FAR @ 100 %
    recall hangs on a few defects and a difference inside the noise is not a gain).
    None when either figure is missing.
    """
    kpi = {p["label"]: p for p in points if p["set"] == "KPI test" and p["value"] is not None}
    phase1_ran = any(p["label"] == "phase1" for p in points)
    ref = kpi.get("reference") if phase1_ran else kpi.get("baseline")
    got = kpi.get("reference" if deliverable == "user_spec" else deliverable or "")
    if ref is None or got is None:
        return None
    r, d = float(ref["value"]), float(got["value"])
    r_ci, d_ci = ref.get("ci") or [r, r], got.get("ci") or [d, d]
    verdict = "gain" if d_ci[1] < r_ci[0] else "worse" if d_ci[0] > r_ci[1] else "no gain"
    return {"reference": r, "reference_step": ref["step"], "reference_ci": list(r_ci),
            "deliverable": d, "deliverable_step": got["step"], "deliverable_ci": list(d_ci),
            "relative_reduction_pct": round((r - d) / r * 100.0, 1) if r > 0 else 0.0,
            "verdict": verdict, "improved": verdict == "gain"}


def headline(gain: dict[str, Any]) -> str:
    """One line: deliverable vs the user's spec trained once, both with their 95 % intervals."""
    def fig(v: float, ci: list[float]) -> str:
        return f"{fmt_value(v)} % [{fmt_value(ci[0])}, {fmt_value(ci[1])}]"

    tail = {"gain": f"{gain['relative_reduction_pct']:.1f} % lower, intervals apart: a gain",
            "worse": "higher, intervals apart: worse than the spec trained once",
            "no gain": "intervals overlap: no gain"}[gain["verdict"]]
    return (f"Selection figures (KPI set, which chose the model): FAR@100%R user spec trained once {fig(gain['reference'], gain['reference_ci'])} → deliverable "
            f"({gain['deliverable_step']}) {fig(gain['deliverable'], gain['deliverable_ci'])} — {tail}")


def comparison(results_dir: Path, state: dict[str, Any] | None) -> dict[str, Any] | None:
    """Selection (KPI set) beside audit (holdout) of the run's deliverable; None without one."""
    best = BestModel.read(results_dir, check_paths=False)
    if best is None:
        return None
    kpi = ((state or {}).get("iterations") or {}).get(best.best_iteration or "", {})
    return side_by_side(best.to_json(), kpi)


def comparison_markdown(results_dir: Path, state: dict[str, Any] | None) -> list[str]:
    table = comparison(results_dir, state)
    if table is None:
        return []
    best = BestModel.load(results_dir, check_paths=False)
    lines = ["## The deliverable: selection (KPI set) vs audit (holdout, never used for a choice)", "",
             *side_by_side_markdown(table)]
    return lines + audit_markdown(best.audit, heading="###")


def write_summary(results_dir: Path, *, record: dict[str, Any], points: list[dict[str, Any]],
                  state: dict[str, Any] | None, phase1: QualityCheck | None,
                  phase3: dict[str, Any] | None) -> Path:
    """``trajectory.json`` + ``pipeline_summary.md`` (atomic)."""
    bm = BestModel.read(results_dir, check_paths=False)
    gain = improvement(points, bm.best_iteration if bm else None)
    atomic_write_json(results_dir / TRAJECTORY_NAME, {"points": points, "improvement": gain})
    lines = [f"# deftpipe pipeline summary — {results_dir.name}", "",
             f"Workspace: `{record['workspace']}`  ", f"Results: `{results_dir}`", "", "## Phases", "",
             "| phase | status | duration | estimate | note |", "|---|---|---|---|---|"]
    est = (record.get("estimate") or {}).get("seconds") or {}
    for name, ph in record["phases"].items():
        if name == "summary":
            continue
        note = ph.get("reason") or ph.get("error") or ph.get("summary") or ""
        if ph.get("stop_reason"):
            note += f" — stopped early: {ph['stop_reason']}"
        dur = f"{ph['duration_sec']:.0f} s" if ph.get("duration_sec") is not None else ""
        rng = f"{est[name + '_low']:.0f}–{est[name + '_high']:.0f} s" if f"{name}_low" in est else ""
        lines.append(f"| {name} | {ph['status']} | {dur} | {rng} | {note} |")
    if "total_low" in est:
        actual = sum(ph.get("duration_sec") or 0.0 for ph in record["phases"].values())
        lines += ["", f"Estimated {est['total_low']:.0f}–{est['total_high']:.0f} s in all (pre-flight); the "
                  f"phases took {actual:.0f} s. The ratio actual/model per phase is stored in "
                  "`results/cost_calibration.json` for the next pre-flight on this workspace."]
    lines += ["", "## Trajectory", "", "| step | data | metric | value | 95% CI | AUROC | train rows | note |",
              "|---|---|---|---|---|---|---|---|"]
    for p in points:
        ci = f"{fmt_value(p['ci'][0])}–{fmt_value(p['ci'][1])}" if p.get("ci") else ""
        lines.append(f"| {p['step']} | {p['set']} | {p['metric']} | {fmt_value(p['value'])} | {ci} | "
                     f"{fmt_value(p.get('auroc')) if p.get('auroc') is not None else ''} | {p.get('train_rows') or ''} | "
                     f"{p.get('note', '')} |")
    lines += ["", "## Outcome", ""]
    first = holdout_headline(bm.to_json()) if bm else None
    lines.append(f"- **{first}.**" if first else "- **No audit was done**: no holdout figure to compare the "
                 "deliverable with the user's spec; the figures below are selection figures.")
    if gain:
        lines.append(f"- {headline(gain)}.")
    if state:
        kpi = state.get("kpi", {})
        lines.append(f"- KPI target: {kpi.get('metric')} {kpi.get('operator')} {kpi.get('target')}; loop status "
                     f"`{state.get('status')}`" + (f" — {state['reason']}" if state.get("reason") else "") + ".")
    if bm:
        kept = bm.to_json()  # as written: a reason absent from the file reads as '', a null one as None
        lines.append(f"- Best model kept: `{kept.get('best_iteration')}` (KPI far_pct {fmt_value(kept.get('far_pct'))}), "
                     f"checkpoint `{kept.get('checkpoint')}` — {kept.get('reason', '')}.")
    if phase3:
        lines.append(f"- Phase 3 vs the loop's best: Phase 3 KPI {fmt_value(phase3.get('kpi_far_pct'))} vs loop best "
                     f"{fmt_value(phase3.get('loop_best_far_pct'))} ({phase3.get('loop_best_iteration')}) — best model "
                     f"kept: {phase3.get('best_model')}.")
    if phase1:
        for n in phase1.notes:
            lines.append(f"- Phase 1 quality check: {n}")
        v = phase1.verdict
        if v.get("untrained_score") is not None:
            lines.append(f"- Phase 1 winner {v['metric']} {fmt_value(v.get('winner_score'))} vs untrained model "
                         f"{fmt_value(v.get('untrained_score'))} on the validation set.")
    lines += ["", *comparison_markdown(results_dir, state)]
    lines += ["", "## Where the outputs live", "",
              "- `automl/phase1/` — Phase 1 study storage, trials, `best_rec.json`, `quality_check.json`",
              "- `baseline/`, `iter<N>/`, `deft_state.json` — the DEFT loop (baseline pre-seeded by Phase 1)",
              "- `final_automl/` — Phase 3 study, trials, `best_rec.json`, KPI inference and metrics",
              "- `audit/` — the holdout scores and every audit figure (`audit.json`) of the deliverable",
              "- `best_model.json`, `best_model_inference_spec.yaml`, `report.html`, `pipeline_state.json`", ""]
    return atomic_write_text(results_dir / SUMMARY_NAME, "\n".join(lines))


__all__ = ["SUMMARY_NAME", "TRAJECTORY_NAME", "build_trajectory", "comparison", "fmt_value", "headline",
           "improvement", "write_summary"]
