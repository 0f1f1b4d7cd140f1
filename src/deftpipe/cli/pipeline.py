"""`deftpipe preflight`, `deftpipe run`, `deftpipe demo`: thin shells over :mod:`deftpipe.pipeline`."""

from __future__ import annotations

from pathlib import Path

import typer

from deftpipe.cli._util import err, out, print_json
from deftpipe.pipeline import preflight, render_preflight, run_demo, run_pipeline


def preflight_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder (holds pipeline.yaml)."),
    json_out: bool = typer.Option(False, "--json", help="Print the nine sections as JSON on stdout."),
    new: bool = typer.Option(False, "--new", help="Describe a fresh run even if an unfinished one exists."),
    no_dry_run: bool = typer.Option(False, "--no-dry-run", help="Skip the 1-epoch dry run of the estimate."),
) -> None:
    """Every read-only check of the three-phase run, in nine sections; exit 1 on blockers.

    Example: deftpipe preflight demo_ws --json
    """
    report = preflight(workspace, new=new, measure=not no_dry_run)
    if json_out:
        print_json(report)
    else:
        render_preflight(report, out)
    if not report["ok"]:
        raise typer.Exit(1)


def run_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder (holds pipeline.yaml)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Approve the pre-flight without asking."),
    new: bool = typer.Option(False, "--new", help="Start a fresh results/run_<timestamp>/ (default: resume "
                             "the latest unfinished run, else start a new one)."),
) -> None:
    """Pre-flight, one approval, then Phase 1 (AutoML) → Phase 2 (DEFT loop) → Phase 3 (AutoML).

    Rerun the same command after Ctrl-C or a crash to resume inside the phase that was running.

    Example: deftpipe run my_ws --yes
    """
    result = run_pipeline(workspace, yes=yes, new=new, console=out)
    if result["status"] == "stopped":
        err.print(f"error: Phase 2 hard-stopped ({result['hard_stop']}); Phase 3 skipped — see "
                  f"{result['results_dir']}/pipeline_summary.md", highlight=False)
        raise typer.Exit(1)


def demo_cmd(
    directory: Path = typer.Argument(Path("deftpipe_demo"), help="Folder for the demo workspace "
                                     "(created with the synthetic dataset unless it holds one)."),
) -> None:
    """Create the synthetic AOI workspace and run all three phases with small budgets (≈ 30 s, 2 cores).

    Example: deftpipe demo demo_ws
    """
    run_demo(directory, console=out)


def register(app: typer.Typer) -> None:
    """Attach this part's commands to the root app."""
    app.command("preflight")(preflight_cmd)
    app.command("run")(run_cmd)
    app.command("demo")(demo_cmd)
