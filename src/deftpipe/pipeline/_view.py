"""Rich rendering of the pre-flight report and of the trajectory (the terminal view only)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_STYLE = {"SET": "green", "PRESENT": "green", "ok": "green", "approved by this gate": "green",
          "UNSET": "yellow", "MISSING": "red", "INVALID": "red", "BLOCKER": "red"}


def _status(s: str | None) -> str:
    return f"[{_STYLE.get(s, 'white')}]{s}[/]" if s else ""


def render_preflight(report: dict[str, Any], console: Console) -> None:
    """Print the nine sections, the warnings and the blockers, in order."""
    console.rule("[bold]deftpipe pre-flight")
    for n, sec in enumerate(report["sections"], start=1):
        console.print(f"\n[bold]{n}. {sec['title']}[/]")
        if sec["name"] == "datasets":
            table = Table(show_edge=False, pad_edge=False)
            for col in ("split", "rows", "PASS", "defects", "boards", "labels", "status"):
                table.add_column(col, justify="right" if col in ("rows", "PASS", "defects", "boards") else "left")
            for r in sec["table"]:
                labels = ", ".join(f"{k} {v}" for k, v in r["labels"].items() if k != "PASS")
                table.add_row(r["split"], str(r["rows"]), str(r["pass"]), str(r["defects"]), str(r["boards"]),
                              labels, _status(r["status"]))
            console.print(table)
        for it in sec["items"]:
            value = "" if it["value"] is None else str(it["value"])
            console.print(f"  {it['name']:<34} {value} {_status(it['status'])}".rstrip(), highlight=False)
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for b in report["blockers"]:
        console.print(f"[red]blocker:[/] {b}", highlight=False)


def _pct(v: Any) -> str:
    return "—" if v is None else f"{float(v):.2f}"


def render_trajectory(points: list[dict[str, Any]], console: Console, *, title: str = "Trajectory") -> None:
    """One row per step; compact enough for an 80-column terminal (sources are in the summary)."""
    table = Table(title=title, show_edge=False, pad_edge=False)
    for col in ("step", "set", "metric", "value", "95% CI", "AUROC", "rows"):
        table.add_column(col, justify="right" if col in ("value", "AUROC", "rows") else "left", no_wrap=True)
    for p in points:
        ci = p.get("ci")
        table.add_row(p["step"], {"validation": "val", "KPI test": "KPI"}.get(p["set"], p["set"]), p["metric"],
                      _pct(p.get("value")), f"{_pct(ci[0])}–{_pct(ci[1])}" if ci else "",
                      _pct(p.get("auroc")) if p.get("auroc") is not None else "", str(p.get("train_rows") or ""))
    console.print(table)


__all__ = ["render_preflight", "render_trajectory"]
