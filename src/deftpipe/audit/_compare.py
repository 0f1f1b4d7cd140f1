"""Selection (KPI set) and audit (holdout) side by side: one table for the summary and the report.

The KPI set chose the model and its threshold, so its figures are selection figures; the holdout
chose nothing, so its figures are the estimate. Each row says which is which.
"""

from __future__ import annotations

from typing import Any

from deftpipe.audit._run_audit import AUDIT_LABEL, SELECTION_LABEL
from deftpipe.metrics import ThresholdRule, fmt_value


def _ci(f: dict[str, Any]) -> str:
    if f.get("far_pct") is None:
        return "—"
    ci = f" [{fmt_value(f.get('far_ci_low'))}, {fmt_value(f.get('far_ci_high'))}]" \
        if f.get("far_ci_low") is not None else ""
    return f"{fmt_value(f.get('far_pct'))} %{ci}"


def _pct(v: Any) -> str:
    return "—" if v is None else f"{fmt_value(v)} %"


def side_by_side(best: dict[str, Any], kpi: dict[str, Any] | None) -> dict[str, Any]:
    """``{"columns": [figure, selection, audit], "rows": [[...], ...], "audit_done", "note"}``.

    Args:
        best: ``best_model.json`` (with its ``audit`` object when the audit ran).
        kpi: the chosen iteration's KPI metrics (``deft_state.json`` ``iterations.<best>``).
    """
    kpi = kpi or {}
    audit = best.get("audit") or {}
    done = bool(audit.get("done"))
    # at a threshold <= the KPI set's own 100 %-recall threshold every KPI defect is flagged
    kpi_recall = "100.00 % (by construction)" if kpi.get("n_defects") else "—"
    kpi_far_at = _pct(best.get("kpi_far_pct_at_threshold", kpi.get("far_pct")))
    a = audit if done else {}
    rows = [
        ["role", "chose the gate, best iteration, Phase 3 vs loop and the threshold", "chose nothing"],
        ["defects / PASS", f"{kpi.get('n_defects', '—')} / {kpi.get('n_pass', '—')}",
         f"{a.get('n_defects', '—')} / {a.get('n_pass', '—')}"],
        ["recall at the shipped threshold", kpi_recall,
         f"{_pct(a.get('recall_pct'))} ({a.get('escapes')} escapes)" if done else "—"],
        ["FAR at the shipped threshold", kpi_far_at, _pct(a.get("far_pct_at_threshold"))],
        ["FAR@100%R [95 % CI]", _ci(kpi), _ci(a)],
        ["FAR@99%R", _pct(kpi.get("far_pct_at_99")), _pct(a.get("far_pct_at_99"))],
        ["AUROC", fmt_value(kpi.get("auroc")), fmt_value(a.get("auroc"))],
    ]
    thr = best.get("threshold")
    note = (f"shipped threshold {thr:.6g} = {ThresholdRule.of(best)} (100 %-recall threshold "
            f"{best.get('kpi_threshold', thr):.6g})" if thr is not None else "no threshold")
    if not done:
        note += f"; {audit.get('reason') or 'the audit has not run'}"
    return {"columns": ["figure", SELECTION_LABEL, AUDIT_LABEL], "rows": rows, "audit_done": done, "note": note}


def side_by_side_markdown(table: dict[str, Any]) -> list[str]:
    lines = ["| " + " | ".join(table["columns"]) + " |", "|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in table["rows"]]
    return [*lines, "", f"_{table['note']}._", ""]


__all__ = ["side_by_side", "side_by_side_markdown"]
