"""`deftpipe deft run` and the top-level `deftpipe status` (thin shells over ``deftpipe.deft``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from deftpipe.cli._util import err, out, print_json
from deftpipe.config import load_config
from deftpipe.deft import describe_run, latest_unfinished, new_run_folder, run_folders, run_loop, sweep_line
from deftpipe.errors import StateError

deft_app = typer.Typer(
    help="The DEFT data-improvement loop.\n\nExample: deftpipe deft run ws --yes --max-iterations 2",
    no_args_is_help=True,
)


def _summary(ws: Path, cfg, folder: Path | None, n: int) -> Table:
    d = cfg.deft
    t = Table(title="DEFT loop", show_header=False)
    t.add_row("workspace", str(ws))
    t.add_row("run folder", f"resume {folder}" if folder else "new results/run_<timestamp>/")
    t.add_row("KPI", f"{cfg.kpi.metric} {cfg.kpi.operator} {cfg.kpi.target:g} (KPI set: {cfg.data.kpi_csv})")
    t.add_row("iterations", f"max {n}; {d.num_epochs} epoch(s) each, warm-started at {d.warm_start_lr_scale:g}x "
                            f"the spec's learning rate; baseline epochs {d.baseline_epochs or 'from the spec'}")
    t.add_row("SDG", f"{d.sdg.count_per_target} pairs per defect target, {d.sdg.hard_pass_per_target} hard PASS "
                     "per false-alarm group")
    t.add_row("mining", f"top {d.mining.top_k_per_target} per target at cosine >= {d.mining.min_similarity} "
                        f"from {cfg.data.pool_csv}; once validation is solved, + the pool's {d.mining.hard_defects} "
                        f"lowest-scored defects and {d.mining.hard_pass} highest-scored PASS rows")
    t.add_row("gate", f"hard stop if FAR worse than baseline by > {d.regression_gate_pct} points"
              if d.regression_gate_pct is not None else "no regression gate")
    return t


def run_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder (holds pipeline.yaml)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    max_iterations: int | None = typer.Option(None, "--max-iterations", min=0, help="Override deft.max_iterations."),
    new: bool = typer.Option(False, "--new", help="Start a new run folder even if an unfinished one exists."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines."),
    json_out: bool = typer.Option(False, "--json", help="Print the final deft_state.json to stdout."),
) -> None:
    """Run the DEFT loop alone: baseline train (unless pre-seeded) → iterations → KPI gate → report.

    Resumes the newest unfinished run in WS/results/ (use --new for a fresh one).

    Example: deftpipe deft run ws --yes --max-iterations 2
    """
    cfg = load_config(workspace)
    folder = None if new else latest_unfinished(workspace)
    n = max_iterations if max_iterations is not None else cfg.deft.max_iterations
    err.print(_summary(workspace.resolve(), cfg, folder, n))
    if not yes:
        try:
            ok = typer.confirm("Start the DEFT loop?", default=False, err=True)
        except typer.Abort:  # no answer on stdin (EOF)
            ok = False
        if not ok:
            err.print("aborted; nothing was written")
            raise typer.Exit(1)
    folder = folder or new_run_folder(workspace)
    err.print(f"results: {folder}")
    state = run_loop(workspace, results_dir=folder, config=cfg, max_iterations=max_iterations,
                     show_progress=not quiet)
    if json_out:
        print_json(state)
    else:
        out.print(f"DEFT run {state['status']}: {state.get('reason')}; report: {folder / 'report.html'}")
    if state["status"] == "failed":
        raise typer.Exit(1)


def _fmt(v, spec: str = ".2f") -> str:
    try:
        return "" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)
    except (ValueError, TypeError):  # a number of the wrong kind in a state file: show it as it is
        return str(v)


def status_cmd(
    workspace: Path = typer.Argument(..., help="Workspace folder (holds pipeline.yaml)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Where the latest run of WS stands: pipeline phases, DEFT iterations, last event.

    Example: deftpipe status ws
    """
    if not workspace.is_dir():
        raise StateError(f"{workspace} does not exist" + (" (it is a file)" if workspace.exists() else "")
                         + "; give the workspace folder (the one holding pipeline.yaml)")
    folders = run_folders(workspace)
    if not folders:
        raise StateError(f"no runs in {workspace}/results/; start one with `deftpipe run {workspace}` "
                         f"or `deftpipe deft run {workspace}`")
    info = describe_run(folders[-1])
    if json_out:
        print_json(info)
        return
    # every value shown comes from files: Text() keeps "[...]" literal (no Rich markup)
    out.print(Text(f"run: {info['results_dir']}"))
    pipe = info["pipeline"]
    if pipe:
        t = Table(title=Text(f"pipeline: {pipe.get('status', '?')}"))
        for col in ("phase", "status", "summary"):
            t.add_column(col)
        for name, ph in (pipe.get("phases") or {}).items():
            t.add_row(*(Text(str(v)) for v in (name, ph.get("status", ""),
                                                ph.get("summary") or ph.get("error") or "")))
        out.print(t)
        if pipe.get("error"):
            out.print(Text(f"pipeline record: {pipe['error']}"))
    for sweep in info.get("sweeps", []):
        out.print(Text(sweep_line(sweep, live=info["live"])))
    state = info["deft"]
    running = (pipe or {}).get("status") in ("running", "in_progress") or (state or {}).get("status") == "in_progress"
    if info["live"]:
        out.print("process: live (a deftpipe process holds the run's lock)")
    elif running:
        out.print(Text(f"process: none — the run stopped without finishing (crash, kill or power loss); rerun "
                       f"`deftpipe run {workspace}` (or `deftpipe deft run {workspace}`) to resume it"))
    if state is None:
        out.print("DEFT loop: not started")
        return
    t = Table(title=Text(f"DEFT loop: {state['status']}" + (f" — {state['reason']}" if state.get("reason") else "")))
    for col in ("iteration", "status", "stage completed", "FAR@100%R %", "threshold", "+SDG", "+mined", "train rows"):
        t.add_column(col)
    for label, it in state["iterations"].items():
        t.add_row(*(Text(v) for v in (
            label, str(it.get("status", "")), str(it.get("stage_completed") or ""), _fmt(it.get("far_pct")),
            _fmt(it.get("threshold"), ".4f"), _fmt(it.get("n_added_sdg"), "d"), _fmt(it.get("n_added_mined"), "d"),
            _fmt(it.get("n_train_rows"), "d"))))
    out.print(t)
    if state["events"]:
        e = state["events"][-1]
        out.print(Text(f"last event #{e.get('seq')} {e.get('ts')} [{e.get('iter')} · {e.get('stage')}] "
                       f"{e.get('status')}: {e.get('summary')}"))
    report = Path(info["results_dir"]) / "report.html"
    if report.exists():
        out.print(Text(f"report: {report}"))


def register(app: typer.Typer) -> None:
    """Attach this part's commands to the root app."""
    deft_app.command("run")(run_cmd)
    app.add_typer(deft_app, name="deft")
    app.command("status")(status_cmd)
