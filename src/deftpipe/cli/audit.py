"""`deftpipe audit`: a thin shell over :mod:`deftpipe.audit` (docs/contracts.md §10, §11)."""

from __future__ import annotations

from pathlib import Path

import typer

from deftpipe.audit import audit_checkpoint, audit_markdown, audit_run
from deftpipe.cli._util import err, out, print_json, probability
from deftpipe.errors import StateError


def audit_cmd(
    run_dir: Path | None = typer.Argument(None, metavar="[RUN_DIR]",
                                          help="A run folder (results/run_<stamp>) holding best_model.json, or a "
                                               "workspace (its latest finished run)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Audit this checkpoint instead of a run."),
    threshold: float | None = typer.Option(None, "--threshold", callback=probability,
                                           help="Its fixed operating threshold."),
    csv: Path | None = typer.Option(None, "--csv", help="The holdout CSV (with --checkpoint)."),
    spec: Path | None = typer.Option(None, "--spec", help="Spec naming the adapter (default: built-in torch)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of the bootstrap interval."),
    json_out: bool = typer.Option(False, "--json", help="Print the audit as JSON on stdout."),
) -> None:
    """Score a fixed model and threshold on the holdout: recall, escapes and FAR at that threshold,
    FAR@100%R with its bootstrap interval, FAR@99%R, AUROC, per board group.

    With RUN_DIR the run's deliverable (best_model.json) is audited on its workspace's holdout and the
    result is written into best_model.json (`audit`) and RUN_DIR/audit/.

    Examples:
      deftpipe audit demo_ws/results/run_20260101_120000
      deftpipe audit --checkpoint model.pth --threshold 0.12 --csv ws/holdout/holdout_set.csv --json
    """
    direct = (checkpoint, threshold, csv)
    if run_dir is not None and any(v is not None for v in direct):
        raise typer.BadParameter("give either RUN_DIR or --checkpoint/--threshold/--csv, not both")
    if run_dir is None:
        if any(v is None for v in direct):
            raise typer.BadParameter("give RUN_DIR, or all of --checkpoint C --threshold T --csv H")
        result = audit_checkpoint(checkpoint, threshold, csv, spec=spec, seed=seed)
    else:
        result = audit_run(_run_folder(run_dir), seed=seed)
    if json_out:
        print_json(result)
    else:
        out.print("\n".join(audit_markdown(result, heading="#")), highlight=False, markup=False)


def _run_folder(path: Path) -> Path:
    """``path`` itself, or — a workspace — its newest run folder that holds a deliverable."""
    if not path.is_dir():
        raise StateError(f"{path} does not exist; give a run folder (WS/results/run_<stamp>) or a workspace")
    if not (path / "pipeline.yaml").is_file():
        return path
    runs = sorted(p for p in (path / "results").glob("run_*") if (p / "best_model.json").is_file())
    if not runs:
        raise StateError(f"{path} is a workspace with no finished run (no results/run_*/best_model.json); finish a run "
                         f"with `deftpipe run {path}`, or give a run folder (WS/results/run_<stamp>)")

    err.print(f"auditing the workspace's latest finished run: {runs[-1]}", markup=False, highlight=False)
    return runs[-1]


def register(app: typer.Typer) -> None:
    """Attach `audit` to the root app."""
    app.command("audit")(audit_cmd)
