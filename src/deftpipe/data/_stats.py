"""Dataset statistics: counts per label and per board, PASS:FAIL ratio; Rich tables for the CLI."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from deftpipe.data._csv import DEFECT_CLASSES, PASS, read_dataset
from deftpipe.data._workspace import SPLIT_FILES


def dataset_stats(csv: str | Path) -> dict:
    """Counts of one dataset CSV.

    Returns:
        ``{"csv", "rows", "n_pass", "n_fail", "pass_fail_ratio" (PASS per FAIL, None without FAIL),
        "labels": {label: n}, "boards": {board: n}, "boards_by_label": {board: {label: n}}}``;
        labels are ordered PASS, the DeepPCB classes, then any other class.
    """
    df = read_dataset(csv, require_rows=False)
    counts = df["label"].value_counts()
    order = [PASS, *DEFECT_CLASSES] + sorted(set(counts.index) - {PASS, *DEFECT_CLASSES})
    labels = {k: int(counts[k]) for k in order if k in counts.index}
    n_pass = labels.get(PASS, 0)
    n_fail = len(df) - n_pass
    boards = df["boardname"].replace("", "(none)")
    by_board = {str(b): {str(k): int(v) for k, v in g["label"].value_counts().sort_index().items()}
                for b, g in df.assign(boardname=boards).groupby("boardname", sort=True)}
    return {
        "csv": str(csv),
        "rows": len(df),
        "n_pass": n_pass,
        "n_fail": n_fail,
        "pass_fail_ratio": round(n_pass / n_fail, 3) if n_fail else None,
        "labels": labels,
        "boards": {b: sum(v.values()) for b, v in by_board.items()},
        "boards_by_label": by_board,
    }


def stats_table(stats: dict) -> Table:
    """Rows per label (with share) and per board, and the PASS:FAIL ratio."""
    ratio = stats["pass_fail_ratio"]
    shown = f"{ratio:.2f}:1" if ratio is not None else "no FAIL rows"
    t = Table(title=f"{stats['csv']} — {stats['rows']} rows, PASS:FAIL = {shown}")
    t.add_column("kind")
    t.add_column("name")
    t.add_column("rows", justify="right")
    t.add_column("share", justify="right")
    total = max(stats["rows"], 1)
    for label, n in stats["labels"].items():
        t.add_row("label", label, str(n), f"{100 * n / total:.1f}%")
    for board, n in stats["boards"].items():
        t.add_row("board", board, str(n), f"{100 * n / total:.1f}%")
    return t


def workspace_table(ws: str | Path) -> Table:
    """Per-split counts of a workspace: one column per split, one row per label (+ totals, boards)."""
    ws = Path(ws)
    stats = {name: dataset_stats(ws / rel) for name, rel in SPLIT_FILES.items() if (ws / rel).is_file()}
    t = Table(title=f"workspace {ws}")
    t.add_column("rows")
    for name in stats:
        t.add_column(name, justify="right")
    labels = list(dict.fromkeys(k for s in stats.values() for k in s["labels"]))
    for label in labels:
        t.add_row(label, *(str(s["labels"].get(label, 0)) for s in stats.values()))
    t.add_row("total", *(str(s["rows"]) for s in stats.values()), style="bold")
    t.add_row("boards", *(str(len(s["boards"])) for s in stats.values()))
    return t


__all__ = ["dataset_stats", "stats_table", "workspace_table"]
