"""The model adapter interface: the only way automl/, deft/ and pipeline/ reach a model.

Three implementations: the built-in PyTorch siamese classifier (``TorchAdapter``), an external
trainer driven by argv templates (``CommandAdapter``) and NVIDIA TAO Visual ChangeNet jobs through
nvidia-tao-sdk (``TaoAdapter``, docs/tao.md). None touches disk or GPU in
``__init__``. Nothing outside ``deftpipe.model`` imports torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Called after every epoch with (epoch, metrics); returning True stops training early
#: (used by the sweeps for pruning). Metrics hold at least ``val_loss`` and ``far_pct``.
EpochCallback = Callable[[int, dict[str, Any]], bool | None]


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        best_checkpoint: checkpoint of the epoch the training keeps, ``model_epoch_<EEE>_step_<SSS>.pth``
            (the torch trainer: the last epoch unless an earlier one is better on validation beyond the
            noise, ``model._train.later_epoch_replaces``; TAO: the last epoch).
        best_epoch, best_step: its epoch (1-based) and global optimiser step.
        metrics: validation metrics of the best epoch (see :func:`deftpipe.metrics.compute_metrics`).
        history: one metrics dict per finished epoch (with ``epoch`` and ``step`` keys).
        epochs_run: epochs actually run (fewer than asked when the callback stopped it).
        stopped_early: True when ``epoch_callback`` asked to stop.
        seconds: wall time of the run.
    """

    best_checkpoint: Path
    best_epoch: int
    best_step: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


class ModelAdapter(ABC):
    """Train / evaluate / infer / embed on dataset CSVs (docs/contracts.md §3–§5)."""

    @abstractmethod
    def train(
        self,
        spec: Any,
        train_csv: str | Path,
        val_csv: str | Path,
        out_dir: str | Path,
        pretrained: str | Path | None = None,
        epoch_callback: EpochCallback | None = None,
    ) -> TrainResult:
        """Train on ``train_csv``, keep one epoch's checkpoint (see :attr:`TrainResult.best_checkpoint`).

        Args:
            spec: a :class:`deftpipe.spec.Spec`, a mapping, or a YAML path.
            pretrained: warm-start weights (overrides ``train.pretrained_model_path``).
            epoch_callback: see :data:`EpochCallback`.
        Raises:
            SpecError, DataError, CheckpointError, TrainingError.
        """

    @abstractmethod
    def evaluate(self, checkpoint: str | Path, csv: str | Path, *, threshold: float | None = None) -> dict[str, Any]:
        """Metrics of ``checkpoint`` on ``csv`` (docs/contracts.md §5)."""

    @abstractmethod
    def infer(self, checkpoint: str | Path, csv: str | Path, out_csv: str | Path,
              *, threshold: float | None = None) -> Path:
        """Write ``csv``'s rows plus ``score`` (P(defect)) and ``prediction`` to ``out_csv``."""

    @abstractmethod
    def embed(self, checkpoint: str | Path, csv: str | Path) -> np.ndarray:
        """One float32 embedding row per CSV row (for RCA clustering and mining)."""

    def embed_and_score(self, checkpoint: str | Path, csv: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """(:meth:`embed`, P(defect) per row) of ``csv``. This default runs :meth:`embed` and
        :meth:`infer`; an adapter that gets both from one pass overrides it."""
        import tempfile

        import pandas as pd

        emb = self.embed(checkpoint, csv)
        with tempfile.TemporaryDirectory(prefix="deftpipe_scores_") as tmp:
            out = self.infer(checkpoint, csv, Path(tmp) / "scores.csv")
            scores = pd.read_csv(out, usecols=["score"])["score"].to_numpy(dtype=np.float64)
        return emb, scores

    def scratch_dir(self) -> Path | None:
        """Where a caller puts temporary inputs and outputs of this adapter's jobs (subsampled CSVs, a
        throw-away training folder): a folder the jobs can reach, e.g. inside a container's mounts.
        None = the system temp folder. Optional."""
        return None

    def short_dry_run(self) -> bool:
        """True when every job is costly to start (a container, a batch job): the pre-flight's dry run
        then times one training job and one scoring job instead of its two-size fit. Optional."""
        return False

    def validation_scores(self, checkpoint: str | Path, csv: str | Path) -> np.ndarray | None:
        """The scores ``checkpoint`` got on ``csv`` when training selected it, if the adapter
        kept them (one per row, in order); None means "run :meth:`infer`". Optional."""
        return None
