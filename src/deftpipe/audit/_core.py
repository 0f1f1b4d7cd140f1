"""The audit (docs/contracts.md §11): a fixed model and threshold scored once on the holdout.

The holdout holds boards that no split, pool or choice has touched, so these are the only numbers
in a run that estimate the line. Nothing here chooses anything: the checkpoint and the threshold
come in fixed, the holdout is scored through the model adapter (any backend), and every figure is
:func:`deftpipe.metrics.compute_metrics`'s, for the whole holdout and per board group.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deftpipe.data import is_defect, read_dataset
from deftpipe.errors import DataError
from deftpipe.metrics import compute_metrics
from deftpipe.model import get_adapter

SCHEMA = "deftpipe.audit/1"
INFERENCE_NAME = "inference_holdout.csv"
#: Row columns carried into the escape / threshold-setter lists (with ``row`` and ``score``).
ROW_COLUMNS = ("object_name", "boardname", "label", "input_path", "golden_path")
#: The figures of one set (whole holdout or one board group), in the order reports show them.
FIGURES = ("n_defects", "n_pass", "recall_pct", "escapes", "far_pct_at_threshold",
           "far_pct", "far_ci_low", "far_ci_high", "holdout_threshold", "far_pct_at_99", "auroc")


def _row(df: pd.DataFrame, i: int, scores: np.ndarray) -> dict[str, Any]:
    r = {"row": int(i) + 1, "score": float(scores[i])}  # 1-based, as `deftpipe data` names rows
    r.update({c: str(df.iloc[i][c]) for c in ROW_COLUMNS if c in df.columns})
    return r


def _figures(is_defect: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float,
             seed: int) -> dict[str, Any]:
    m = compute_metrics(is_defect, scores, labels=labels, threshold=threshold, seed=seed)
    return {"n_defects": m["n_defects"], "n_pass": m["n_pass"],
            # at the shipped threshold: what the line would see
            "recall_pct": None if m["recall"] is None else 100.0 * m["recall"],
            "escapes": m["escapes"], "escapes_by_class": m["escapes_by_class"],
            "far_pct_at_threshold": m["far_pct_at_threshold"],
            # threshold-free figures of the holdout itself
            "far_pct": m["far_pct"], "far_ci_low": m["far_ci_low"], "far_ci_high": m["far_ci_high"],
            "holdout_threshold": m["threshold"], "far_pct_at_99": m["far_pct_at_99"], "auroc": m["auroc"],
            "_hardest": m["hardest_defects"]}


def audit_scores(df: pd.DataFrame, scores: np.ndarray, threshold: float, *, seed: int = 0) -> dict[str, Any]:
    """The audit figures of scored holdout rows (``df`` with ``label`` and ``boardname``).

    Returns:
        ``{"threshold", <FIGURES>, "escapes_by_class", "escaped": [rows], "threshold_setters":
        [rows], "per_board": {board: {<FIGURES>, "escapes_by_class"}}}`` — ``recall_pct``,
        ``escapes`` and ``far_pct_at_threshold`` at ``threshold``; ``far_pct`` (FAR@100%R) with its
        bootstrap interval, ``far_pct_at_99`` and ``auroc`` on the holdout's own scores;
        ``escaped`` lists every defect scored below ``threshold`` and ``threshold_setters`` the
        defects with the lowest scores (the ones that set the holdout's FAR@100%R threshold).
    """
    y = is_defect(df["label"]).to_numpy()
    labels = df["label"].astype(str).to_numpy()
    whole = _figures(y, scores, labels, threshold, seed)
    out: dict[str, Any] = {"threshold": float(threshold), **{k: v for k, v in whole.items() if k != "_hardest"}}
    # a defect escapes when the shipped threshold does not flag it (flagged = score >= threshold)
    escaped = np.flatnonzero(y & (scores < threshold))
    out["escaped"] = [_row(df, i, scores) for i in escaped[np.argsort(scores[escaped], kind="stable")]]
    out["threshold_setters"] = [_row(df, h["row"], scores) for h in whole["_hardest"]]
    boards = df["boardname"].astype(str).replace("", "(none)") if "boardname" in df.columns else \
        pd.Series(["(none)"] * len(df), index=df.index)
    out["per_board"] = {}
    for board in sorted(boards.unique()):
        idx = np.flatnonzero((boards == board).to_numpy())
        f = _figures(y[idx], scores[idx], labels[idx], threshold, seed)
        out["per_board"][board] = {k: v for k, v in f.items() if k != "_hardest"}
    return out


def audit_checkpoint(checkpoint: str | Path, threshold: float, csv: str | Path, *, spec: Any = None,
                     seed: int = 0, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Score ``csv`` (the holdout) with ``checkpoint`` and report it at the fixed ``threshold``.

    Args:
        checkpoint: the model to audit (any checkpoint the adapter reads).
        threshold: the shipped operating threshold (flagged = score >= threshold); never chosen here.
        csv: the holdout CSV; its images are found the way the adapter finds them (the checkpoint's
            spec, else the CSV's workspace).
        spec: the spec that names the adapter (``adapter.kind``); None = the built-in torch adapter.
        seed: seed of the bootstrap interval.
        out_dir: where ``inference_holdout.csv`` (rows + score) is kept; None = not kept.
    Returns:
        ``{"schema", "checkpoint", "csv", "seed", "inference_csv", **audit_scores(...)}``.
    Raises:
        DataError: the CSV is missing or empty, or its scores are unusable; CheckpointError etc.
            from the adapter.
    """
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"holdout CSV {csv} not found; pass the holdout (e.g. holdout/holdout_set.csv) with --csv")
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise DataError(f"audit threshold must be a finite number, got {threshold}")
    labels = read_dataset(csv)["label"]  # checked before any scoring: an audit needs both kinds of row
    n_def = int(is_defect(labels).sum())
    if n_def == 0 or n_def == len(labels):
        kind, other = ("defect", "PASS") if n_def == 0 else ("PASS", "defect")
        raise DataError(f"holdout CSV {csv} has no {kind} rows ({len(labels)} {other} rows): "
                        f"{'recall and escapes' if n_def == 0 else 'FAR'} cannot be measured on it; give a holdout "
                        "with both PASS and defect rows")
    adapter = get_adapter(spec)
    with tempfile.TemporaryDirectory(prefix="deftpipe_audit_") as tmp:
        target = Path(out_dir) / INFERENCE_NAME if out_dir is not None else Path(tmp) / INFERENCE_NAME
        scored = adapter.infer(checkpoint, csv, target, threshold=threshold)
        df = read_dataset(scored)
    return audit_scored(checkpoint, threshold, csv, df, seed=seed,
                        inference_csv=target if out_dir is not None else None)


def audit_scored(checkpoint: str | Path, threshold: float, csv: str | Path, scored: pd.DataFrame, *, seed: int = 0,
                 inference_csv: str | Path | None = None) -> dict[str, Any]:
    """:func:`audit_checkpoint`'s result from holdout rows ``checkpoint`` has already scored (``scored``:
    the holdout's rows with a ``score`` column, e.g. its ``inference_csv``): no second pass over the
    holdout when the same model is audited twice (a run that delivers the user's spec)."""
    scores = pd.to_numeric(scored["score"], errors="coerce").to_numpy(dtype=float)
    figures = audit_scores(scored, scores, float(threshold), seed=seed)
    result = {"schema": SCHEMA, "checkpoint": str(Path(checkpoint).resolve()), "csv": str(Path(csv).resolve()),
              "seed": seed, "inference_csv": str(Path(inference_csv).resolve()) if inference_csv is not None else None,
              **figures}
    return json.loads(json.dumps(result, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


__all__ = ["FIGURES", "INFERENCE_NAME", "SCHEMA", "audit_checkpoint", "audit_scored", "audit_scores"]
