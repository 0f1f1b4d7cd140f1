"""The loop's stages as steps: each reads the state, calls one stage module, returns what to record.

Each step is ``step(run, label) -> StageOutcome``; only the driver (:mod:`._loop`) commits. The
"current model" of iteration N is iteration N-1's checkpoint (the one RCA analysed); training
warm-starts from the best checkpoint so far (:mod:`deftpipe.deft._choice`), or
from that analysed model with ``deft.warm_start_from: analysed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deftpipe._fs import atomic_write_json
from deftpipe.data import identity_keys, read_dataset
from deftpipe.deft import _merge, _mining, _rca, _routing, _sdg
from deftpipe.deft._choice import loop_best
from deftpipe.deft._context import LoopContext
from deftpipe.deft._evaluator import run_evaluator
from deftpipe.deft._model_stages import evaluate_scores, pick_metrics, run_inference, train_model
from deftpipe.deft._progress import LoopProgress, far_summary
from deftpipe.deft._records import DeftState, iter_no


@dataclass(frozen=True)
class StageOutcome:
    summary: str
    updates: dict[str, Any] = field(default_factory=dict)
    artefacts: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"


@dataclass
class Run:
    ctx: LoopContext
    state: dict[str, Any]
    progress: LoopProgress
    deadline: float | None = None  # time.time() after which no new iteration starts (a time budget)

    def it(self, label: str) -> dict[str, Any]:
        return self.state["iterations"][label]

    def out(self, label: str, stage: str) -> Path:
        return self.ctx.stage_dir(label, stage)


def prev_label(label: str) -> str:
    n = iter_no(label)
    return "baseline" if n <= 1 else f"iter{n - 1}"


def evaluated(state: DeftState | Mapping[str, Any], before: str | None = None) -> list[str]:
    """Loop labels (baseline, iterN) with a KPI ``far_pct``, optionally only those before ``before``."""
    return [lb for lb, it in DeftState.view(state).loop_iterations(before=before) if it.far_pct is not None]


def best_so_far(state: DeftState | Mapping[str, Any], before: str) -> str:
    """The best iteration before ``before`` (the chain of :mod:`deftpipe.deft._choice`)."""
    choice = loop_best(state, before=before)
    return choice.kept.label if choice else prev_label(before)


def warm_start_label(state: DeftState | Mapping[str, Any], label: str, mode: str = "best") -> str:
    """The iteration whose checkpoint ``label``'s retrain starts from (``deft.warm_start_from``):
    ``best`` = :func:`best_so_far`, ``analysed`` = the previous iteration (the model RCA analysed)."""
    return best_so_far(state, label) if mode == "best" else prev_label(label)


def training_csv(run: Run, label: str) -> Path:
    """The training set iteration ``label`` starts from (previous combined CSV or the base set)."""
    if iter_no(label) <= 1:
        return run.ctx.train_csv
    return Path(run.it(prev_label(label))["combined_training_csv"])


# ------------------------------------------------------------------ model stages

def step_train(run: Run, label: str) -> StageOutcome:
    out = run.out(label, "train")
    if label == "baseline":
        data, pretrained, epochs, warm = run.ctx.train_csv, None, run.ctx.baseline_epochs, None
    else:
        warm = warm_start_label(run.state, label, run.ctx.warm_start_from)
        data, pretrained, epochs = Path(run.it(label)["combined_training_csv"]), Path(
            run.it(warm)["best_ckpt_path"]), run.ctx.num_epochs
    total = epochs or run.ctx.spec.train.num_epochs
    with run.progress.bar(f"train {label}", total) as advance:
        res = train_model(run.ctx, train_csv=data, out_dir=out, pretrained=pretrained, num_epochs=epochs,
                          iteration=iter_no(label),
                          on_epoch=lambda e, m: advance(info=f"val FAR {m.get('far_pct', float('nan')):.1f}%"))
    warm_note = f", warm start {warm} ({pretrained.name})" if pretrained else ""
    return StageOutcome(
        summary=f"{res.epochs_run} epoch(s) on {data.name}{warm_note}; val FAR@100%R "
                f"{res.metrics.get('far_pct', float('nan')):.1f}%",
        updates={"train_metric": res.metrics.get("far_pct"), "train_metrics": pick_metrics(res.metrics),
                 "best_epoch": res.epoch, "best_step": res.step, "epochs_run": res.epochs_run,
                 "warm_start": str(pretrained) if pretrained else None, "train_seconds": round(res.seconds, 2),
                 "source": "deft"},
        artefacts={"best_ckpt_path": res.checkpoint, "train_spec": res.spec_yaml})


def step_inference(run: Run, label: str) -> StageOutcome:
    csv = run_inference(run.ctx, checkpoint=Path(run.it(label)["best_ckpt_path"]), out_dir=run.out(label, "inference"))
    n = len(pd.read_csv(csv, usecols=["label"]))
    return StageOutcome(summary=f"scored {n} KPI rows", artefacts={"inference_csv": csv})


def step_evaluate(run: Run, label: str) -> StageOutcome:
    out = run.out(label, "evaluate")
    inference_csv = Path(run.it(label)["inference_csv"])
    ev = evaluate_scores(inference_csv, out)
    updates = pick_metrics(ev.metrics)
    if run.ctx.kpi.evaluator_command:  # the plant's own evaluator: its numbers win
        custom = run_evaluator(run.ctx.kpi.evaluator_command, inference_csv=inference_csv,
                               kpi_csv=run.ctx.kpi_csv, out_dir=out)
        ev.metrics.update(custom)
        ev.metrics["custom_evaluator"] = custom
        atomic_write_json(ev.metrics_json, ev.metrics)
        updates |= custom
    before = None
    if label != "baseline":
        earlier = evaluated(run.state, label)
        before = run.it(earlier[-1])["far_pct"] if earlier else None
    summary = far_summary(before, ev.metrics.get("far_pct"), run.ctx.kpi, updates.get(run.ctx.kpi.metric))
    return StageOutcome(summary=summary, updates=updates, artefacts={"metrics_json": ev.metrics_json})


def step_rca(run: Run, label: str) -> StageOutcome:
    far_target = run.ctx.kpi.target if run.ctx.kpi.metric == "far_pct" else 5.0
    res = _rca.run_rca(run.ctx.adapter(), checkpoint=Path(run.it(label)["best_ckpt_path"]), val_csv=run.ctx.val_csv,
                       out_dir=run.out(label, "rca"), far_target_pct=far_target)
    return StageOutcome(
        summary=f"{res.n_escapes} escape(s), {res.n_false_alarms} false alarm(s) in {res.n_groups} group(s) "
                f"on validation (operating threshold {res.operating_threshold:.3f})",
        updates={"n_escapes": res.n_escapes, "n_false_alarms": res.n_false_alarms, "rca_groups": res.n_groups,
                 "operating_threshold": res.operating_threshold, "val_threshold_100r": res.threshold_100r},
        artefacts={"rca_gaps": res.gaps_csv, "rca_summary": res.summary_json, "rca_embeddings": res.embeddings_npy})


# ------------------------------------------------------------------ data stages

def _gaps(run: Run, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    src = run.it(prev_label(label))
    gaps = pd.read_csv(src["rca_gaps"], dtype=str, keep_default_na=False)
    for col in ("rank", "impact"):
        if col in gaps.columns:
            gaps[col] = pd.to_numeric(gaps[col])
    return gaps, np.load(src["rca_embeddings"])


def validation_solved(gaps: pd.DataFrame) -> bool:
    """True when the previous RCA found no escape and no false alarm on validation (only "weak
    defects"): the validation set gives the loop nothing left to aim at, so mining also takes the
    pool's hardest rows (``deft.mining.hard_defects`` / ``hard_pass``)."""
    return "kind" not in gaps.columns or not gaps["kind"].isin(["escape", "false_alarm"]).any()


def step_routing(run: Run, label: str) -> StageOutcome:
    ctx, out = run.ctx, run.out(label, "routing")
    pool = _mining.read_pool(ctx.pool_csv)
    if len(pool):
        _mining.check_pool_leakage(pool, ctx.pool_csv, {"validation": ctx.val_csv, "KPI": ctx.kpi_csv})
    train = read_dataset(training_csv(run, label))
    earlier = [f"iter{k}" for k in range(1, iter_no(label))]
    exclude = _mining.mining_history(ctx.results_dir, earlier) | set(identity_keys(train))
    eligible = _mining.eligible_mask(pool, exclude_keys=exclude)
    gaps, gap_emb = _gaps(run, label)
    emb = _mining.embed_pool(ctx.adapter(), checkpoint=Path(run.it(prev_label(label))["best_ckpt_path"]),
                             pool_csv=ctx.pool_csv, pool=pool, eligible=eligible, out_dir=out,
                             score=bool(ctx.hard_defects or ctx.hard_pass) and validation_solved(gaps))
    pool_emb = np.load(emb.embeddings_npy) if emb.embeddings_npy else None
    targets = _routing.route(gaps=gaps, gap_emb=gap_emb, pool_emb=pool_emb,
                             class_counts=train["label"].value_counts().to_dict(), max_groups=ctx.rca_max_groups,
                             min_similarity=ctx.min_similarity)
    res = _routing.write_routing(targets, out, min_similarity=ctx.min_similarity,
                                 pool_info={"n_pool": len(pool), "n_eligible": emb.n_eligible,
                                            "rows_csv": emb.rows_csv, "embeddings_npy": emb.embeddings_npy,
                                            "scores_npy": emb.scores_npy})
    pool_note = "empty pool" if pool.empty else f"{emb.n_eligible} eligible pool rows"
    return StageOutcome(summary=f"{len(targets)} target(s): {res.n_sdg} to SDG, {res.n_mining} to mining ({pool_note})",
                        updates={"n_targets": len(targets), "n_sdg_targets": res.n_sdg,
                                 "n_mining_targets": res.n_mining, "n_pool_eligible": emb.n_eligible},
                        artefacts={"routing_json": res.routing_json})


def _targets(run: Run, label: str, route: str) -> list[dict[str, Any]]:
    import json

    data = json.loads(Path(run.it(label)["routing_json"]).read_text())
    return [t for t in data["targets"] if route in t["routes"]]


def step_sdg(run: Run, label: str) -> StageOutcome:
    ctx = run.ctx
    targets = _targets(run, label, "sdg")
    total = sum(ctx.sdg_hard_pass_per_target if t["kind"] == "false_alarm" else ctx.sdg_count_per_target
                for t in targets)
    with run.progress.bar(f"sdg {label}", total) as advance:
        res = _sdg.generate(targets=targets, train=read_dataset(training_csv(run, label)), layout=ctx.layout,
                            out_dir=run.out(label, "sdg"), iter_label=label, count_per_target=ctx.sdg_count_per_target,
                            hard_pass_per_target=ctx.sdg_hard_pass_per_target, contrast=ctx.sdg_contrast,
                            context=ctx.spec.model.context, on_pair=advance)
    skipped = f"; skipped {len(res.skipped)}: {next(iter(res.skipped.values()))}" if res.skipped else ""
    return StageOutcome(summary=f"{res.n_rows} synthetic pair(s) for {len(targets)} target(s){skipped}",
                        updates={"sdg_rows": res.n_rows, "sdg_per_target": res.per_target, "sdg_skipped": res.skipped},
                        artefacts={"sdg_csv": res.sdg_csv, "sdg_allocation": res.allocation_json},
                        status="warning" if res.skipped else "ok")


def step_mining(run: Run, label: str) -> StageOutcome:
    import json

    ctx = run.ctx
    routing = json.loads(Path(run.it(label)["routing_json"]).read_text())
    pool = routing["pool"]
    emb = _mining.PoolEmbedding(Path(pool["rows_csv"]) if pool.get("rows_csv") else None,
                                Path(pool["embeddings_npy"]) if pool.get("embeddings_npy") else None,
                                pool["n_pool"], pool["n_eligible"],
                                Path(pool["scores_npy"]) if pool.get("scores_npy") else None)
    gaps, gap_emb = _gaps(run, label)
    res = _mining.mine(targets=_targets(run, label, "mining"), gaps=gaps, gap_emb=gap_emb, pool=emb,
                       top_k=ctx.top_k_per_target, min_similarity=ctx.min_similarity, out_dir=run.out(label, "mining"),
                       hard_defects=ctx.hard_defects, hard_pass=ctx.hard_pass)  # used only if routing scored the pool
    note = "" if pool["n_pool"] else " (empty pool: nothing to mine)"
    hard = res.per_target.get("hard", 0)
    n_targets = len(res.per_target) - ("hard" in res.per_target)
    hard_note = f" + {hard} of the pool's hardest rows" if hard else ""
    return StageOutcome(summary=f"{res.n_rows - hard} pool row(s) mined for {n_targets} target(s){hard_note}{note}",
                        updates={"mined_rows": res.n_rows, "mined_per_target": res.per_target},
                        artefacts={"mined_csv": res.mined_csv, "mining_report": res.report_json})


def step_merge(run: Run, label: str) -> StageOutcome:
    ctx = run.ctx
    first = iter_no(label) <= 1
    prev = None if first else run.it(prev_label(label))
    res = _merge.merge(previous_csv=training_csv(run, label), previous_is_base=first,
                       previous_provenance=Path(prev["provenance_csv"]) if prev else None,
                       sdg_csv=Path(run.it(label)["sdg_csv"]), mined_csv=Path(run.it(label)["mined_csv"]),
                       val_csv=ctx.val_csv, kpi_csv=ctx.kpi_csv, layout=ctx.layout,
                       out_dir=run.out(label, "dataset"), iter_label=label,
                       previous_validation=Path(prev["merge_validation"]) if prev else None)
    checked = (f"the {res.n_rows - res.n_previous} added rows (the rest were checked before)"
               if res.checked_rows == "added" else f"all {res.n_rows} rows")
    return StageOutcome(
        summary=f"{res.n_previous} → {res.n_rows} rows (+{res.n_sdg} sdg, +{res.n_mined} mined, "
                f"{res.n_duplicates} duplicate(s) dropped); validation and leakage ok on {checked}",
        updates={"n_train_rows": res.n_rows, "n_added_sdg": res.n_sdg, "n_added_mined": res.n_mined},
        artefacts={"combined_training_csv": res.combined_csv, "provenance_csv": res.provenance_csv,
                   "merge_validation": res.validation_json})


__all__ = ["Run", "StageOutcome", "best_so_far", "evaluated", "iter_no", "prev_label", "warm_start_label"]
