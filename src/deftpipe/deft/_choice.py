"""Which model a run keeps: a chain of candidates, each challenging the one in hand on the KPI set.

The chain is the order the run made its models in — the user's spec trained once, the loop's
baseline (Phase 1's hand-off), ``iter1..N``, Phase 3's winner. A challenger replaces the model in
hand only when :func:`deftpipe.selection.challenge` finds it better beyond the noise: a paired
bootstrap of the rule's figure on the same KPI rows (each model's ``inference_csv``, joined on the
rows' identity). A candidate whose scores cannot be read (a state written before the scores were
kept) is compared on its recorded figure, strictly lower, as before — and the choice says so.

This module is the one place that rule lives: the loop's warm start, the hand-off to Phase 3, the
best model and the Phase 1 hand-off all call :func:`keep`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from deftpipe.data import identity_keys, is_defect
from deftpipe.deft._records import DeftState
from deftpipe.selection import Challenge, beats_by_rule, challenge, rule_figure


@dataclass(frozen=True)
class Candidate:
    """A model the run may keep: its label, its recorded KPI metrics and its KPI scores' CSV."""

    label: str
    record: dict[str, Any]

    @property
    def scores_csv(self) -> str | None:
        return self.record.get("inference_csv")


@dataclass
class Choice:
    """The model kept and, for each challenger, why it did or did not replace the one in hand."""

    kept: Candidate
    decisions: list[dict[str, Any]] = field(default_factory=list)


@lru_cache(maxsize=32)
def _scores(csv: str, mtime_ns: int) -> pd.DataFrame:
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    out = pd.DataFrame({"key": identity_keys(df).to_numpy(), "defect": is_defect(df["label"]).to_numpy(),
                        "score": pd.to_numeric(df["score"], errors="coerce").to_numpy(dtype=float)})
    return out.drop_duplicates("key", keep="first").set_index("key")


def kpi_scores(csv: str | Path | None) -> pd.DataFrame | None:
    """``key → (defect, score)`` of a KPI inference CSV; None when it cannot be read."""
    if not csv:
        return None
    path = Path(csv)
    try:
        return _scores(str(path), path.stat().st_mtime_ns)
    except (OSError, ValueError, KeyError):
        return None


def paired(incumbent: Candidate, challenger: Candidate, *, seed: int = 0) -> Challenge | None:
    """The paired challenge on the rows both models scored; None when either's scores are unreadable
    or the two share no row."""
    a, b = kpi_scores(incumbent.scores_csv), kpi_scores(challenger.scores_csv)
    if a is None or b is None:
        return None
    both = a.join(b[["score"]].rename(columns={"score": "score_c"}), how="inner").dropna(subset=["score", "score_c"])
    if both.empty or not both["defect"].any() or both["defect"].all():
        return None
    return challenge(both["defect"].to_numpy(dtype=bool), both["score"].to_numpy(), both["score_c"].to_numpy(),
                     seed=seed)


def _same_model(a: Candidate, b: Candidate) -> bool:
    ca, cb = a.record.get("best_ckpt_path") or a.record.get("checkpoint"), \
        b.record.get("best_ckpt_path") or b.record.get("checkpoint")
    return bool(ca) and bool(cb) and Path(str(ca)).resolve() == Path(str(cb)).resolve()


def decide(incumbent: Candidate, challenger: Candidate) -> dict[str, Any]:
    """One step of the chain: ``{"challenger", "incumbent", "replaces", "how", ...}``."""
    out: dict[str, Any] = {"challenger": challenger.label, "incumbent": incumbent.label}
    if _same_model(incumbent, challenger):
        return {**out, "replaces": False, "how": "the same checkpoint"}
    c = paired(incumbent, challenger)
    if c is not None:
        return {**out, **c.as_dict(), "how": "paired bootstrap on the KPI rows", "why": str(c)}
    figure = rule_figure([incumbent.record, challenger.record])
    wins = beats_by_rule(challenger.record, incumbent.record)
    return {**out, "replaces": wins, "figure": figure, "incumbent_value": incumbent.record.get(figure),
            "challenger_value": challenger.record.get(figure),
            "how": "recorded figures, strictly lower (KPI scores not readable)",
            "why": f"{figure} {challenger.record.get(figure)} vs {incumbent.record.get(figure)}"}


def keep(chain: list[Candidate]) -> Choice | None:
    """Walk the chain in order; the first candidate with a KPI figure starts in hand."""
    valued = [c for c in chain if c.record.get("far_pct") is not None]
    if not valued:
        return None
    choice = Choice(valued[0])
    for challenger in valued[1:]:
        d = decide(choice.kept, challenger)
        choice.decisions.append(d)
        if d["replaces"]:
            choice.kept = challenger
    return choice


def loop_chain(state: DeftState | Mapping[str, Any], *, before: str | None = None) -> list[Candidate]:
    """``baseline, iter1..N`` (those before ``before`` only, when given) with a checkpoint, in order."""
    return [Candidate(lb, it.to_json()) for lb, it in DeftState.view(state).loop_iterations(before=before)
            if it.best_ckpt_path]


def loop_best(state: DeftState | Mapping[str, Any], *, before: str | None = None) -> Choice | None:
    """The loop's best iteration (never ``final_automl``)."""
    return keep(loop_chain(state, before=before))


__all__ = ["Candidate", "Choice", "decide", "keep", "kpi_scores", "loop_best", "loop_chain", "paired"]
