"""Root-cause analysis on the validation set (never the KPI set).

Operating point (FAR @ 100 % recall has, by definition, no escapes at its own threshold):

* ``threshold_100r`` = the lowest defect score on the validation set (every defect is caught).
* ``operating_threshold`` = the score that passes the KPI target on validation: the
  ``(1 - target/100)`` quantile of the PASS scores (e.g. the 95th percentile for ``far_pct <= 5``).
* **escapes** = defects scored below the operating threshold: to meet the KPI every one of them
  must move above it. When there are none (the KPI already holds on validation) the defects that
  set FAR @ 100 % recall are analysed instead (**weak defects**: the :data:`WEAK_DEFECTS` lowest-
  scored; a share of all defects buried the few that set the threshold among easy ones).
* **false alarms** = PASS samples scored at or above ``threshold_100r`` (the ones that make up the
  FAR), at most :data:`MAX_FALSE_ALARMS` of the highest-scored.

Each failed row gets ``far_cost``: for a defect, the FAR (%) at 100 % recall that it forces on its
own — the share of PASS samples scored at or above it; for a false alarm, its own share of the PASS
samples (100 / n_pass). Grouping: escapes by defect class, then KMeans over the model's embeddings
within each class; false alarms by KMeans over their embeddings. **Impact** of a group = what it does
to FAR @ 100 % recall, in FAR points: for defects the FAR its lowest-scored member forces (moving the
group above the threshold removes that much at most), for false alarms the share of PASS it holds.
Groups are ranked by impact (ties: more members first). Representatives are the members nearest
their group's centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deftpipe._fs import atomic_path, atomic_write_json
from deftpipe.data import PASS, read_dataset, write_dataset
from deftpipe.deft._context import jsonable

MAX_FALSE_ALARMS = 200
WEAK_DEFECTS = 10  # the lowest-scored defects analysed when nothing escapes: they set FAR @ 100 % recall
MAX_CLUSTERS_PER_CLASS = 2
MAX_FALSE_ALARM_CLUSTERS = 3
REPRESENTATIVES = 4
ROW_COLUMNS = ("input_path", "golden_path", "label", "object_name", "boardname")


@dataclass(frozen=True)
class RcaResult:
    gaps_csv: Path
    summary_json: Path
    embeddings_npy: Path
    n_escapes: int
    n_false_alarms: int
    n_groups: int
    operating_threshold: float
    threshold_100r: float


def operating_point(scores: np.ndarray, defect: np.ndarray, far_target_pct: float) -> tuple[float, float]:
    """(threshold at 100 % recall, operating threshold at the KPI's FAR) on the analysis set."""
    d, p = scores[defect], scores[~defect]
    t100 = float(d.min()) if d.size else 1.0
    q = min(max(1.0 - far_target_pct / 100.0, 0.0), 1.0)
    t_op = float(np.quantile(p, q, method="higher")) if p.size else t100
    return t100, t_op


def find_failures(df: pd.DataFrame, scores: np.ndarray, far_target_pct: float) -> tuple[pd.DataFrame, float, float]:
    """Rows that fail at the operating point, with ``kind``, ``score``, ``gap`` and ``far_cost`` columns."""
    defect = (df["label"] != PASS).to_numpy()
    t100, t_op = operating_point(scores, defect, far_target_pct)
    frame = df.assign(score=scores)
    esc = frame[defect & (scores < t_op)].assign(kind="escape")
    if esc.empty and defect.any():
        esc = frame[defect].sort_values("score").head(WEAK_DEFECTS).assign(kind="weak_defect")
    esc = esc.assign(gap=(t_op - esc["score"]).clip(lower=0.0))
    pass_sorted = np.sort(scores[~defect])
    n_pass = max(len(pass_sorted), 1)
    # share of PASS scored >= each defect: the FAR at 100 % recall if it were the lowest defect
    esc = esc.assign(far_cost=100.0 * (len(pass_sorted) - np.searchsorted(pass_sorted, esc["score"].to_numpy(),
                                                                          side="left")) / n_pass)
    fa = frame[~defect & (scores >= t100)].sort_values("score", ascending=False).head(MAX_FALSE_ALARMS)
    fa = fa.assign(kind="false_alarm", gap=fa["score"] - t100, far_cost=100.0 / n_pass)
    return pd.concat([esc, fa]), t100, t_op


def impact(kind: str, far_cost: pd.Series) -> float:
    """What a group does to FAR @ 100 % recall, in FAR points (see the module docstring)."""
    return float(far_cost.sum() if kind == "false_alarm" else far_cost.max())


def _clusters(emb: np.ndarray, k_max: int, seed: int) -> np.ndarray:
    n = len(emb)
    k = min(k_max, n // 3)
    if k < 2:
        return np.zeros(n, dtype=int)
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(emb)


def group_failures(failed: pd.DataFrame, emb: np.ndarray, *, seed: int = 0) -> pd.DataFrame:
    """Add ``group_id``, ``cluster``, ``impact``, ``rank`` and ``representative`` columns."""
    failed = failed.reset_index(drop=True).copy()
    failed["_row"] = np.arange(len(failed))  # position in ``emb`` (kept through the sort below)
    failed["cluster"] = 0
    failed["representative"] = False
    keys = failed["kind"].where(failed["kind"] == "false_alarm", "defect") + ":" + failed["label"]
    for key in keys.unique():
        idx = np.flatnonzero((keys == key).to_numpy())
        k_max = MAX_FALSE_ALARM_CLUSTERS if key.startswith("false_alarm") else MAX_CLUSTERS_PER_CLASS
        failed.loc[idx, "cluster"] = _clusters(emb[idx], k_max, seed)
    failed["group_id"] = (failed["kind"].str.replace("weak_defect", "escape") + "-" + failed["label"] + "-c"
                          + failed["cluster"].astype(str))
    stats = failed.groupby("group_id").agg(n=("score", "size"), kind=("kind", "first"))
    stats["impact"] = [round(impact(k, failed.loc[failed["group_id"] == g, "far_cost"]), 4)
                       for g, k in zip(stats.index, stats["kind"], strict=True)]
    stats = stats.sort_values(["impact", "n"], ascending=False)
    stats["rank"] = np.arange(1, len(stats) + 1)
    failed = failed.join(stats[["impact", "rank"]], on="group_id")
    for _gid, idx in failed.groupby("group_id").groups.items():
        members = np.asarray(list(idx))
        centre = emb[members].mean(axis=0)
        dist = np.linalg.norm(emb[members] - centre, axis=1)
        failed.loc[members[np.argsort(dist)[:REPRESENTATIVES]], "representative"] = True
    return failed.sort_values(["rank", "score"]).reset_index(drop=True)


def summarise(failed: pd.DataFrame, *, t100: float, t_op: float, far_target_pct: float,
              n_defects: int, n_pass: int) -> dict[str, Any]:
    groups = []
    for gid, g in failed.groupby("group_id", sort=False):
        reps = g[g["representative"]]
        groups.append({
            "group_id": gid, "rank": int(g["rank"].iloc[0]), "kind": g["kind"].iloc[0],
            "label": g["label"].iloc[0], "cluster": int(g["cluster"].iloc[0]), "n_samples": len(g),
            "impact": float(g["impact"].iloc[0]), "mean_score": float(g["score"].mean()),
            "min_score": float(g["score"].min()),
            "representatives": reps[[*ROW_COLUMNS, "score"]].to_dict(orient="records"),
        })
    return jsonable({
        "analysis_split": "validation", "threshold_100r": t100, "operating_threshold": t_op,
        "far_target_pct": far_target_pct, "n_defects": n_defects, "n_pass": n_pass,
        "n_escapes": int((failed["kind"] != "false_alarm").sum()) if len(failed) else 0,
        "n_false_alarms": int((failed["kind"] == "false_alarm").sum()) if len(failed) else 0,
        "groups": sorted(groups, key=lambda g: g["rank"]),
    })


def run_rca(adapter, *, checkpoint: Path, val_csv: Path, out_dir: Path, far_target_pct: float,
            seed: int = 0) -> RcaResult:
    """Score the validation set, find and group failures, write ``rca_gaps.csv`` + ``rca_summary.json``.

    The scores are the ones training kept for this checkpoint when the adapter has them
    (:meth:`ModelAdapter.validation_scores`: no second pass over the validation set), else a fresh
    :meth:`infer`; either way ``val_scores.csv`` holds them.
    """
    scored = out_dir / "val_scores.csv"
    kept = adapter.validation_scores(checkpoint, val_csv)
    rows = read_dataset(val_csv, require_rows=False) if kept is not None else None
    if rows is not None and len(rows) == len(kept):
        with atomic_path(scored) as tmp:
            rows.assign(score=kept).to_csv(tmp, index=False)
    else:
        adapter.infer(checkpoint, val_csv, scored)
    df = pd.read_csv(scored, dtype=str, keep_default_na=False)
    if "boardname" not in df.columns:
        df["boardname"] = ""
    scores = pd.to_numeric(df["score"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
    failed, t100, t_op = find_failures(df.drop(columns=["score"]), scores, far_target_pct)
    gaps_csv, emb_path = out_dir / "rca_gaps.csv", out_dir / "rca_embeddings.npy"
    emb = np.zeros((0, 1), dtype=np.float32)
    if len(failed):
        failed_csv = write_dataset(failed[list(ROW_COLUMNS)], out_dir / "rca_failed_rows.csv")
        emb = np.asarray(adapter.embed(checkpoint, failed_csv), dtype=np.float32)
        failed = group_failures(failed, emb, seed=seed)
        emb = emb[failed["_row"].to_numpy()]  # row i of the .npy = row i of rca_gaps.csv
    else:
        failed = failed.assign(group_id=[], cluster=[], impact=[], rank=[], representative=[])
    cols = ["group_id", "rank", "kind", "impact", "cluster", "score", "gap", "far_cost", "representative",
            *ROW_COLUMNS]
    with atomic_path(gaps_csv) as tmp:
        failed[[c for c in cols if c in failed.columns]].to_csv(tmp, index=False)
    with atomic_path(emb_path) as tmp, open(tmp, "wb") as f:
        np.save(f, emb)
    defect = (df["label"] != PASS).to_numpy()
    summary = summarise(failed, t100=t100, t_op=t_op, far_target_pct=far_target_pct,
                        n_defects=int(defect.sum()), n_pass=int((~defect).sum()))
    summary_json = atomic_write_json(out_dir / "rca_summary.json", summary)
    return RcaResult(gaps_csv=gaps_csv, summary_json=summary_json, embeddings_npy=emb_path,
                     n_escapes=summary["n_escapes"], n_false_alarms=summary["n_false_alarms"],
                     n_groups=len(summary["groups"]), operating_threshold=t_op, threshold_100r=t100)


__all__ = ["RcaResult", "find_failures", "group_failures", "impact", "operating_point", "run_rca"]
