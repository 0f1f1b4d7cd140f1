"""`deftpipe automl run|worker|algorithms` — thin shells over ``deftpipe.automl``."""

from __future__ import annotations

from pathlib import Path

import typer

from deftpipe._cores import ENV_THREADS
from deftpipe._outputs import check_output
from deftpipe.automl import SweepOptions, describe_algorithms, run_sweep, run_worker
from deftpipe.cli._util import finite, out, print_json

automl_app = typer.Typer(
    help="Hyperparameter sweeps on Optuna, scored on the validation set (FAR@100%R by default).\n\n"
    "Example: deftpipe automl run --spec ws/specs/baseline_spec.yaml --train ws/train/base/training_set.csv "
    "--val ws/train/base/validation_set.csv --algorithm tpe --max-recommendations 8 --out ws/automl/phase1",
    no_args_is_help=True,
)


def run(
    spec: Path = typer.Option(..., "--spec", help="base model spec YAML"),
    train_csv: Path = typer.Option(..., "--train", help="training set CSV"),
    val_csv: Path = typer.Option(..., "--val", help="validation set CSV (the only set trials are scored on)"),
    out_dir: Path = typer.Option(..., "--out", help="sweep folder: study.db, trials/, best_rec.json"),
    metric: str = typer.Option("far_pct", "--metric", metavar="far_pct|val_loss", help="metric to minimise"),
    algorithm: str = typer.Option("tpe", "--algorithm", metavar="ALG",
                                  help="bayesian|tpe|random|grid|cmaes|hyperband|asha|bohb (see `automl algorithms`)"),
    max_recommendations: int = typer.Option(4, "--max-recommendations", min=1, help="number of trials (N)"),
    storage: str | None = typer.Option(None, "--storage", metavar="URL",
                                       help="SQLAlchemy URL or SQLite file (default: OUT/study.db)"),
    study: str | None = typer.Option(None, "--study", metavar="NAME", help="study name (default: deftpipe-automl)"),
    pretrained: Path | None = typer.Option(None, "--pretrained", metavar="CKPT",
                                           help="warm-start checkpoint for every trial"),
    enqueue_spec: list[Path] | None = typer.Option(None, "--enqueue-spec", metavar="YAML",
                                                   help="spec YAML or best_rec.json to try first (repeatable)"),
    search_space: Path | None = typer.Option(None, "--search-space", metavar="YAML",
                                             help="search space YAML (default: built-in)"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="pinned epochs per trial (default: spec's)"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="pinned batch size (default: spec's)"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="sampler seed"),
    keep_checkpoints: int = typer.Option(3, "--keep-checkpoints", min=1, help="keep the best K trials' checkpoints"),
    rerun_margin: float = typer.Option(5.0, "--rerun-margin", min=0.0, callback=finite,
                                       help="re-run a winner that beats the runner-up by more (percent)"),
    heartbeat: int = typer.Option(10, "--heartbeat", min=0, help="trial heartbeat seconds (0 = off)"),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="compute threads of this process (0 = cores ÷ deftpipe workers on this host)"),
    local_workers: int = typer.Option(1, "--local-workers", min=1, max=64,
                                      help="trials at once on this host (2 pays on a CPU; needs --heartbeat > 0)"),
    as_json: bool = typer.Option(False, "--json", help="print best_rec.json on stdout"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar or summary table"),
) -> None:
    """Run or resume a sweep; writes OUT/best_rec.json. Rerun the same command to resume.

    Example: deftpipe automl run --spec ws/specs/baseline_spec.yaml --train ws/train/base/training_set.csv
    --val ws/train/base/validation_set.csv --metric far_pct --algorithm hyperband --max-recommendations 12
    --epochs 3 --out ws/automl/phase1
    """
    check_output(out_dir, inputs=[spec, train_csv, val_csv, pretrained, search_space, *(enqueue_spec or [])],
                 folder=True)
    claim_threads(threads)
    options = SweepOptions(  # the command's options are the sweep's settings, one to one
        spec=spec, train_csv=train_csv, val_csv=val_csv, out_dir=out_dir, metric=metric, algorithm=algorithm,
        max_recommendations=max_recommendations, storage=storage, study_name=study, pretrained=pretrained,
        enqueue_spec=enqueue_spec or None, search_space=search_space, num_epochs=epochs, batch_size=batch_size,
        seed=seed, keep_checkpoints=keep_checkpoints, rerun_margin=rerun_margin, heartbeat_interval=heartbeat,
        local_workers=local_workers)
    best_rec = run_sweep(options, show_progress=not quiet)
    if as_json:
        print_json(best_rec.to_json())


def worker(
    storage: str = typer.Option(..., "--storage", metavar="URL", help="storage URL of the running study"),
    study: str = typer.Option(..., "--study", metavar="NAME", help="study name"),
    out_dir: Path | None = typer.Option(None, "--out", help="where this worker writes trials (default: the sweep's)"),
    heartbeat: int = typer.Option(10, "--heartbeat", min=0, help="trial heartbeat seconds (0 = off)"),
    threads: int = typer.Option(0, "--threads", min=0,
                                help="compute threads of this process (0 = cores ÷ deftpipe workers on this host)"),
    as_json: bool = typer.Option(False, "--json", help="print a summary as JSON on stdout"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Join a study created by `automl run` and run trials until it holds N done ones.

    Example: deftpipe automl worker --storage postgresql://user@db-host:5432/optuna --study phase1 --threads 1
    """
    claim_threads(threads)
    summary = run_worker(storage, study, out_dir=out_dir, show_progress=not quiet, heartbeat_interval=heartbeat)
    if as_json:
        print_json(summary)
    else:
        out.print(f"worker done: {summary['trials_run_here']} trial(s) run here; study '{summary['study']}' holds "
                  f"{summary['done']}/{summary['target']} done trials")


def claim_threads(threads: int) -> None:
    """``--threads N``: this process's share of the cores (the rule in :mod:`deftpipe._cores`)."""
    if threads:
        import os

        os.environ[ENV_THREADS] = str(threads)


def algorithms(as_json: bool = typer.Option(False, "--json", help="print as JSON")) -> None:
    """List the sweep algorithms and when to pick each.

    Example: deftpipe automl algorithms
    """
    table = describe_algorithms()
    if as_json:
        print_json(table)
        return
    for name, summary in table.items():
        out.print(f"[bold]{name:10s}[/bold] {summary}")


def register(app: typer.Typer) -> None:
    """Attach this part's commands to the root app."""
    automl_app.command("run")(run)
    automl_app.command("worker")(worker)
    automl_app.command("algorithms")(algorithms)
    app.add_typer(automl_app, name="automl")
