"""Reading a study back: trial status, scores, the all_recs table, ranking and checkpoint retention.

A trial counts towards the ``max_recommendations`` target once it is *done*: complete, pruned, or
failed with a recorded reason (a crash, a NaN, a collapse rejection). A trial failed by the
heartbeat (its worker died) is not done: Optuna's retry callback re-enqueues it and the retry counts.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from deftpipe.automl._best_rec import RecStatus, TrialRecord
from deftpipe.automl._settings import SweepSettings
from deftpipe.automl._trial import trial_dir, tuned_specs
from deftpipe.metrics import is_collapsed
from deftpipe.selection import rank


def rec_id(number: int) -> str:
    return f"trial_{number:03d}"


def retried_by(trials: list[FrozenTrial]) -> dict[int, int]:
    """Map a heartbeat-failed trial number -> the number of the trial that retries it."""
    out = {}
    for t in trials:
        history = t.system_attrs.get("retry_history") or []
        if history:
            out[int(history[-1])] = t.number
    return out


def is_done(t: FrozenTrial) -> bool:
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and "fail_reason" in t.user_attrs


def progress_counts(trials: list[FrozenTrial]) -> tuple[int, int, int]:
    """(done, running, waiting) trial counts."""
    done = sum(1 for t in trials if is_done(t))
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    return done, running, waiting


def trial_score(t: FrozenTrial) -> float | None:
    """The trial's metric: its value when complete, its last reported epoch value when pruned."""
    if t.state == TrialState.COMPLETE and t.value is not None:
        return float(t.value)
    if t.state == TrialState.PRUNED and t.intermediate_values:
        return float(t.intermediate_values[max(t.intermediate_values)])
    return None


def trial_status(t: FrozenTrial, retries: dict[int, int]) -> RecStatus:
    if t.state == TrialState.FAIL:
        if t.user_attrs.get("rejected"):
            return RecStatus.REJECTED
        return RecStatus.FAILED if "fail_reason" in t.user_attrs or t.number not in retries else RecStatus.RETRIED
    return RecStatus(t.state.name.lower())


def _reason(t: FrozenTrial, retries: dict[int, int]) -> str | None:
    if "fail_reason" in t.user_attrs:
        return str(t.user_attrs["fail_reason"])
    if t.state == TrialState.FAIL:
        if t.number in retries:
            return f"worker stopped sending heartbeats (killed?); retried as {rec_id(retries[t.number])}"
        return "interrupted or aborted (no result recorded)"
    if t.state == TrialState.PRUNED:
        return f"pruned after epoch {t.user_attrs.get('pruned_at_epoch', max(t.intermediate_values or {0: 0}))}"
    return None


def _checkpoint(t: FrozenTrial) -> str | None:
    ckpt = t.user_attrs.get("checkpoint")
    return ckpt if ckpt and Path(ckpt).is_file() else None


def to_rec(t: FrozenTrial, settings: SweepSettings, retries: dict[int, int]) -> TrialRecord:
    """One all_recs row (docs/contracts.md §6 plus what a reviewer needs to trust it)."""
    score = trial_score(t)
    history = t.system_attrs.get("retry_history") or []
    # every field is set (None included), so the row is written with all of them, as before
    return TrialRecord(
        rec_id=rec_id(t.number),
        score=score if score is None or math.isfinite(score) else None,
        status=trial_status(t, retries),
        specs=tuned_specs(settings, t.params),
        pred_counts=t.user_attrs.get("pred_counts"),
        metrics=t.user_attrs.get("metrics"),
        duration=t.user_attrs.get("duration_s"),
        train_seconds=t.user_attrs.get("train_seconds"),
        epochs_run=t.user_attrs.get("epochs_run", len(t.intermediate_values)),
        checkpoint_uri=_checkpoint(t),
        reason=_reason(t, retries),
        retry_of=rec_id(int(history[-1])) if history else None,
        enqueued_from=t.user_attrs.get("enqueued_from"),
        host=t.user_attrs.get("host"),
    )


def collapsed(t: FrozenTrial) -> bool:
    pc = t.user_attrs.get("pred_counts")
    return bool(pc) and is_collapsed(pc)


def ranked(trials: list[FrozenTrial], settings: SweepSettings) -> list[FrozenTrial]:
    """Complete trials with a finite score, best first (the selection rule: ties to the earlier trial)."""
    sign = 1.0 if settings.direction == "minimize" else -1.0
    ok = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
                 and math.isfinite(t.value)), key=lambda t: t.number)
    return rank(ok, lambda t: sign * float(t.value))


def prune_checkpoints(trials: list[FrozenTrial], settings: SweepSettings, *, keep: int,
                      protect: set[int] = frozenset()) -> list[Path]:
    """Delete the ``.pth`` files of every finished trial outside the best ``keep`` usable ones.

    Collapsed trials rank after every usable one. Running/waiting trials (maybe another worker's)
    are never touched, nor are enqueued trials (the user's spec in Phase 1, Phase 1's winner in
    Phase 3: the references a run is compared with). Returns the deleted files.
    """
    order = ranked(trials, settings)
    order = [t for t in order if not collapsed(t)] + [t for t in order if collapsed(t)]
    enqueued = {t.number for t in trials if t.user_attrs.get("enqueued_from")}
    keepers = {t.number for t in order[:keep]} | set(protect) | enqueued
    deleted = []
    for t in trials:
        if t.number in keepers or not t.state.is_finished():
            continue
        folder = trial_dir(settings.out_dir, t.number)
        for ckpt in folder.glob("**/*.pth") if folder.is_dir() else ():
            with contextlib.suppress(OSError):
                ckpt.unlink()
                deleted.append(ckpt)
    return deleted


__all__ = ["is_done", "progress_counts", "prune_checkpoints", "ranked", "rec_id", "retried_by", "to_rec",
           "trial_score"]
