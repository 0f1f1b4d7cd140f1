"""Mining: find real pool samples that look like the model's failures (cosine top-k with FAISS).

The pool is embedded with the current model; each mining target's failed samples are queries
against an ``IndexFlatIP`` over L2-normalised pool vectors (inner product = cosine). Once the
model separates the validation set (the caller decides), the same forward pass scores the pool
and its own hardest rows are mined too (target ``hard``): the ``hard_defects`` eligible defects
the model scores lowest and the ``hard_pass`` PASS rows it scores highest — the real failures,
or near-failures, that validation no longer shows (hard-example mining; the pool is labelled).
A pool row is mined at most once over the whole run (the mining history is every earlier
iteration's ``mined.csv``), never when it is already in the training set, and the pool must not
share a row with the validation or KPI sets — that is a hard stop, not a silent filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deftpipe._cores import fair_threads, registered
from deftpipe._fs import atomic_path, atomic_write_json
from deftpipe.data import identity_keys, is_defect, read_dataset, write_dataset
from deftpipe.deft._context import HardStop, jsonable
from deftpipe.errors import DataError


@dataclass(frozen=True)
class PoolEmbedding:
    rows_csv: Path | None  # the eligible pool rows (None: no pool / nothing eligible)
    embeddings_npy: Path | None
    n_pool: int
    n_eligible: int
    scores_npy: Path | None = None  # P(defect) of each eligible row (None: not scored)


@dataclass(frozen=True)
class MiningResult:
    mined_csv: Path
    report_json: Path
    n_rows: int
    per_target: dict[str, int]


def read_pool(pool_csv: Path) -> pd.DataFrame:
    """The pool rows, or an empty frame when the pool file is missing or has no rows."""
    if not Path(pool_csv).is_file():
        return pd.DataFrame(columns=["input_path", "golden_path", "label", "object_name", "boardname"])
    return read_dataset(pool_csv, require_rows=False)


def check_pool_leakage(pool: pd.DataFrame, pool_csv: Path, held_out: dict[str, Path]) -> None:
    """Raise DataError when the pool shares a row with a held-out set (validation, KPI)."""
    keys = set(identity_keys(pool))
    for name, csv in held_out.items():
        other = read_dataset(csv, require_rows=False)
        shared = other[identity_keys(other).isin(keys)] if len(other) else other
        if len(shared):
            first = shared.iloc[0]
            raise HardStop(
                f"mining pool {Path(pool_csv).name} shares {len(shared)} row(s) with the {name} set "
                f"{Path(csv).name} (first: {first['input_path']}/{first['object_name']}, label {first['label']}); "
                "mined rows would leak held-out data into training — remove those rows from the pool and rerun"
            )


def eligible_mask(pool: pd.DataFrame, *, exclude_keys: set[str]) -> np.ndarray:
    """True for the pool rows not mined before and not already in the training set."""
    if pool.empty:
        return np.zeros(0, dtype=bool)
    return ~identity_keys(pool).isin(exclude_keys).to_numpy()


def embed_pool(adapter, *, checkpoint: Path, pool_csv: Path, pool: pd.DataFrame, eligible: np.ndarray,
               out_dir: Path, score: bool = False) -> PoolEmbedding:
    """Embed the eligible pool rows → ``pool_rows.csv`` + ``pool_embeddings.npy`` in ``out_dir``
    (+ ``pool_scores.npy`` with ``score``, from the same pass: :meth:`ModelAdapter.embed_and_score`).

    The whole pool CSV is embedded and the eligible rows picked afterwards: the pool file does not
    change between iterations, so its decoded images come from the image cache in one read,
    where a new subset CSV every iteration would be assembled and cached anew (measured: 0.06 s
    against 0.25 s for 2.4k pairs).
    """
    if pool.empty or not eligible.any():
        return PoolEmbedding(None, None, len(pool), 0)
    scores = None
    if score:
        full, scores = adapter.embed_and_score(checkpoint, pool_csv)
        full, scores = np.asarray(full, dtype=np.float32), np.asarray(scores, dtype=np.float64)
    else:
        full = np.asarray(adapter.embed(checkpoint, pool_csv), dtype=np.float32)
    if len(full) != len(pool) or (scores is not None and len(scores) != len(pool)):
        raise DataError(f"the model adapter returned {len(full)} rows for the {len(pool)}-row pool {pool_csv}")
    rows_csv = write_dataset(pool[eligible].reset_index(drop=True), out_dir / "pool_rows.csv")
    npy = out_dir / "pool_embeddings.npy"
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, full[eligible])
    scores_npy = None
    if scores is not None:
        scores_npy = out_dir / "pool_scores.npy"
        with atomic_path(scores_npy) as tmp, open(tmp, "wb") as f:
            np.save(f, scores[eligible])
    return PoolEmbedding(rows_csv, npy, len(pool), int(eligible.sum()), scores_npy)


def hardest_rows(labels: pd.Series, scores: np.ndarray, *, taken: set[int], n_defects: int,
                 n_pass: int) -> list[int]:
    """Positions of the ``n_defects`` lowest-scored defects and the ``n_pass`` highest-scored PASS
    rows, skipping ``taken`` (ties: pool order)."""
    is_pass = ~is_defect(labels).to_numpy()
    free = np.ones(len(scores), dtype=bool)
    free[list(taken)] = False
    order = np.argsort(scores, kind="stable")
    defects = order[free[order] & ~is_pass[order]][:n_defects]
    up = np.argsort(-np.asarray(scores), kind="stable")  # highest first; ties keep pool order
    passes = up[free[up] & is_pass[up]][:n_pass]
    return [int(i) for i in (*defects, *passes)]


def _normalised(x: np.ndarray) -> np.ndarray:
    """An L2-normalised float32 copy (FAISS's multithreaded in-place normalisation; zero rows stay 0)."""
    import faiss

    out = np.array(x, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(out)
    return out


#: queries from which FAISS's flat search runs as one BLAS matrix product instead of its per-query
#: SIMD scan. FAISS 1.15 ships 128,000 (so the loop's tens of queries never used BLAS); at 20 (the
#: older default) 100 queries over 10^6 vectors take 0.25 s instead of 1.4 s, same top-k
#: (docs/benchmarks.md, "Mining top-k at scale").
BLAS_FROM_QUERIES = 20


def nearest(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and indices of the ``k`` nearest ``base`` rows for each query (FAISS's exact
    brute-force ``knn``: no index is built, so the base is not copied a second time)."""
    import faiss

    with registered():
        faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES
        faiss.omp_set_num_threads(fair_threads())  # OpenMP spins too: a fair share, as torch gets
        base_n = _normalised(base)
        return faiss.knn(_normalised(queries), base_n, min(k, len(base_n)), metric=faiss.METRIC_INNER_PRODUCT)


def max_similarity(queries: np.ndarray, base: np.ndarray | None) -> float:
    if base is None or len(base) == 0 or len(queries) == 0:
        return float("-inf")
    sims, _ = nearest(queries, base, 1)
    return float(sims.max())


def mine(*, targets: list[dict[str, Any]], gaps: pd.DataFrame, gap_emb: np.ndarray, pool: PoolEmbedding,
         top_k: int, min_similarity: float, out_dir: Path, hard_defects: int = 0,
         hard_pass: int = 0) -> MiningResult:
    """For each mining target: the ``top_k`` pool rows nearest its failed samples, above ``min_similarity``;
    then, when the pool was scored (routing scores it once validation is solved), its hardest rows
    (:func:`hardest_rows`) as target ``hard``.

    A pool row goes to the first target that picks it (no row is mined twice).
    """
    taken: set[int] = set()
    picked: list[pd.DataFrame] = []
    per_target: dict[str, int] = {}
    details = []
    rows = read_dataset(pool.rows_csv, require_rows=False) if pool.rows_csv else None
    base = np.load(pool.embeddings_npy) if pool.embeddings_npy else None
    for t in targets:
        tid = t["target_id"]
        per_target[tid] = 0
        members = np.flatnonzero((gaps["group_id"] == t["group_id"]).to_numpy())
        if rows is None or base is None or len(base) == 0 or members.size == 0:
            reason = "no queries" if rows is not None else "no eligible pool rows" if pool.n_pool else "empty pool"
            details.append({"target_id": tid, "mined": 0, "reason": reason})
            continue
        sims, idx = nearest(gap_emb[members], base, top_k + len(taken))
        best: dict[int, float] = {}
        for s, i in zip(sims.ravel(), idx.ravel(), strict=True):
            if i >= 0 and s >= min_similarity and i not in taken:
                best[int(i)] = max(best.get(int(i), -1.0), float(s))
        chosen = sorted(best, key=lambda i: -best[i])[:top_k]
        taken.update(chosen)
        per_target[tid] = len(chosen)
        if chosen:
            part = rows.iloc[chosen].copy()
            part["source"] = "mining_pool"
            part["mining_target"] = tid
            part["similarity"] = [round(best[i], 4) for i in chosen]
            picked.append(part)
        details.append({"target_id": tid, "group_id": t["group_id"], "mined": len(chosen),
                        "max_similarity": max(best.values()) if best else float(sims.max())})
    if rows is None or pool.scores_npy is None:
        hard_defects = hard_pass = 0  # not scored: no hard rows (recorded as such in mining.json)
    if hard_defects or hard_pass:
        scores = np.load(pool.scores_npy)
        chosen = hardest_rows(rows["label"], scores, taken=taken, n_defects=hard_defects, n_pass=hard_pass)
        per_target["hard"] = len(chosen)
        if chosen:
            part = rows.iloc[chosen].copy()
            part["source"] = "mining_pool"
            part["mining_target"] = "hard"
            part["similarity"] = np.nan  # picked by score, not by similarity
            picked.append(part)
        n_def = int(is_defect(rows["label"].iloc[chosen]).sum()) if chosen else 0
        details.append({"target_id": "hard", "group_id": "the pool's hardest rows", "mined": len(chosen),
                        "reason": f"{n_def} lowest-scored defect(s) + {len(chosen) - n_def} highest-scored "
                                  "PASS row(s) of the eligible pool",
                        "score_range": [float(scores[chosen].min()), float(scores[chosen].max())] if chosen else None})
    mined = pd.concat(picked, ignore_index=True) if picked else pd.DataFrame(
        columns=["input_path", "golden_path", "label", "object_name", "boardname", "source", "mining_target",
                 "similarity"])
    mined_csv = write_dataset(mined, out_dir / "mined.csv")
    report = atomic_write_json(out_dir / "mining.json", jsonable({
        "top_k_per_target": top_k, "min_similarity": min_similarity, "hard_defects": hard_defects,
        "hard_pass": hard_pass, "n_pool_eligible": pool.n_eligible,
        "n_mined": len(mined), "targets": details}))
    return MiningResult(mined_csv=mined_csv, report_json=report, n_rows=len(mined), per_target=per_target)


def mining_history(results_dir: Path, labels: list[str]) -> set[str]:
    """Identity keys of every row mined by the iterations ``labels`` (their ``mining/mined.csv``)."""
    keys: set[str] = set()
    for label in labels:
        csv = Path(results_dir) / label / "mining" / "mined.csv"
        if csv.is_file():
            df = read_dataset(csv, require_rows=False)
            if len(df):
                keys.update(identity_keys(df))
    return keys


__all__ = ["MiningResult", "PoolEmbedding", "check_pool_leakage", "eligible_mask", "embed_pool", "hardest_rows",
           "max_similarity", "mine", "mining_history", "nearest", "read_pool"]
