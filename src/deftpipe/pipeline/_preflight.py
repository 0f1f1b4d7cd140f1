"""The consolidated pre-flight (docs/contracts.md §9): every read-only check of both parts, in nine sections.

1 workspace/host/platform · 2 credentials (SET/UNSET) · 3 artefacts (PRESENT/MISSING) · 4 datasets
and leakage · 5 Phase 1 · 6 Phase 2 (with the pre-seeded baseline source, approved by this gate) ·
7 Phase 3 · 8 compute estimate · 9 the confirmation line. ``preflight`` writes nothing under
``results/``; its ``blockers`` make ``deftpipe preflight`` and ``deftpipe run`` exit non-zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deftpipe.automl import load_search_space
from deftpipe.config import PipelineConfig, SweepConfig, load_config
from deftpipe.errors import DeftpipeError
from deftpipe.metrics import ThresholdRule
from deftpipe.pipeline._budget import check as budget_check
from deftpipe.pipeline._checks import (
    artefacts_section,
    credentials_section,
    dataset_section,
    host_section,
    item,
    settings_blockers,
)
from deftpipe.pipeline._estimate import estimate
from deftpipe.pipeline._pipeline_state import RECORD_NAME, PipelineRecord, latest_unfinished
from deftpipe.spec import Spec, load_spec
from deftpipe.tao import add_tao_checks

PHASE1_DIR = "automl/phase1"  # under RESULTS_DIR
PHASE3_DIR = "final_automl"  # under RESULTS_DIR


def search_space_names(ws: Path, sweep: SweepConfig) -> list[str]:
    """Names of the swept hyper-parameters, read by the sweep's own loader so the list matches the run."""
    space = load_search_space(PipelineConfig().path(ws, sweep.search_space) if sweep.search_space else None)
    return list(space.names)


def _sweep_items(ws: Path, sweep: SweepConfig, out_dir: str, spec_source: str) -> list[dict[str, Any]]:
    if not sweep.enabled:
        return [item("enabled", "no (phase skipped)", None)]
    try:
        swept = ", ".join(search_space_names(ws, sweep))
    except (OSError, DeftpipeError) as e:
        swept = f"unreadable search space ({e})"
    pinned = f"num_epochs={sweep.num_epochs}" + (f", batch_size={sweep.batch_size}" if sweep.batch_size else "")
    return [
        item("algorithm", sweep.algorithm),
        item("recommendations", sweep.max_recommendations),
        item("metric", f"{sweep.metric} (minimize)" + (" with collapse guard" if sweep.metric == "val_loss" else "")),
        item("swept hyper-parameters", swept),
        item("pinned", pinned),
        item("seed / re-run margin", f"{sweep.seed} / {sweep.rerun_margin} (fresh-seed re-run of a suspicious winner)"),
        item("output", f"RESULTS_DIR/{out_dir}/ (trials, study storage, best_rec.json)"),
        item("spec source", spec_source),
    ]


def phase_sections(ws: Path, cfg: PipelineConfig, warnings: list[str]) -> list[dict[str, Any]]:
    p1, p3, d = cfg.automl.phase1, cfg.automl.phase3, cfg.deft
    op = cfg.kpi.operator
    baseline_source = ("automl_phase1 — Phase 1's winner (spec + checkpoint) pre-seeds the loop's baseline" if p1.enabled else "the loop trains its own baseline (Phase 1 disabled)")
    s2 = [
        item("KPI target", f"{cfg.kpi.metric} {op} {cfg.kpi.target} on {cfg.data.kpi_csv}"),
        item("max iterations", d.max_iterations),
        item("epochs per retrain", f"{d.num_epochs} (warm-started, {d.warm_start_lr_scale:g}x the spec's learning rate)"),
        item("mining", f"top_k_per_target={d.mining.top_k_per_target}, min_similarity={d.mining.min_similarity}, "
                       f"hard_defects={d.mining.hard_defects}, hard_pass={d.mining.hard_pass}"),
        item("SDG", f"{d.sdg.count_per_target} pairs per target, {d.sdg.hard_pass_per_target} hard PASS per "
                    "false-alarm group"),
        item("regression gate", f"hard stop if {cfg.kpi.metric} worse than baseline by > {d.regression_gate_pct} pts"
             if d.regression_gate_pct is not None else "off"),
        item("shipped threshold", f"{ThresholdRule.of(cfg.kpi)} (kpi.threshold_margin, kpi.threshold_far_budget, "
                                  "kpi.threshold_far_reserve); measured on the holdout by "
                                  "the audit"),
        item("baseline source", baseline_source, "approved by this gate" if p1.enabled else None),
        item("output", "RESULTS_DIR/deft_state.json, baseline/, iter<N>/"),
    ]
    s3 = _sweep_items(ws, p3, PHASE3_DIR, "Phase 1's merged spec (specs/baseline_spec_automl.yaml)"
                      if p1.enabled else cfg.data.spec)
    if p3.enabled:
        s3 += [
            item("warm start", "every trial starts from the best DEFT iteration's checkpoint (lowest far_pct, "
                               "never final_automl)"),
            item("training set", "train_combined_iter<N_final>.csv of the last loop iteration (base train if none)"),
            item("validation set", f"{cfg.data.val_csv} (the same as Phase 1)"),
            item("first trial", "Phase 1's winning spec (enqueued)" if p1.enabled else "sampler's choice"),
            item("KPI check", "winner evaluated once on the KPI set → iterations.final_automl; the loop's best "
                              "is kept if Phase 3 regresses"),
        ]
        if p1.enabled and (p3.metric != p1.metric or p3.algorithm != p1.algorithm):
            warnings.append(f"Phase 3 uses metric {p3.metric}/algorithm {p3.algorithm} but Phase 1 uses "
                            f"{p1.metric}/{p1.algorithm}; docs/contracts.md §9 expects the same — set automl.phase3 "
                            "to match unless intended")
    return [
        {"name": "phase1", "title": "Phase 1 — AutoML baseline", "items": _sweep_items(ws, p1, PHASE1_DIR,
                                                                                        cfg.data.spec)},
        {"name": "phase2", "title": "Phase 2 — DEFT data-improvement loop", "items": s2},
        {"name": "phase3", "title": "Phase 3 — AutoML refinement", "items": s3},
    ]


