"""The stages that run the model: train, inference (KPI set) and evaluate (metrics of the scores).

Only :func:`run_inference` / :func:`evaluate_scores` ever see the KPI CSV; nothing here learns
from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deftpipe._fs import atomic_write_json
from deftpipe.data import is_defect, read_dataset
from deftpipe.deft._context import LoopContext, jsonable
from deftpipe.errors import DataError
from deftpipe.metrics import compute_metrics
from deftpipe.selection import TAIL_K, selection_metrics
from deftpipe.spec import dump_spec, spec_from_dict, spec_to_dict

#: Metrics copied from ``compute_metrics`` into ``iterations.<label>`` (docs/contracts.md §5).
METRIC_KEYS = ("far_pct", "threshold", "recall", "auroc", "n_defects", "n_pass", "far_pct_at_99",
               "far_ci_low", "far_ci_high", "pred_counts", "escapes", "val_loss",
               "boot_mean", f"tail_{TAIL_K}", "far_pct_at_995")  # the selection figures (deftpipe.selection)


@dataclass(frozen=True)
class TrainOutput:
    checkpoint: Path
    epoch: int
    step: int
    metrics: dict[str, Any]
    epochs_run: int
    spec_yaml: Path
    seconds: float


@dataclass(frozen=True)
class EvalOutput:
    metrics: dict[str, Any]
    metrics_json: Path


def effective_spec(ctx: LoopContext, *, num_epochs: int | None, warm_start: bool = False,
                   iteration: int = 0) -> dict[str, Any]:
    """The spec with the loop's epoch / batch-size budget applied (the user's file is untouched);
    a warm-started retrain also gets ``deft.warm_start_lr_scale`` x the learning rate, and
    iteration N trains with ``train.seed + N`` (each retrain a fresh, reproducible draw of sample
    order and augmentation, not a replay of the previous one)."""
    data = spec_to_dict(ctx.spec)
    data["train"]["seed"] = int(data["train"]["seed"]) + int(iteration)
    if warm_start and ctx.warm_start_lr_scale != 1.0:
        data["train"]["optim"]["lr"] = float(data["train"]["optim"]["lr"]) * ctx.warm_start_lr_scale
    if num_epochs:
        data["train"]["num_epochs"] = int(num_epochs)
    if ctx.batch_size:
        data["train"]["batch_size"] = int(ctx.batch_size)
    if ctx.added_rows_weight != 1.0:  # only rows the loop added carry the weight (torch adapter)
        data["train"]["added_rows_weight"] = float(ctx.added_rows_weight)
    data["train"]["pretrained_model_path"] = None  # the warm start is passed explicitly
    return data


def train_model(ctx: LoopContext, *, train_csv: Path, out_dir: Path, pretrained: Path | None,
                num_epochs: int | None, iteration: int = 0,
                on_epoch: Callable[[int, dict], None] | None = None) -> TrainOutput:
    """Plain training (no sweep) on ``train_csv``, selected on the validation set."""
    data = effective_spec(ctx, num_epochs=num_epochs, warm_start=pretrained is not None, iteration=iteration)
    spec = spec_from_dict(data, base_dir=ctx.spec_path.parent, where=str(ctx.spec_path))
    spec_yaml = dump_spec(spec, out_dir / "train_spec.yaml")

    def callback(epoch: int, metrics: dict[str, Any]) -> None:
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    t0 = time.monotonic()
    result = ctx.adapter().train(spec, train_csv, ctx.val_csv, out_dir, pretrained=pretrained,
                                 epoch_callback=callback)
    return TrainOutput(checkpoint=Path(result.best_checkpoint), epoch=int(result.best_epoch),
                       step=int(result.best_step), metrics=jsonable(dict(result.metrics)),
                       epochs_run=int(result.epochs_run), spec_yaml=spec_yaml, seconds=time.monotonic() - t0)


def run_inference(ctx: LoopContext, *, checkpoint: Path, out_dir: Path) -> Path:
    """Scores of ``checkpoint`` on the KPI set → ``out_dir/inference.csv``."""
    return Path(ctx.adapter().infer(checkpoint, ctx.kpi_csv, out_dir / "inference.csv"))


def evaluate_scores(inference_csv: Path, out_dir: Path, *, seed: int = 0) -> EvalOutput:
    """FAR @ 100 % recall and the other metrics of an inference CSV → ``out_dir/metrics.json``."""
    df = pd.read_csv(inference_csv, dtype=str, keep_default_na=False)
    if "score" not in df.columns:
        raise DataError(f"{inference_csv} has no 'score' column; the adapter's infer() must add one")
    scores = pd.to_numeric(df["score"], errors="coerce").to_numpy(dtype=float)
    if np.isnan(scores).any():
        raise DataError(f"{inference_csv}: {int(np.isnan(scores).sum())} row(s) have no numeric score")
    labels = df["label"]
    y = is_defect(labels).to_numpy()
    metrics = jsonable({**compute_metrics(y, scores, labels=labels.to_numpy(), seed=seed),
                        **selection_metrics(y, scores, seed=seed)})
    path = atomic_write_json(out_dir / "metrics.json", metrics)
    return EvalOutput(metrics=metrics, metrics_json=path)


def kpi_metrics(inference_csv: Path) -> dict[str, Any]:
    """The KPI metrics of an inference CSV, computed exactly as the loop's evaluate stage does
    (:func:`deftpipe.metrics.compute_metrics` on ``score`` with the row labels, seed 0), so Phase 3's
    number (and the audit's reference models') is comparable with the loop's iterations."""
    df = read_dataset(inference_csv)
    scores = pd.to_numeric(df["score"], errors="coerce").to_numpy(dtype=float)
    y = is_defect(df["label"]).to_numpy()
    metrics = {**compute_metrics(y, scores, labels=df["label"].to_numpy(), seed=0), **selection_metrics(y, scores)}
    return json.loads(json.dumps(metrics, default=_plain))


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else str(v)


def pick_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in METRIC_KEYS if k in metrics}


__all__ = ["EvalOutput", "TrainOutput", "evaluate_scores", "kpi_metrics", "pick_metrics", "run_inference", "train_model"]
