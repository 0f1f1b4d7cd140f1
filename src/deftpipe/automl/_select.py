"""After the sweep: pick a winner that can be trusted, then build best_rec.json.

1. Rank complete trials by the metric (validation set only).
2. Skip a winner whose per-class prediction counts collapse to one class (take the next best), or
   whose checkpoint is gone.
3. If the winner beats the runner-up by more than ``rerun_margin``, re-run it with a fresh seed and
   report both scores; it is declared only if the re-run still beats (or ties) the runner-up,
   otherwise the runner-up is declared. The margin is in percent: FAR points for ``far_pct``
   (already a percentage), percent of the runner-up's loss for ``val_loss``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from deftpipe._redact import scrub_clip
from deftpipe.automl._best_rec import BEST_REC_SCHEMA_VERSION, BestRec, BestTrial, TrialRecord
from deftpipe.automl._settings import SweepSettings
from deftpipe.automl._study_reader import collapsed, ranked, rec_id, retried_by, to_rec
from deftpipe.automl._trial import ABORT_ERRORS, build_spec, tuned_specs
from deftpipe.errors import NoUsableTrial
from deftpipe.model import get_adapter

RERUN_SEED_OFFSET = 1000  # fresh seed of a verification re-run = spec seed + offset


def win_margin(metric: str, winner: float, runner_up: float, direction: str) -> float:
    """How much better the winner is, in the unit ``rerun_margin`` is given in (see module doc)."""
    gap = (runner_up - winner) if direction == "minimize" else (winner - runner_up)
    if metric == "far_pct":
        return gap
    return 100.0 * gap / max(abs(runner_up), 1e-12)


def _beats_or_ties(a: float, b: float, direction: str) -> bool:
    return a <= b if direction == "minimize" else a >= b


def rerun_with_fresh_seed(study: optuna.Study, settings: SweepSettings, t: FrozenTrial) -> dict[str, Any]:
    """Re-train trial ``t``'s spec with a fresh seed (cached in the study, so a resume reuses it)."""
    key = f"rerun_{t.number}"
    cached = study.user_attrs.get(key)
    if cached:
        return cached

    seed = int(settings.spec.get("train", {}).get("seed", 0)) + RERUN_SEED_OFFSET
    spec = build_spec(settings, dict(t.params), seed=seed)
    out = Path(settings.out_dir) / "reruns" / f"{rec_id(t.number)}_seed_{seed}"
    if out.exists():
        shutil.rmtree(out)
    try:
        result = get_adapter(spec).train(spec, settings.train_csv, settings.val_csv, out, pretrained=settings.pretrained)
        score = result.metrics.get(settings.metric)
        info = {"seed": seed, "score": float(score) if score is not None else None,
                "pred_counts": result.metrics.get("pred_counts"), "reason": None}
    except ABORT_ERRORS:
        raise
    except Exception as err:  # noqa: BLE001 - a failed re-run means "did not reproduce"
        info = {"seed": seed, "score": None, "pred_counts": None, "reason": scrub_clip(f"{type(err).__name__}: {err}", 300)}
    for ckpt in out.glob("**/*.pth"):  # only the score matters; keep disk bounded
        ckpt.unlink()
    study.set_user_attr(key, info)
    return info


def _no_winner(trials: list[FrozenTrial], recs: dict[int, TrialRecord]) -> NoUsableTrial:
    counts: dict[str, int] = {}
    for r in recs.values():
        counts[str(r.status)] = counts.get(str(r.status), 0) + 1
    reasons = [r.reason for r in recs.values() if r.reason]
    first = f"; first reason: {reasons[0]}" if reasons else ""
    return NoUsableTrial(
        f"no usable trial among {len(trials)} ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}){first}; "
        "check the training data and the search space ranges (e.g. a lower train.optim.lr), then rerun"
    )


def select_and_build(study: optuna.Study, settings: SweepSettings, study_name: str) -> tuple[BestRec, list[str]]:
    """Choose the declared best and build the best_rec.json record. Returns (best_rec, notes)."""
    trials = study.get_trials(deepcopy=False)
    retries = retried_by(trials)
    recs = {t.number: to_rec(t, settings, retries) for t in trials}
    notes: list[str] = []
    usable = []
    for t in ranked(trials, settings):
        if collapsed(t):
            recs[t.number].reason = f"not selected: predictions collapsed to one class {t.user_attrs['pred_counts']}"
            notes.append(f"{rec_id(t.number)} skipped: {recs[t.number].reason}")
        elif recs[t.number].checkpoint_uri is None:
            recs[t.number].reason = "not selected: checkpoint missing (deleted by retention or moved)"
        else:
            usable.append(t)
    if not usable:
        raise _no_winner(trials, recs)
    best = usable[0]
    if len(usable) > 1:
        runner = usable[1]
        margin = win_margin(settings.metric, best.value, runner.value, settings.direction)
        if margin > settings.rerun_margin:
            rr = rerun_with_fresh_seed(study, settings, best)
            rec = recs[best.number]
            rec.rerun_score, rec.rerun_seed, rec.rerun_reason = rr["score"], rr["seed"], rr["reason"]
            confirmed = rr["score"] is not None and math.isfinite(rr["score"]) and _beats_or_ties(
                rr["score"], runner.value, settings.direction)
            notes.append(
                f"{rec_id(best.number)} beat runner-up {rec_id(runner.number)} by {margin:.3g} (> rerun margin "
                f"{settings.rerun_margin:g}); re-run with seed {rr['seed']}: {settings.metric} {best.value:.4g} -> "
                f"{rr['score'] if rr['score'] is None else format(rr['score'], '.4g')}"
                + ("" if confirmed else f" — not reproduced, declaring {rec_id(runner.number)} "
                   f"({runner.value:.4g})")
            )
            if not confirmed:
                recs[best.number].reason = "not selected: did not reproduce with a fresh seed"
                best = runner
    a = best.user_attrs
    best_rec = BestRec(
        schema_version=BEST_REC_SCHEMA_VERSION,
        experiment_id=study_name,
        metric_name=settings.metric,
        direction=settings.direction,
        best=BestTrial(
            rec_id=rec_id(best.number),
            score=float(best.value),
            specs=tuned_specs(settings, dict(best.params)),
            observed_budget={"num_epochs": int(settings.num_epochs), "batch_size": int(settings.batch_size),
                             "epochs_run": int(a.get("epochs_run", settings.num_epochs))},
            checkpoint_uri=str(a["checkpoint"]),
            checkpoint_epoch=int(a["checkpoint_epoch"]),
            checkpoint_step=int(a["checkpoint_step"]),
        ),
        all_recs=[recs[t.number] for t in sorted(trials, key=lambda t: t.number)],
    )
    n_done = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    notes.insert(0, f"best {settings.metric} = {best.value:.4g} ({rec_id(best.number)}, {n_done} complete of "
                    f"{len(trials)} trials)")
    return best_rec, notes


__all__ = ["rerun_with_fresh_seed", "select_and_build", "win_margin"]
