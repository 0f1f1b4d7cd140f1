"""One trial = one recommendation: sampled values -> spec overrides -> adapter.train -> val metric.

The objective reports the sweep metric to Optuna after every epoch (the pruners' resource is the
epoch) and stops training when the pruner says so. Only the validation CSV is ever scored; the
sweep is never given a KPI set. What a trial produced (checkpoint, metrics, per-class prediction
counts, durations, failure reason) is stored in the trial's user attributes, so best_rec.json can
be rebuilt from the storage alone.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from deftpipe._redact import scrub_clip
from deftpipe.automl._settings import SweepSettings
from deftpipe.automl._space import BUDGET_KEYS
from deftpipe.errors import CheckpointError, DataError, SpecError
from deftpipe.metrics import is_collapsed
from deftpipe.model import get_adapter
from deftpipe.spec import Spec, deep_merge, spec_from_dict, unflatten

#: Metrics copied from the adapter's result into each trial's record.
RECORDED_METRICS = ("far_pct", "val_loss", "threshold", "recall", "auroc", "far_pct_at_99", "far_ci_low",
                    "far_ci_high", "n_defects", "n_pass")
#: Errors that would hit every trial alike (bad data, spec or warm-start checkpoint): they stop the
#: sweep instead of being recorded N times.
ABORT_ERRORS = (DataError, SpecError, CheckpointError)


class TrialFailed(Exception):
    """A trial failed for a reason that does not doom the sweep (recorded; the sweep goes on)."""


def trial_dir(out_dir: str | Path, number: int) -> Path:
    return Path(out_dir) / "trials" / f"trial_{number:03d}"


def build_spec(settings: SweepSettings, values: dict[str, Any], *, seed: int | None = None) -> Spec:
    """The base spec with pinned and sampled values merged in, budget pinned, warm start set."""
    flat = {**settings.space.get("pinned", {}), **values}
    flat["train.num_epochs"] = settings.num_epochs
    flat["train.batch_size"] = settings.batch_size
    if settings.pretrained:
        flat["train.pretrained_model_path"] = settings.pretrained
    if seed is not None:
        flat["train.seed"] = seed
    flat["dataset.classify.test_csv"] = None  # a sweep is never given a path to the KPI set
    return spec_from_dict(deep_merge(settings.spec, unflatten(flat)), where="(sweep trial spec)")


def tuned_specs(settings: SweepSettings, values: dict[str, Any]) -> dict[str, Any]:
    """Nested tuned + pinned values without the budget keys (best_rec.json ``specs``)."""
    flat = {**settings.space.get("pinned", {}), **values}
    return unflatten({k: v for k, v in flat.items() if k not in BUDGET_KEYS})


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def record_result(trial: optuna.Trial, result: Any) -> None:
    m = result.metrics
    trial.set_user_attr("checkpoint", str(result.best_checkpoint))
    trial.set_user_attr("checkpoint_epoch", int(result.best_epoch))
    trial.set_user_attr("checkpoint_step", int(result.best_step))
    trial.set_user_attr("metrics", {k: m.get(k) for k in RECORDED_METRICS if k in m})
    trial.set_user_attr("pred_counts", dict(m.get("pred_counts") or {}))
    trial.set_user_attr("epochs_run", int(result.epochs_run))
    trial.set_user_attr("train_seconds", round(float(result.seconds), 3))


class TrialObjective:
    """The Optuna objective of a sweep. Builds nothing in ``__init__``; cheap to create per worker."""

    def __init__(self, settings: SweepSettings, space: Any, *,
                 on_epoch: Callable[[int, int, float | None], None] | None = None) -> None:
        self.settings = settings
        self.space = space
        self.on_epoch = on_epoch  # progress hook: (trial number, epoch, metric value)

    def __call__(self, trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        s = self.settings
        values = self.space.suggest(trial)
        trial.set_user_attr("host", f"{socket.gethostname()}:{os.getpid()}")
        spec = build_spec(s, values)
        out = trial_dir(s.out_dir, trial.number)
        if out.exists():  # leftovers of a crashed attempt under the same number
            shutil.rmtree(out)
        pruned_at: list[int] = []
        seen: dict[int, dict[str, Any]] = {}

        def epoch_callback(epoch: int, metrics: dict[str, Any]) -> bool:
            # Report the metric of the checkpoint the trial would keep if stopped now (the epoch the
            # adapter names as ``kept_epoch``; model._train.later_epoch_replaces), not the raw epoch
            # value: the final score is that checkpoint's, and a noisy later epoch must not get a
            # trial pruned that already holds a good checkpoint. An adapter that names none (TAO,
            # which keeps the last epoch, and an external command) reports each epoch's own value.
            seen[epoch] = metrics
            value = seen.get(metrics.get("kept_epoch", epoch), metrics).get(s.metric)
            if self.on_epoch:
                self.on_epoch(trial.number, epoch, value if _finite(value) else None)
            if not _finite(value):
                return False  # the end-of-training check records the failure
            trial.report(float(value), epoch)
            if trial.should_prune():
                pruned_at.append(epoch)
                return True
            return False

        try:
            result = get_adapter(spec).train(spec, s.train_csv, s.val_csv, out,
                                             pretrained=s.pretrained, epoch_callback=epoch_callback)
        except ABORT_ERRORS:
            raise
        except Exception as err:  # noqa: BLE001 - TrainingError (NaN) or any crash: recorded, sweep goes on
            trial.set_user_attr("duration_s", round(time.perf_counter() - t0, 3))
            trial.set_user_attr("fail_reason", scrub_clip(f"{type(err).__name__}: {err}", 500))
            raise TrialFailed(str(err)) from err
        record_result(trial, result)
        trial.set_user_attr("duration_s", round(time.perf_counter() - t0, 3))
        if pruned_at:
            trial.set_user_attr("pruned_at_epoch", pruned_at[0])
            raise optuna.TrialPruned(f"pruned after epoch {pruned_at[0]}")
        score = result.metrics.get(s.metric)
        if not _finite(score):
            trial.set_user_attr("fail_reason", f"metric {s.metric} is {score!r} (not a finite number)")
            raise TrialFailed(f"metric {s.metric} is {score!r}")
        pred_counts = dict(result.metrics.get("pred_counts") or {})
        if s.metric == "val_loss" and is_collapsed(pred_counts):
            trial.set_user_attr("rejected", True)
            trial.set_user_attr("fail_reason", f"rejected: predictions collapsed to one class {pred_counts}")
            raise TrialFailed("collapsed")
        return float(score)


__all__ = ["TrialFailed", "TrialObjective", "build_spec", "trial_dir", "tuned_specs"]
