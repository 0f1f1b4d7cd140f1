"""Wall-clock budgets (``budget:`` in pipeline.yaml): the pre-flight's check and the run's deadlines.

A phase's deadline is the earlier of its own budget and what is left of the run's, both counted
in the phases' recorded ``duration_sec`` (so a resumed run keeps the time it already spent). The
sweeps start no new trial after the deadline (the running one finishes; at least one is done),
the loop starts no new iteration; the phase then records ``stop_reason``. Phase 3 is skipped
when the run's budget is already spent. The pre-flight refuses a plan whose estimate's low end
already exceeds a budget.
"""

from __future__ import annotations

import time
from typing import Any

from deftpipe.automl import BestRec, RecStatus
from deftpipe.config import PipelineConfig

PHASES = ("phase1", "phase2", "phase3")


def spent(phases: dict[str, Any]) -> float:
    return sum(float(ph.get("duration_sec") or 0.0) for ph in phases.values())


def seconds_left(cfg: PipelineConfig, phases: dict[str, Any], phase: str) -> float | None:
    """Seconds the phase may still start work in (None: no budget applies)."""
    b = cfg.budget
    limits = []
    own = getattr(b, f"{phase}_seconds")
    if own is not None:
        limits.append(own - float(phases.get(phase, {}).get("duration_sec") or 0.0))
    if b.run_seconds is not None:
        limits.append(b.run_seconds - spent(phases))
    return min(limits) if limits else None


def deadline(cfg: PipelineConfig, phases: dict[str, Any], phase: str) -> float | None:
    left = seconds_left(cfg, phases, phase)
    return None if left is None else time.time() + left


def limit_text(cfg: PipelineConfig, phase: str) -> str:
    b = cfg.budget
    parts = [f"{phase} {getattr(b, f'{phase}_seconds'):g} s"] if getattr(b, f"{phase}_seconds") else []
    if b.run_seconds:
        parts.append(f"run {b.run_seconds:g} s")
    return " / ".join(parts)


def sweep_stop_reason(best_rec: BestRec, planned: int, cfg: PipelineConfig, phase: str) -> str | None:
    done = sum(1 for r in best_rec.all_recs if RecStatus.of(r.status) is RecStatus.COMPLETE and not r.retry_of)
    if done >= planned or (getattr(cfg.budget, f"{phase}_seconds") is None and cfg.budget.run_seconds is None):
        return None
    return f"time budget ({limit_text(cfg, phase)}) reached after {done} of {planned} trials"


def check(cfg: PipelineConfig, seconds: dict[str, Any] | None, blockers: list[str]) -> list[dict[str, Any]]:
    """Pre-flight items for the budgets; a blocker for each budget the estimate's low end exceeds."""
    b = cfg.budget
    pairs = [(f"{p}_seconds", getattr(b, f"{p}_seconds"), f"{p}_low") for p in PHASES]
    pairs.append(("run_seconds", b.run_seconds, "total_low"))
    items = []
    for key, limit, est_key in pairs:
        if limit is None:
            continue
        low = (seconds or {}).get(est_key)
        over = low is not None and low > limit
        items.append({"name": f"budget.{key}", "value": f"{limit:g} s" + (
            f" (estimate from {low:g} s)" if low is not None else ""), "status": "BLOCKER" if over else None})
        if over:
            blockers.append(f"budget.{key} is {limit:g} s but the estimate's low end is {low:g} s: raise the "
                            "budget or plan fewer trials/iterations")
    return items


__all__ = ["check", "deadline", "seconds_left", "spent", "sweep_stop_reason"]
