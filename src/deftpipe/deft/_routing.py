"""Routing: turn the previous RCA's groups into SDG targets and mining targets.

Rules, applied to the ``rca_max_groups`` highest-impact groups, in rank order:

1. **mining** when at least one eligible pool row is within ``min_similarity`` (cosine, current
   model's embeddings) of one of the group's failed samples;
2. **sdg** when no pool row is that close (nothing real to mine), or when the group's defect
   class has fewer than :data:`MIN_REAL_EXAMPLES` rows in the current training set (an
   under-represented class gets synthetic data even when some real neighbours exist);
3. **false-alarm groups** always get hard PASS pairs from SDG (misregistration / noise), and
   mining too when the pool has close neighbours — so they can get both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deftpipe._fs import atomic_write_json
from deftpipe.deft._context import jsonable
from deftpipe.deft._mining import max_similarity

MIN_REAL_EXAMPLES = 20


@dataclass(frozen=True)
class RoutingResult:
    routing_json: Path
    targets: tuple[dict[str, Any], ...]
    n_sdg: int
    n_mining: int


def route(*, gaps: pd.DataFrame, gap_emb: np.ndarray, pool_emb: np.ndarray | None, class_counts: dict[str, int],
          max_groups: int, min_similarity: float) -> list[dict[str, Any]]:
    """One target per RCA group (rank ≤ ``max_groups``) with its routes and the reason."""
    targets = []
    if gaps.empty:
        return targets
    ranked = gaps.drop_duplicates("group_id").sort_values("rank").head(max_groups)
    for n, (_, g) in enumerate(ranked.iterrows(), start=1):
        members = np.flatnonzero((gaps["group_id"] == g["group_id"]).to_numpy())
        sim = max_similarity(gap_emb[members], pool_emb) if len(gap_emb) else float("-inf")
        close = sim >= min_similarity
        label, kind = g["label"], g["kind"]
        n_real = int(class_counts.get(label, 0))
        routes, reasons = [], []
        if close:
            routes.append("mining")
            reasons.append(f"pool neighbour at cosine {sim:.3f} >= {min_similarity}")
        if kind == "false_alarm":
            routes.append("sdg")
            reasons.append("false alarms get hard PASS pairs")
        elif not close:
            routes.append("sdg")
            reasons.append("no pool row within min_similarity" if np.isfinite(sim) else "no eligible pool rows")
        elif n_real < MIN_REAL_EXAMPLES:
            routes.append("sdg")
            reasons.append(f"only {n_real} real '{label}' rows in training (< {MIN_REAL_EXAMPLES})")
        targets.append({
            "target_id": f"t{n:02d}", "group_id": g["group_id"], "kind": kind, "label": label,
            "n_failed": int(members.size), "impact": float(g["impact"]), "routes": sorted(routes),
            "max_similarity": sim if np.isfinite(sim) else None, "n_real_in_training": n_real,
            "reason": "; ".join(reasons),
        })
    return targets


def write_routing(targets: list[dict[str, Any]], out_dir: Path, *, min_similarity: float,
                  pool_info: dict[str, Any]) -> RoutingResult:
    path = atomic_write_json(out_dir / "routing.json", jsonable({
        "rules": __doc__.split("Rules,", 1)[-1].strip() if __doc__ else "",
        "min_similarity": min_similarity, "min_real_examples": MIN_REAL_EXAMPLES, "pool": pool_info,
        "targets": targets}))
    return RoutingResult(routing_json=path, targets=tuple(targets),
                         n_sdg=sum("sdg" in t["routes"] for t in targets),
                         n_mining=sum("mining" in t["routes"] for t in targets))


__all__ = ["MIN_REAL_EXAMPLES", "RoutingResult", "route", "write_routing"]
