"""The pre-flight's dry run: measure the host's per-job costs on small subsamples (docs/pipeline.md).

A 1-epoch job on a few rows is dominated by fixed costs (imports, the first forward pass, a
checkpoint write), so one timed job cannot tell fixed from per-row costs. The dry run therefore:

1. decodes a subsample's images cold (no cache) — the first-decode cost per image pair;
2. trains one epoch on a tiny subsample, untimed — it absorbs the process's one-time costs, which
   the run's own process pays in its pre-flight too, before any phase starts;
3. trains one epoch at two sizes and evaluates at two sizes, each best of two — a straight line
   through the two points gives the fixed cost per job and the cost per row.

Everything happens in a temporary folder (deleted afterwards); on 2 CPU cores and the synthetic
workspace it takes about as long as one short trial.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deftpipe import data
from deftpipe.config import PipelineConfig
from deftpipe.errors import DeftpipeError
from deftpipe.model import get_adapter
from deftpipe.spec import load_spec

TRAIN_SIZES = (64, 768)  # rows of the two timed 1-epoch training jobs (far apart: the slope is a difference)
EVAL_SIZES = (32, 192)  # rows of the two timed evaluations
WARMUP_ROWS = 16
REPEATS = 2


@dataclass(frozen=True)
class Rates:
    """Seconds per unit of work on this host, fitted from the dry run."""

    s_train_row_epoch: float  # one training row through one epoch (forward + backward)
    s_train_job: float  # fixed cost of one training job (set-up, checkpoint, scheduler), per epoch
    s_infer_row: float  # one row scored/embedded
    s_infer_job: float  # fixed cost of one inference/evaluation job
    s_decode_pair: float  # first decode of one golden/test pair (no cache)
    s_csv_row: float  # reading and checking one CSV row (the loop's data stages)
    train_rows: tuple[int, ...] = TRAIN_SIZES
    eval_rows: tuple[int, ...] = EVAL_SIZES
    seconds: float = 0.0  # wall time of the dry run itself
    source: str = "measured dry run"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_line(x: tuple[float, float], y: tuple[float, float]) -> tuple[float, float]:
    """(intercept, slope) of the line through two points, both clamped at >= 0 (one distinct x: a
    line through the origin, all cost per row — the subsample could not be made larger)."""
    if x[1] - x[0] < 1:
        return 0.0, max(y[1], 0.0) / max(x[1], 1.0)
    slope = max((y[1] - y[0]) / (x[1] - x[0]), 0.0)
    return max(y[0] - slope * x[0], 0.0), slope


def _best_of(fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _subsample(csv: Path, n: int, out: Path) -> int:
    """Write up to ``n`` rows of ``csv`` to ``out``, keeping defects and PASS rows both present."""
    import pandas as pd

    df = data.read_dataset(csv)
    if len(df) > n:
        defect = data.is_defect(df["label"])
        k_def = min(int(defect.sum()), max(n // 4, 1))
        df = pd.concat([df[defect].sample(k_def, random_state=0),
                        df[~defect].sample(min(int((~defect).sum()), n - k_def), random_state=0)])
    data.write_dataset(df, out)
    return len(df)


def _csv_seconds_per_row(csvs: list[Path]) -> float:
    """Read + validate every given CSV once: seconds per row of the loop's data stages' CSV work."""
    t0, n = time.perf_counter(), 0
    for csv in csvs:
        n += len(data.read_dataset(csv, require_rows=False))
    return (time.perf_counter() - t0) / max(n, 1)


def _decode_seconds_per_pair(csv: Path, spec) -> float:
    layout = data.layout_for(spec, Path(csv).resolve().parent)
    df = data.read_dataset(csv)
    try:
        t0 = time.perf_counter()
        data.load_pairs(df, layout, spec.model.input_size, use_cache=False)
        s = (time.perf_counter() - t0) / max(len(df), 1)
        data.load_pairs(df, layout, spec.model.input_size)  # memoised: the timed jobs measure compute
    except DeftpipeError:
        return 0.0  # e.g. images the model resizes itself: the jobs' timings then include decoding
    return s


def _one_job_rates(adapter: Any, spec: Any, tmp: Path, n_tr: list[int], n_ev: list[int], s_decode: float,
                   s_csv: float, t_start: float) -> Rates:
    """One timed training job (with its validation scoring) and one timed scoring job: for adapters whose
    jobs are containers or batch jobs, where launching a stream of them is the cost the estimate is
    for. Start-up dominates such jobs, so the whole time counts as the per-job cost (per-row 0): the
    estimate is low for datasets much larger than the subsample (the pre-flight says so)."""
    t0 = time.perf_counter()
    trained = adapter.train(spec, tmp / f"train_{TRAIN_SIZES[-1]}.csv", tmp / f"val_{EVAL_SIZES[0]}.csv", tmp / "one")
    t_tr = time.perf_counter() - t0
    t0 = time.perf_counter()
    adapter.evaluate(trained.best_checkpoint, tmp / f"val_{EVAL_SIZES[-1]}.csv")
    t_ev = time.perf_counter() - t0
    return Rates(s_train_row_epoch=0.0, s_train_job=max(t_tr - t_ev, 0.0), s_infer_row=0.0, s_infer_job=t_ev,
                 s_decode_pair=s_decode, s_csv_row=s_csv, train_rows=(n_tr[-1],), eval_rows=(n_ev[-1],),
                 seconds=round(time.perf_counter() - t_start, 2), source="one real job of each kind")


def measure(ws: Path, cfg: PipelineConfig) -> Rates:
    """Run the dry run on the workspace's training and validation sets; see the module docstring."""
    spec = load_spec(cfg.path(ws, cfg.data.spec))
    spec.train.num_epochs = 1
    if cfg.automl.phase1.batch_size:
        spec.train.batch_size = cfg.automl.phase1.batch_size
    train_csv, val_csv = cfg.path(ws, cfg.data.train_csv), cfg.path(ws, cfg.data.val_csv)
    adapter = get_adapter(spec)
    tmp = Path(tempfile.mkdtemp(prefix="deftpipe_dryrun_", dir=adapter.scratch_dir()))  # TAO: inside its mounts
    t_start = time.perf_counter()
    try:
        s_csv = _csv_seconds_per_row([train_csv, val_csv])
        n_tr = [_subsample(train_csv, n, tmp / f"train_{n}.csv") for n in TRAIN_SIZES]
        n_ev = [_subsample(val_csv, n, tmp / f"val_{n}.csv") for n in EVAL_SIZES]
        _subsample(train_csv, WARMUP_ROWS, tmp / "warmup.csv")
        s_decode = (_decode_seconds_per_pair(tmp / f"train_{TRAIN_SIZES[-1]}.csv", spec)
                    + _decode_seconds_per_pair(tmp / f"val_{EVAL_SIZES[-1]}.csv", spec)) / 2
        small_val = tmp / f"val_{EVAL_SIZES[0]}.csv"
        if adapter.short_dry_run():
            return _one_job_rates(adapter, spec, tmp, n_tr, n_ev, s_decode, s_csv, t_start)
        warm = adapter.train(spec, tmp / "warmup.csv", small_val, tmp / "warmup")  # one-time costs, untimed
        t_ev = [_best_of(lambda c=tmp / f"val_{n}.csv": adapter.evaluate(warm.best_checkpoint, c))
                for n in EVAL_SIZES]
        f_inf, s_inf = fit_line((n_ev[0], n_ev[1]), (t_ev[0], t_ev[1]))
        t_tr = []
        for n in TRAIN_SIZES:
            runs = iter(range(REPEATS))
            t_tr.append(_best_of(lambda n=n, r=runs: adapter.train(
                spec, tmp / f"train_{n}.csv", small_val, tmp / f"train_{n}_{next(r)}")))
        # each training job also scores the small validation subsample once (its epoch-end check)
        t_tr = [t - (f_inf + n_ev[0] * s_inf) for t in t_tr]
        f_tr, s_tr = fit_line((n_tr[0], n_tr[1]), (t_tr[0], t_tr[1]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Rates(s_train_row_epoch=s_tr, s_train_job=f_tr, s_infer_row=s_inf, s_infer_job=f_inf,
                 s_decode_pair=s_decode, s_csv_row=s_csv, train_rows=tuple(n_tr), eval_rows=tuple(n_ev),
                 seconds=round(time.perf_counter() - t_start, 2))


__all__ = ["Rates", "fit_line", "measure"]
