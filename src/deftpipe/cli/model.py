"""`deftpipe model train|evaluate|infer|embed` — thin shells over the model adapter."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from deftpipe._fs import atomic_path
from deftpipe._outputs import check_output
from deftpipe.cli._util import err, out, print_json, probability
from deftpipe.errors import StateError
from deftpipe.model import get_adapter
from deftpipe.spec import load_spec

model_app = typer.Typer(help="Train, evaluate, run and embed the golden/test change classifier.",
                        no_args_is_help=True)


class RichProgress:
    """Two Rich bars on stderr: epochs, and batches of the current epoch (ETA, live loss/FAR)."""

    def __init__(self) -> None:
        self._p = None
        self._last_far = "—"

    def start(self, epochs: int, steps_per_epoch: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err, transient=False)
        self._p.start()
        self._epochs = self._p.add_task("epochs", total=epochs, info="")
        self._batches = self._p.add_task("epoch 1", total=steps_per_epoch, info="")
        self._steps = steps_per_epoch

    def batch(self, epoch: int, step_in_epoch: int, loss: float) -> None:
        self._p.update(self._batches, completed=step_in_epoch, description=f"epoch {epoch}",
                       info=f"loss {loss:.4f}")

    def epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._last_far = f"{metrics['far_pct']:.2f}%"
        self._p.update(self._epochs, completed=epoch,
                       info=f"val FAR@100%R {self._last_far} · AUROC {metrics['auroc'] or 0:.4f} · "
                            f"val_loss {metrics['val_loss'] or float('nan'):.4f}")
        if epoch < self._p.tasks[self._epochs].total:
            self._p.reset(self._batches, total=self._steps, description=f"epoch {epoch + 1}", info="")

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def _summary(m: dict[str, Any]) -> str:
    auroc = f"{m['auroc']:.4f}" if m.get("auroc") is not None else "n/a"
    return (f"FAR@100%R {m['far_pct']:.2f}% (95% CI {m['far_ci_low']:.2f}–{m['far_ci_high']:.2f}; "
            f"{m['n_defects']} defects, {m['n_pass']} PASS) · FAR@99%R "
            f"{m['far_pct_at_99'] if m['far_pct_at_99'] is not None else float('nan'):.2f}% · AUROC {auroc}")


def train(
    spec: Path = typer.Option(..., "--spec", help="model spec YAML"),
    train_csv: Path = typer.Option(..., "--train", help="training set CSV"),
    val_csv: Path = typer.Option(..., "--val", help="validation set CSV (selects the checkpoint)"),
    out_dir: Path = typer.Option(..., "--out", help="output folder for checkpoints and metrics.json"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="override train.num_epochs"),
    pretrained: Path | None = typer.Option(None, "--pretrained", help="warm-start weights from a checkpoint"),
    as_json: bool = typer.Option(False, "--json", help="print the best epoch's metrics as JSON on stdout"),
) -> None:
    """Train the classifier; keeps the last epoch's checkpoint unless an earlier one beats it on validation beyond the noise.

    Example: deftpipe model train --spec ws/specs/baseline_spec.yaml --train ws/train/base/training_set.csv
    --val ws/train/base/validation_set.csv --out runs/m1 --epochs 5
    """
    check_output(out_dir, inputs=[spec, train_csv, val_csv, pretrained], folder=True)
    if out_dir.exists() and (not out_dir.is_dir() or (out_dir / "metrics.json").exists()
                             or any(out_dir.glob("model_epoch_*.pth"))):
        raise StateError(f"--out {out_dir} holds an earlier training (metrics.json, checkpoints) that this one would "
                         "delete, or is a file; pass a new folder, or delete this one first")
    s = load_spec(spec)
    if epochs is not None:
        s.train.num_epochs = epochs
    t0 = time.perf_counter()
    result = get_adapter(s, progress=RichProgress()).train(s, train_csv, val_csv, out_dir, pretrained=pretrained)
    if as_json:
        print_json({**result.metrics, "best_checkpoint": str(result.best_checkpoint)})
    else:
        out.print(f"best: {result.best_checkpoint} (epoch {result.best_epoch}) · {_summary(result.metrics)} · "
                  f"{time.perf_counter() - t0:.0f}s")


def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model_epoch_<EEE>_step_<SSS>.pth"),
    csv: Path = typer.Option(..., "--csv", help="dataset CSV to evaluate on"),
    threshold: float | None = typer.Option(None, "--threshold", callback=probability,
                                           help="operating threshold for escapes/pred counts "
                                                "(default: the checkpoint's validation threshold)"),
    images_dir: Path | None = typer.Option(None, "--images-dir", help="image root of the CSV (default: the "
                                           "images folder of the workspace holding the CSV)"),
    spec: Path | None = typer.Option(None, "--spec", help="spec selecting the adapter (default: built-in)"),
    as_json: bool = typer.Option(False, "--json", help="print all metrics as JSON on stdout"),
) -> None:
    """Metrics of a checkpoint on a CSV: FAR@100%R with its CI, FAR@99%R, AUROC, escapes.

    Example: deftpipe model evaluate --checkpoint runs/m1/model_epoch_005_step_130.pth
    --csv ws/kpi/testing_set.csv --json
    """
    with err.status("evaluating…"):
        m = get_adapter(spec, images_dir=images_dir).evaluate(checkpoint, csv, threshold=threshold)
    if as_json:
        print_json(m)
    else:
        out.print(f"{csv.name}: {_summary(m)} · escapes {m['escapes']} at {m['escape_threshold']:.4f} · "
                  f"threshold {m['threshold']}")


def infer(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model_epoch_<EEE>_step_<SSS>.pth"),
    csv: Path = typer.Option(..., "--csv", help="dataset CSV to score"),
    out_csv: Path = typer.Option(..., "--out", help="output CSV: the rows + score + prediction"),
    threshold: float | None = typer.Option(None, "--threshold", callback=probability,
                                           help="default: the checkpoint's validation threshold"),
    images_dir: Path | None = typer.Option(None, "--images-dir", help="image root of the CSV (default: the "
                                           "images folder of the workspace holding the CSV)"),
    spec: Path | None = typer.Option(None, "--spec", help="spec selecting the adapter (default: built-in)"),
) -> None:
    """Score every row (P(defect)) and predict PASS/FAIL at the threshold.

    Example: deftpipe model infer --checkpoint runs/m1/model_epoch_005_step_130.pth
    --csv ws/kpi/testing_set.csv --out runs/m1/inference.csv
    """
    check_output(out_csv, inputs=[checkpoint, csv, spec, images_dir])
    with err.status("scoring…"):
        path = get_adapter(spec, images_dir=images_dir).infer(checkpoint, csv, out_csv, threshold=threshold)
    out.print(f"wrote {path}")


def embed(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model_epoch_<EEE>_step_<SSS>.pth"),
    csv: Path = typer.Option(..., "--csv", help="dataset CSV to embed"),
    out_npy: Path = typer.Option(..., "--out", help="output .npy: float32 (rows, dim)"),
    images_dir: Path | None = typer.Option(None, "--images-dir", help="image root of the CSV (default: the "
                                           "images folder of the workspace holding the CSV)"),
    spec: Path | None = typer.Option(None, "--spec", help="spec selecting the adapter (default: built-in)"),
) -> None:
    """Write one float32 embedding per row (the fused golden/test comparison) to a .npy file.

    Example: deftpipe model embed --checkpoint runs/m1/model_epoch_005_step_130.pth
    --csv ws/mining/mining_pool.csv --out pool.npy
    """
    import numpy as np

    check_output(out_npy, inputs=[checkpoint, csv, spec, images_dir])
    with err.status("embedding…"):
        emb = get_adapter(spec, images_dir=images_dir).embed(checkpoint, csv)
    with atomic_path(out_npy) as tmp, open(tmp, "wb") as f:
        np.save(f, emb, allow_pickle=False)
    out.print(f"wrote {out_npy} {emb.shape[0]}x{emb.shape[1]} float32")


def register(app: typer.Typer) -> None:
    """Attach this part's commands to the root app."""
    for fn in (train, evaluate, infer, embed):
        model_app.command(fn.__name__)(fn)
    app.add_typer(model_app, name="model")
