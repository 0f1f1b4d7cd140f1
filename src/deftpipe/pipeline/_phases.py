"""Phase 1 (AutoML baseline + quality check) and Phase 3 (warm-started refinement + KPI check).

Both phases call the AutoML part's one front door, :func:`deftpipe.automl.run_sweep`, with the
settings :func:`sweep_options` builds from ``pipeline.yaml``; a sweep is
resumable by calling it again with the same arguments (its storage lives in the output folder
unless ``pipeline.yaml`` names one), so a killed phase simply runs again. The bridge adds only what
happens around a sweep: the Phase 1 quality check and the Phase 3 evaluation on the KPI set.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from deftpipe import deft
from deftpipe._faults import fault_point
from deftpipe._fs import atomic_write_json
from deftpipe.automl import BestRec, RecStatus, SweepOptions, TrialRecord, run_sweep
from deftpipe.config import PipelineConfig, SweepConfig
from deftpipe.data import read_dataset, write_dataset
from deftpipe.errors import NoUsableTrial, SweepError
from deftpipe.metrics import is_collapsed
from deftpipe.model import get_adapter
from deftpipe.pipeline._budget import sweep_stop_reason
from deftpipe.pipeline._handoff import checkpoint_epoch_step, copy_checkpoint
from deftpipe.pipeline._preflight import PHASE1_DIR, PHASE3_DIR
from deftpipe.pipeline._quality_record import QUALITY_NAME, QualityCheck
from deftpipe.selection import TAIL_K, rank
from deftpipe.spec import load_spec

UNTRAINED_ROWS = 32


def sweep_options(ws: Path, cfg: PipelineConfig, sweep_cfg: SweepConfig, *, spec: Path, train_csv: Path,
                  out_dir: Path, study_name: str, pretrained: Path | None = None,
                  enqueue_spec: Path | None = None) -> SweepOptions:
    """A phase's sweep settings (``automl.phase1`` / ``automl.phase3`` of ``pipeline.yaml``) as the one
    settings object :func:`deftpipe.automl.run_sweep` takes (the same on every resume).

    The phase supplies what ``pipeline.yaml`` does not hold: the spec, the training set, the output
    folder, the default study name and the warm start; every sweep scores on the validation set.
    """
    return SweepOptions(
        spec=spec, train_csv=train_csv, val_csv=cfg.path(ws, cfg.data.val_csv), out_dir=out_dir,
        metric=sweep_cfg.metric, algorithm=sweep_cfg.algorithm, max_recommendations=sweep_cfg.max_recommendations,
        storage=sweep_cfg.storage, study_name=sweep_cfg.study_name or study_name, pretrained=pretrained,
        enqueue_spec=enqueue_spec,
        search_space=cfg.path(ws, sweep_cfg.search_space) if sweep_cfg.search_space else None,
        num_epochs=sweep_cfg.num_epochs, batch_size=sweep_cfg.batch_size, seed=sweep_cfg.seed,
        keep_checkpoints=sweep_cfg.keep_checkpoints, rerun_margin=sweep_cfg.rerun_margin,
        local_workers=sweep_cfg.local_workers)


def untrained_metrics(spec: Path, train_csv: Path, val_csv: Path) -> dict[str, Any]:
    """Validation metrics of an untrained model (or of the spec's pretrained weights, zero-shot).

    The adapter interface has no "save the initial weights" call, so the model is put through one
    epoch on a few rows at a learning rate of 1e-12: the weights stay what initialisation (or the
    pretrained checkpoint) made them. Its figures are that training's own validation pass, the
    same pass that scores every sweep trial, so the verdict compares like with like.
    """
    s = load_spec(spec)
    s.train.num_epochs = 1
    s.train.optim.lr = 1e-12
    s.train.optim.warmup_epochs = 0.0
    adapter = get_adapter(s)
    tmp = Path(tempfile.mkdtemp(prefix="deftpipe_untrained_", dir=adapter.scratch_dir()))  # TAO: in its mounts
    try:
        df = read_dataset(train_csv)
        write_dataset(df.sample(min(len(df), UNTRAINED_ROWS), random_state=0), tmp / "train.csv")
        result = adapter.train(s, tmp / "train.csv", val_csv, tmp / "out")
        return {k: v for k, v in result.metrics.items() if k != "checkpoint"}  # its folder is deleted below
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rec_ckpt_ok(rec: TrialRecord) -> bool:
    uri = rec.checkpoint_uri
    return bool(uri) and Path(str(uri).removeprefix("file://")).is_file()


def quality_check(best_rec: BestRec, *, untrained: dict[str, Any] | None) -> dict[str, Any]:
    """Winner not collapsed (else the next best with a kept checkpoint) and better than untrained."""
    best = best_rec.best.to_json()
    sign = 1.0 if best_rec.direction == "minimize" else -1.0
    own = best_rec.rec(best["rec_id"])
    counts = best.get("pred_counts") or (own.pred_counts if own else None)
    notes: list[str] = []
    winner = best
    if counts and is_collapsed(counts):
        ranked = rank((r for r in best_rec.all_recs if RecStatus.of(r.status) is RecStatus.COMPLETE
                       and r.score is not None and r.rec_id != best["rec_id"]
                       and not (r.pred_counts and is_collapsed(r.pred_counts)) and _rec_ckpt_ok(r)),
                      lambda r: sign * float(r.score))
        if not ranked:
            raise SweepError(f"Phase 1's winner {best['rec_id']} predicts a single class ({counts}) and no other "
                             "trial with a kept checkpoint is better; raise automl.phase1.max_recommendations "
                             "or check the class balance of the training set")
        nxt = ranked[0]
        notes.append(f"winner {best['rec_id']} collapsed to one class {counts}; took {nxt.rec_id} instead")
        winner = {**{k: best.get(k) for k in ("observed_budget",)}, **nxt.to_json()}
        counts = nxt.pred_counts
    metric = best_rec.metric_name
    verdict: dict[str, Any] = {"metric": metric, "winner_score": winner.get("score")}
    if untrained is not None:
        u = untrained.get(metric)
        verdict["untrained_score"] = u
        verdict["beats_untrained"] = (u is None or winner.get("score") is None
                                      or sign * float(winner["score"]) < sign * float(u))
        if not verdict["beats_untrained"]:
            notes.append(f"the winner ({metric} {winner.get('score')}) is no better than an untrained model "
                         f"({u}); the sweep learned nothing useful — check the data and the search space")
    rerun = {k: v for k, v in (own.to_json() if own else {}).items() if "rerun" in k and v is not None}
    return {"winner": winner, "pred_counts": counts, "collapsed_original": winner is not best,
            "untrained": untrained, "verdict": verdict, "rerun": rerun or None, "notes": notes}


def run_phase1(ws: Path, cfg: PipelineConfig, results_dir: Path, *, show_progress: bool,
               deadline: float | None = None) -> QualityCheck:
    """Sweep on base train/validation, then the quality check → ``automl/phase1/quality_check.json``."""
    out = results_dir / PHASE1_DIR
    spec = cfg.path(ws, cfg.data.spec)
    train_csv = cfg.path(ws, cfg.data.train_csv)
    # the user's spec is the first trial: the reference every later step is compared with
    options = sweep_options(ws, cfg, cfg.automl.phase1, spec=spec, train_csv=train_csv, out_dir=out,
                            enqueue_spec=spec, study_name=f"{results_dir.name}-phase1")
    best_rec = run_sweep(options, show_progress=show_progress, deadline=deadline)
    fault_point("phase1.swept")
    untrained = untrained_metrics(spec, train_csv, cfg.path(ws, cfg.data.val_csv))
    qc = quality_check(best_rec, untrained=untrained)
    qc["best_rec_path"] = str(out / "best_rec.json")
    qc["reference"] = evaluate_reference(ws, cfg, results_dir, best_rec, spec)
    qc["handoff_choice"] = challenge_user_spec(ws, cfg, results_dir, qc)
    if qc["handoff_choice"] and not qc["handoff_choice"]["replaces"]:
        qc["winner"] = _user_spec_rec(best_rec, qc["reference"])
        qc["notes"].append(f"Phase 1's winner did not beat the user's spec beyond the noise of the KPI set "
                           f"({qc['handoff_choice']['why']}): the user's spec is handed to the loop")
    # the handed-over model's KPI scores, computed once above, are the loop's baseline inference
    if qc["reference"] and qc["winner"].get("rec_id") == qc["reference"]["rec_id"]:
        qc["winner"]["kpi_inference_csv"] = qc["reference"]["inference_csv"]
    elif qc["handoff_choice"]:
        qc["winner"]["kpi_inference_csv"] = str(results_dir / PHASE1_DIR / WINNER_KPI_NAME)
    qc["stop_reason"] = sweep_stop_reason(best_rec, cfg.automl.phase1.max_recommendations, cfg, "phase1")
    record = QualityCheck.from_json(qc, where=out / QUALITY_NAME)
    record.save(out)
    return record


REFERENCE_DIR = "reference"
REFERENCE_KEYS = ("far_pct", "far_ci_low", "far_ci_high", "threshold", "auroc", "far_pct_at_99", "n_defects",
                  "n_pass", "boot_mean", f"tail_{TAIL_K}", "far_pct_at_995", "recall")
WINNER_KPI_NAME = "winner_inference_kpi.csv"


def challenge_user_spec(ws: Path, cfg: PipelineConfig, results_dir: Path, qc: dict[str, Any]) -> dict[str, Any] | None:
    """Phase 1's winner challenges the user's spec trained once on the KPI set (paired bootstrap).

    The sweep ranked its trials on the validation set, where one or two defects separate them; the
    hand-off takes the winner only when it is better than the user's spec beyond the noise of the
    KPI set (:func:`deftpipe.deft.decide`). None when there is nothing to compare (no reference, or
    the winner is the user's spec itself).
    """
    ref, winner = qc.get("reference"), qc["winner"]
    if not ref or winner.get("rec_id") == ref.get("rec_id"):
        return None
    csv = results_dir / PHASE1_DIR / WINNER_KPI_NAME
    ckpt = Path(str(winner["checkpoint_uri"]).removeprefix("file://"))
    if not csv.is_file():
        get_adapter(cfg.path(ws, cfg.data.spec)).infer(ckpt, cfg.path(ws, cfg.data.kpi_csv), csv)
    user = deft.Candidate(deft.USER_SPEC, {**ref, "best_ckpt_path": ref["checkpoint"]})
    challenger = deft.Candidate(f"phase1 winner {winner.get('rec_id')}",
                                {**deft.kpi_metrics(csv), "best_ckpt_path": str(ckpt), "inference_csv": str(csv)})
    return deft.decide(user, challenger)


def _user_spec_rec(best_rec: BestRec, ref: dict[str, Any]) -> dict[str, Any]:
    """The user's spec's trial record, handed over with its kept checkpoint copy (``reference/train``)."""
    rec = best_rec.rec(ref["rec_id"]).to_json()
    epoch, step = checkpoint_epoch_step({"checkpoint_uri": ref["checkpoint"]})
    return {"observed_budget": best_rec.best.observed_budget, **rec, "checkpoint_uri": ref["checkpoint"],
            "checkpoint_epoch": epoch, "checkpoint_step": step, "user_spec": True}


def evaluate_reference(ws: Path, cfg: PipelineConfig, results_dir: Path, best_rec: BestRec,
                       spec: Path) -> dict[str, Any] | None:
    """The user's spec trained once (Phase 1's enqueued first trial) on the KPI set.

    Its checkpoint is copied to ``RESULTS_DIR/reference/train/`` (kept whatever the sweep's
    retention does) and scored exactly as the loop scores its iterations, so the summary can compare
    the deliverable with it. Nothing is chosen with it. None when the trial left no checkpoint.
    """
    ref = next((r for r in best_rec.all_recs if r.enqueued_from and r.checkpoint_uri), None)
    if ref is None:
        return None
    epoch, step = checkpoint_epoch_step({"checkpoint_uri": ref.checkpoint_uri})
    out = results_dir / REFERENCE_DIR
    ckpt = copy_checkpoint(ref.checkpoint_uri, out / "train", epoch, step)
    inference_csv = out / "inference_kpi.csv"
    if not inference_csv.is_file():
        get_adapter(spec).infer(ckpt, cfg.path(ws, cfg.data.kpi_csv), inference_csv)
    metrics = deft.kpi_metrics(inference_csv)
    return {"rec_id": ref.rec_id, "checkpoint": str(ckpt), "val_score": ref.score,
            "inference_csv": str(inference_csv), **{k: metrics.get(k) for k in REFERENCE_KEYS}}


def load_phase1(results_dir: Path) -> QualityCheck:
    """Phase 1's recorded quality check (a resumed run reads it instead of sweeping again)."""
    return QualityCheck.load(results_dir / PHASE1_DIR)


def run_phase3(ws: Path, cfg: PipelineConfig, results_dir: Path, *, spec: Path, handoff: dict[str, Any],
               enqueue_spec: Path | None, show_progress: bool, deadline: float | None = None) -> dict[str, Any]:
    """Warm-started sweep on the loop's data → KPI evaluation → ``iterations.final_automl`` → best model."""
    out = results_dir / PHASE3_DIR
    try:
        options = sweep_options(
            ws, cfg, cfg.automl.phase3, spec=spec, train_csv=Path(handoff["train_csv"]), out_dir=out,
            pretrained=Path(handoff["warm_start_checkpoint"]) if cfg.automl.phase3.warm_start else None,
            enqueue_spec=enqueue_spec, study_name=f"{results_dir.name}-phase3")
        best_rec = run_sweep(options, show_progress=show_progress, deadline=deadline)
    except NoUsableTrial as e:
        # Phase 3 only refines: when every trial collapsed or failed, the loop's best stands.
        deft.write_best_model(results_dir)
        return {"no_winner": str(e), "kpi_far_pct": None, "checkpoint": None}
    fault_point("phase3.swept")
    best = best_rec.best
    epoch, step = checkpoint_epoch_step(best.to_json())
    ckpt = copy_checkpoint(best.checkpoint_uri, out / "train", epoch, step)
    inference_csv = out / "inference" / "inference_kpi.csv"
    get_adapter(spec).infer(ckpt, cfg.path(ws, cfg.data.kpi_csv), inference_csv)
    metrics = deft.kpi_metrics(inference_csv)
    atomic_write_json(out / "kpi_metrics.json", metrics)
    fault_point("phase3.evaluated")
    state = deft.load_state(results_dir)
    recorded = state["iterations"].get("final_automl", {})
    if Path(recorded.get("best_ckpt_path") or "") != ckpt:
        deft.record_final_automl(results_dir, checkpoint=ckpt, metrics=metrics, inference_csv=inference_csv,
                                 best_rec_path=out / "best_rec.json", source="automl_phase3", spec_path=spec)
    fault_point("phase3.recorded")
    deft.write_best_model(results_dir)
    return {"checkpoint": str(ckpt), "kpi_far_pct": metrics.get("far_pct"), "val_score": best.score,
            "rec_id": best.rec_id, "inference_csv": str(inference_csv),
            "stop_reason": sweep_stop_reason(best_rec, cfg.automl.phase3.max_recommendations, cfg, "phase3")}


__all__ = ["evaluate_reference", "load_phase1", "quality_check", "run_phase1", "run_phase3", "sweep_options",
           "untrained_metrics"]
