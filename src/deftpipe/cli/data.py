"""`deftpipe init` and the `deftpipe data ...` commands (thin shells over ``deftpipe.data``)."""

from __future__ import annotations

from pathlib import Path

import typer

from deftpipe import data
from deftpipe._bars import counting_bar
from deftpipe.cli._util import err, finite, out, print_json
from deftpipe.tao import adopt_tao_workspace

data_app = typer.Typer(
    help="Check dataset CSVs: validate, stats, leakage.\n\nExample: deftpipe data stats ws/kpi/testing_set.csv",
    no_args_is_help=True,
)


def init(
    dest: Path = typer.Argument(..., metavar="DIR", help="New (or empty) workspace folder."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Generate the built-in synthetic AOI dataset."),
    from_deeppcb: Path | None = typer.Option(None, "--from-deeppcb", metavar="PATH",
                                             help="Import a DeepPCB checkout (folder holding PCBData/)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Random seed (same seed, same workspace)."),
    size: str = typer.Option("small", "--size", metavar="small|medium", help="Synthetic dataset size."),
    kpi_groups: str | None = typer.Option(None, "--kpi-groups", help="DeepPCB groups for the KPI test set, e.g. 20085,44000."),
    val_groups: str | None = typer.Option(None, "--val-groups", help="DeepPCB groups for validation."),
    pool_groups: str | None = typer.Option(None, "--pool-groups", help="DeepPCB groups for the mining pool."),
    holdout_groups: str | None = typer.Option(
        None, "--holdout-groups", help="DeepPCB groups for the holdout (used by no other split; read only by "
        "`deftpipe audit`). Default: no holdout."),
    crop_size: int = typer.Option(64, "--crop-size", min=16, max=640, help="DeepPCB crop side in pixels."),
    pass_ratio: float = typer.Option(4.0, "--pass-ratio", min=0.0, callback=finite,
                                     help="DeepPCB PASS crops per FAIL crop."),
    from_tao: Path | None = typer.Option(None, "--from-tao", metavar="SPEC",
                                         help="Adopt a TAO Visual ChangeNet classify spec's workspace in place."),
    kpi_csv: Path | None = typer.Option(None, "--kpi-csv", help="--from-tao: the KPI test set CSV."),
    pool_csv: Path | None = typer.Option(None, "--pool-csv", help="--from-tao: the labelled mining pool CSV."),
    platform: str = typer.Option("virtualenv", "--platform", metavar="virtualenv|docker|slurm|kubernetes",
                                 help="--from-tao: where TAO jobs run."),
    context: int | None = typer.Option(None, "--context", min=1, max=4,
                                       help="DeepPCB: store crops this many times the crop size, centred on "
                                            "it (the model sees the neighbourhood downsampled). Default: 2."),
    align: bool = typer.Option(False, "--align/--no-align",
                               help="DeepPCB: cut each test crop where it lines up with its template locally."),
) -> None:
    """Create a workspace (docs/contracts.md §2) from the synthetic generator or a DeepPCB checkout.

    Examples:
      deftpipe init --synthetic demo_ws --seed 0 --size small
      deftpipe init --from-deeppcb ../shared/deeppcb dp_ws --kpi-groups 20085
      deftpipe init --from-deeppcb ../shared/deeppcb dp_ws --kpi-groups 44000 --holdout-groups 12000,12100
      deftpipe init --from-tao experiment.yaml tao_ws --kpi-csv kpi.csv --pool-csv pool.csv
    """
    if synthetic + (from_deeppcb is not None) + (from_tao is not None) != 1:
        raise typer.BadParameter("give exactly one of --synthetic, --from-deeppcb PATH or --from-tao SPEC")
    if from_tao is not None:
        _init_from_tao(from_tao, dest, kpi_csv, pool_csv, platform)
        return

    if synthetic:
        if size not in data.SYNTHETIC_SIZES:
            raise typer.BadParameter(f"--size must be small or medium (got '{size}')")
        if any(v is not None for v in (kpi_groups, val_groups, pool_groups, holdout_groups)):
            raise typer.BadParameter("--kpi-groups/--val-groups/--pool-groups/--holdout-groups apply to "
                                     "--from-deeppcb only")
        if context is not None or align:
            raise typer.BadParameter("--context/--align apply to --from-deeppcb only")
        with counting_bar(err, f"drawing synthetic image pairs ({size})") as progress:
            ws = data.make_synthetic_workspace(dest, seed=seed, size=size, progress=progress)
    else:
        with counting_bar(err, "cropping image pairs") as progress:
            ws = data.import_deeppcb(
                from_deeppcb, dest, crop_size=crop_size, seed=seed, pass_ratio=pass_ratio, align=align,
                kpi_groups=_groups(kpi_groups), val_groups=_groups(val_groups), pool_groups=_groups(pool_groups),
                holdout_groups=_groups(holdout_groups), log=err.print, progress=progress,
                **({} if context is None else {"context": context}),
            )
    out.print(data.workspace_table(ws))
    out.print(f"workspace ready: {ws}")


def _init_from_tao(spec: Path, dest: Path, kpi_csv: Path | None, pool_csv: Path | None, platform: str) -> None:
    if kpi_csv is None or pool_csv is None:
        raise typer.BadParameter("--from-tao needs --kpi-csv CSV and --pool-csv CSV")
    ws = adopt_tao_workspace(spec, dest, kpi_csv=kpi_csv, pool_csv=pool_csv, platform=platform, log=err.print)
    out.print(f"TAO workspace adopted in place (nothing copied or changed); deftpipe workspace ready: {ws}")


def _groups(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [g.strip() for g in value.split(",") if g.strip()]


@data_app.command("validate")
def validate(
    csv: Path = typer.Argument(..., metavar="CSV", help="Dataset CSV."),
    images_dir: Path | None = typer.Option(None, "--images-dir",
                                           help="Image root (default: the workspace's images dir)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Check a dataset CSV: columns, labels, duplicates; images present, decodable to 8-bit gray,
    golden and test of one size and of the workspace spec's model.input_size.

    Example: deftpipe data validate ws/train/base/training_set.csv
    """
    df = data.validate_dataset(csv, images_dir=images_dir, input_size=data.workspace_input_size(csv))
    if as_json:
        print_json({"csv": str(csv), "rows": len(df), "valid": True})
    else:
        out.print(f"{csv}: {len(df)} rows, valid")


@data_app.command("stats")
def stats(
    csv: Path = typer.Argument(..., metavar="CSV", help="Dataset CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON on stdout."),
) -> None:
    """Counts per label and per board, and the PASS:FAIL ratio.

    Example: deftpipe data stats ws/kpi/testing_set.csv --json
    """
    s = data.dataset_stats(csv)
    if as_json:
        print_json(s)
    else:
        out.print(data.stats_table(s))


@data_app.command("leakage")
def leakage(
    csvs: list[Path] = typer.Argument(..., help="Two or more dataset CSVs."),
    images_dir: Path | None = typer.Option(None, "--images-dir",
                                           help="Image root (default: each CSV's workspace images dir)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Rows shared by any two CSVs, by identity key and by image content hash, and near-duplicates
    (the same picture with a few pixels changed), per pair.

    Ends with the lines "<m> near-duplicate rows" and "<n> overlapping rows"; exits 1 when either is > 0.

    Example: deftpipe data leakage ws/train/base/training_set.csv ws/kpi/testing_set.csv
    """
    if len(csvs) < 2:
        raise typer.BadParameter("give at least two CSVs to compare")
    report = data.find_leaks(csvs, images_dir=images_dir, near=True)
    if as_json:
        print_json(report.to_dict())
    else:
        for line in report.lines():
            print(line)
        print(f"{report.n_near} near-duplicate rows")
        print(f"{report.n_overlapping} overlapping rows")
    if report.n_overlapping or report.n_near:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach `init` and the `data` sub-app to the root app."""
    app.command("init")(init)
    app.add_typer(data_app, name="data")
