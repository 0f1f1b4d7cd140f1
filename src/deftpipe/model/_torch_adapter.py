"""The built-in adapter: the siamese PyTorch classifier behind the :class:`ModelAdapter` contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deftpipe._fs import atomic_path
from deftpipe.metrics import FAIL, PASS
from deftpipe.model._adapter import EpochCallback, ModelAdapter, TrainResult
from deftpipe.model._checkpoint import load_model
from deftpipe.model._data import class_names, load_pair_set
from deftpipe.model._train import forward_rows, pick_device, predict, torch_threads, train_model, validate
from deftpipe.model._val_scores import stored_val_scores
from deftpipe.spec import Spec, load_spec, spec_from_dict


def as_spec(spec: Any) -> Spec:
    """A Spec from a Spec, a mapping or a YAML path."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, (str, Path)):
        return load_spec(spec)
    return spec_from_dict(spec)


def stored_threshold(ckpt: dict[str, Any]) -> float | None:
    """The validation 100 %-recall threshold saved with a checkpoint (None when unknown)."""
    t = ckpt.get("metrics", {}).get("threshold")
    return float(t) if t is not None else None


class TorchAdapter(ModelAdapter):
    """Train/evaluate/infer/embed with :class:`~deftpipe.model._network.SiameseChangeNet`.

    Args:
        progress: an object with ``start/batch/epoch_end/close`` (the CLI's Rich bars); None = silent.
    """

    def __init__(self, *, progress: Any = None, images_dir: str | Path | None = None):
        self.progress = progress
        self.images_dir = images_dir  # image root of the CSVs evaluated (None: model._data.resolve_layout)

    def train(self, spec: Any, train_csv: str | Path, val_csv: str | Path, out_dir: str | Path,
              pretrained: str | Path | None = None, epoch_callback: EpochCallback | None = None) -> TrainResult:
        return train_model(as_spec(spec), train_csv, val_csv, out_dir, pretrained=pretrained,
                           epoch_callback=epoch_callback, progress=self.progress)

    def _load(self, checkpoint: str | Path, csv: str | Path):
        model, spec, ckpt = load_model(checkpoint)
        data = load_pair_set(csv, spec, class_names(spec), self.images_dir)
        device = pick_device(spec.train.device)
        return model.to(device), spec, ckpt, data, device

    def evaluate(self, checkpoint: str | Path, csv: str | Path, *, threshold: float | None = None) -> dict[str, Any]:
        """Metrics on ``csv``: ``far_pct`` etc. are the set's own; the operating threshold (for
        ``pred_counts``/``escapes``) is ``threshold``, else the checkpoint's validation threshold."""
        with torch_threads():
            model, spec, ckpt, data, device = self._load(checkpoint, csv)
            op = threshold if threshold is not None else stored_threshold(ckpt)
            classes = class_names(spec) if spec.model.num_classes > 2 else None
            m = validate(model, data, device, seed=spec.train.seed, threshold=op, classes=classes,
                         precision=spec.train.precision)
        return {**m, "checkpoint": str(Path(checkpoint).resolve()), "csv": str(Path(csv).resolve()),
                "checkpoint_epoch": ckpt["epoch"], "checkpoint_step": ckpt["step"]}

    def infer(self, checkpoint: str | Path, csv: str | Path, out_csv: str | Path, *,
              threshold: float | None = None) -> Path:
        """``csv`` + ``score`` + ``prediction`` (PASS/FAIL, or the argmax defect class for a
        multi-class model) at ``threshold``, else the checkpoint's validation threshold, else 0.5."""
        with torch_threads():
            model, spec, ckpt, data, device = self._load(checkpoint, csv)
            scores, logits = predict(model, data, device, precision=spec.train.precision)
        t = threshold if threshold is not None else stored_threshold(ckpt)
        t = 0.5 if t is None else t
        flagged = scores >= t
        if logits.dim() == 2:
            classes = class_names(spec)
            defect_cls = logits[:, 1:].argmax(1).numpy() + 1
            pred = np.where(flagged, np.array(classes, dtype=object)[defect_cls], PASS)
        else:
            pred = np.where(flagged, FAIL, PASS)
        out = data.df.copy()
        out["score"] = scores
        out["prediction"] = pred
        with atomic_path(out_csv) as tmp:
            out.to_csv(tmp, index=False)
        return Path(out_csv)

    def validation_scores(self, checkpoint: str | Path, csv: str | Path) -> np.ndarray | None:
        """The best epoch's validation scores that training kept beside ``checkpoint``
        (``val_scores.npz``), when they are for this very checkpoint and CSV."""
        return stored_val_scores(checkpoint, csv)

    def embed(self, checkpoint: str | Path, csv: str | Path) -> np.ndarray:
        """The fused golden/test comparison vector per row, float32 (N, D)."""
        with torch_threads():
            model, spec, _, data, device = self._load(checkpoint, csv)
            emb, _ = predict(model, data, device, embed=True, precision=spec.train.precision)
        return emb

    def embed_and_score(self, checkpoint: str | Path, csv: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and P(defect) from one forward pass (mining scores the pool it embeds)."""
        with torch_threads():
            model, spec, _, data, device = self._load(checkpoint, csv)
            # the same scores as infer/evaluate (the mean over flips with flip_tta), in the same pass
            scores, _, emb = forward_rows(model, data, device, precision=spec.train.precision, embed=True)
        return emb, scores


__all__ = ["TorchAdapter", "as_spec"]
