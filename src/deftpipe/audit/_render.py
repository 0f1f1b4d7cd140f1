"""The audit as Markdown lines (``pipeline_summary.md`` and the ``deftpipe audit`` terminal view)."""

from __future__ import annotations

from typing import Any

from deftpipe.audit._run_audit import AUDIT_LABEL
from deftpipe.metrics import fmt_value

_HEAD = ("| set | defects | PASS | recall @ shipped thr. | escapes | FAR @ shipped thr. | FAR@100%R [95 % CI] "
         "| FAR@99%R | AUROC |")


def _ci(f: dict[str, Any]) -> str:
    return f"{fmt_value(f.get('far_pct'))} [{fmt_value(f.get('far_ci_low'))}, {fmt_value(f.get('far_ci_high'))}]"


def _row(name: str, f: dict[str, Any]) -> str:
    return (f"| {name} | {f.get('n_defects')} | {f.get('n_pass')} | {fmt_value(f.get('recall_pct'))} % | "
            f"{f.get('escapes')} | {fmt_value(f.get('far_pct_at_threshold'))} % | {_ci(f)} | "
            f"{fmt_value(f.get('far_pct_at_99'))} | {fmt_value(f.get('auroc'))} |")


def _listed(title: str, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return [f"- {title}: none"]
    out = [f"- {title}:"]
    out += [f"  - row {r.get('row')} `{r.get('object_name')}` ({r.get('boardname')}, {r.get('label')}): "
            f"score {r.get('score'):.4g}" for r in rows]
    return out


def audit_markdown(audit: dict[str, Any] | None, *, heading: str = "##") -> list[str]:
    """Markdown of a run's ``audit`` object (or of :func:`audit_checkpoint`'s result)."""
    lines = [f"{heading} {AUDIT_LABEL}", ""]
    if not audit:
        return lines + ["No audit recorded for this run.", ""]
    if audit.get("done") is False:
        return lines + [f"**No audit was done**: {audit.get('reason')}.", ""]
    lines += [f"Checkpoint `{audit.get('checkpoint')}` at the shipped threshold **{audit['threshold']:.6g}**, "
              f"scored once on `{audit.get('csv')}` after the deliverable was fixed. These figures chose nothing.",
              "", _HEAD, "|---|---|---|---|---|---|---|---|---|", _row("**holdout**", audit)]
    lines += [_row(f"board {b}", f) for b, f in (audit.get("per_board") or {}).items()]
    for name, ref in (audit.get("references") or {}).items():
        lines.append(_row(f"reference: {name} (thr. {ref['threshold']:.4g})", ref))
    lines += ["", *_listed("escapes at the shipped threshold (defects it does not flag)", audit.get("escaped", [])),
              *_listed("defects that set the holdout's FAR@100%R threshold (lowest scores)",
                       audit.get("threshold_setters", [])), ""]
    return lines




def audit_line(audit: dict[str, Any] | None) -> str:
    """One line for the terminal and the pipeline record."""
    if not audit or not audit.get("done"):
        return f"audit: none — {(audit or {}).get('reason') or 'not run'}"
    return (f"audit (holdout, never used for a choice): recall {fmt_value(audit.get('recall_pct'))} % "
            f"({audit.get('escapes')} escapes) and FAR {fmt_value(audit.get('far_pct_at_threshold'))} % at the "
            f"shipped threshold {audit['threshold']:.4g}; FAR@100%R {fmt_value(audit.get('far_pct'))} % "
            f"[{fmt_value(audit.get('far_ci_low'))}, {fmt_value(audit.get('far_ci_high'))}]")


def _far_ci(a: dict[str, Any]) -> str:
    return f"{fmt_value(a.get('far_pct'))} % [{fmt_value(a.get('far_ci_low'))}, {fmt_value(a.get('far_ci_high'))}]"


def _at_threshold(a: dict[str, Any]) -> str:
    return (f"recall {fmt_value(a.get('recall_pct'))} % ({a.get('escapes')} escapes) at FAR "
            f"{fmt_value(a.get('far_pct_at_threshold'))} %")


def holdout_headline(best: dict[str, Any]) -> str | None:
    """The run's first line: the deliverable against the user's spec trained once, both audited on
    the holdout (which chose nothing), with their intervals. None when there was no audit.

    ``gain`` only when the deliverable's 95 % interval lies wholly below the user's spec's,
    ``worse`` when wholly above, else ``no gain``; a delivered user's spec says so.
    """
    audit = best.get("audit") or {}
    if not audit.get("done"):
        return None
    user = (audit.get("references") or {}).get("user_spec")
    label = best.get("best_iteration")
    if best.get("delivers_user_spec"):
        return (f"Holdout (never used for a choice): the run delivers the user's spec trained once — nothing "
                f"beat it beyond the noise of the KPI set; FAR@100%R {_far_ci(audit)}; {_at_threshold(audit)} "
                "at the shipped threshold")
    if not user or user.get("far_pct") is None:
        return (f"Holdout (never used for a choice): deliverable ({label}) FAR@100%R {_far_ci(audit)}; "
                f"{_at_threshold(audit)} at the shipped threshold (no user's spec trained once to compare with)")
    d_lo, d_hi = audit.get("far_ci_low"), audit.get("far_ci_high")
    u_lo, u_hi = user.get("far_ci_low"), user.get("far_ci_high")
    verdict = ("lower, intervals apart: a gain" if None not in (d_hi, u_lo) and d_hi < u_lo else
               "higher, intervals apart: worse than the user's spec" if None not in (d_lo, u_hi) and d_lo > u_hi
               else "intervals overlap: no gain")
    return (f"Holdout (never used for a choice): user's spec trained once FAR@100%R {_far_ci(user)} → deliverable "
            f"({label}) {_far_ci(audit)} — {verdict}; at the shipped thresholds: deliverable {_at_threshold(audit)}, "
            f"user's spec {_at_threshold(user)}")


__all__ = ["audit_line", "audit_markdown", "holdout_headline"]