def run_target(ws: Path, new: bool) -> dict[str, Any]:
    """Which run folder ``deftpipe run`` would use: resume the latest unfinished run, else a new one."""
    resume = None if new else latest_unfinished(ws)
    if resume is None:
        return {"mode": "new", "results_dir": None,
                "text": "start a new run in results/run_<timestamp>/ (Phase 1 → 2 → 3)"}
    try:
        rec = PipelineRecord.load(resume)
        nxt = next((p for p, ph in rec.state.phases.items() if not ph.is_done()), "summary")
    except DeftpipeError:
        nxt = "?"
    return {"mode": "resume", "results_dir": str(resume),
            "text": f"resume {resume.relative_to(ws)} at {nxt} (its {RECORD_NAME}; finished work is kept)"}


def preflight(ws: str | Path, *, new: bool = False, measure: bool = True) -> dict[str, Any]:
    """Run every read-only check and return the nine sections, the blockers and the warnings.

    Args:
        ws: the workspace folder (holding ``pipeline.yaml``).
        new: describe a fresh run even when an unfinished one exists (``deftpipe run --new``).
        measure: run the 1-epoch dry run when pipeline.yaml gives no per-job times.
    Returns:
        ``{"workspace", "ok", "blockers", "warnings", "sections": [9 sections], "target", "confirmation"}``.
    Raises:
        SpecError: pipeline.yaml itself is missing or invalid (nothing else can be checked).
    """
    ws = Path(ws).resolve()
    cfg = load_config(ws)
    blockers: list[str] = []
    warnings: list[str] = []
    spec: Spec | None = None
    try:
        spec = load_spec(cfg.path(ws, cfg.data.spec))
    except DeftpipeError as e:
        blockers.append(str(e))
    sections = [host_section(ws, spec), credentials_section(cfg, spec, blockers),
                artefacts_section(ws, cfg, spec, blockers)]
    settings_blockers(ws, cfg, spec, blockers)
    if spec is not None and "tao" in (spec.adapter.kind, cfg.adapter.kind):
        add_tao_checks(sections, cfg, spec, blockers, warnings, ws=ws)
    datasets = dataset_section(ws, cfg, spec, blockers, warnings)
    sections.append(datasets)
    sections += phase_sections(ws, cfg, warnings)
    rows = {r["split"]: r["rows"] for r in datasets["table"]}
    can_measure = measure and spec is not None and not blockers
    est = estimate(ws, cfg, rows, measure=can_measure, blockers=blockers)
    est["items"] += budget_check(cfg, est.get("seconds"), blockers)
    sections.append(est)
    target = run_target(ws, new)
    if blockers:
        line = f"{len(blockers)} blocker(s) — fix them and rerun; nothing was started"
    else:
        line = f"Type 'go' to {target['text']}; anything else aborts. (--yes approves non-interactively)"
    sections.append({"name": "confirm", "title": "Confirmation", "items": [item("approve", line)]})
    return {"workspace": str(ws), "ok": not blockers, "blockers": blockers, "warnings": warnings,
            "sections": sections, "target": target, "confirmation": line}


__all__ = ["PHASE1_DIR", "PHASE3_DIR", "preflight", "run_target"]
