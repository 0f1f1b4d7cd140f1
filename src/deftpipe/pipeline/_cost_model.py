"""The run's cost model: which jobs each phase runs, priced with the dry run's rates.

Every phase is a sum of jobs the run really does (read from the phases' code; docs/pipeline.md
lists them):

* a training job of ``n`` rows for ``E`` epochs costs ``E × (s_train_job + JOB_OVERHEAD × n ×
  s_train_row_epoch + validation scoring)`` — every epoch ends with a scored validation set, in one
  forward pass (``Workload.score_passes``: an inference job with flip TTA makes four);
* an inference job (scoring, evaluation, embedding) of ``n`` rows costs ``s_infer_job + n × s_infer_row``;
* the first time a split's images are read they are decoded: ``n × s_decode_pair`` (skipped for a
  split whose decode cache entry already exists);
* the loop's data stages (routing, merge, leakage checks) read the CSVs they touch:
  ``DATA_READS × rows × s_csv_row`` per iteration, and SDG draws ``SDG_DECODES`` pairs' worth of image
  work per synthetic pair.

Phase 1 = first decode + trials × training job + the quality check's untrained-model job + the user's
spec (its first trial) scored on the KPI set as the reference; a sweep's
trials count half a fresh-seed re-run of its winner (``rerun_margin``; it happens in about every
second sweep on the synthetic workspaces).
Phase 2 = baseline scoring (KPI + RCA on validation; its own training when Phase 1 is off) +
iterations × (pool embedding + SDG + merge + retrain on the grown set + KPI scoring + RCA, which the
last iteration skips), counted LOOP_SHARE× (the loop stops as soon as the KPI is met, so anything
from none to all of them run). Phase 3 = trials on the set grown by as many iterations + one KPI
scoring. The audit (when the workspace has a holdout) = first decode of the holdout + the deliverable
and the user's-spec reference scored on it + one KPI scoring for the reference's threshold.

The point estimate is multiplied by the ratio actual/estimate recorded by the last finished run
on the same workspace (``results/cost_calibration.json``). The total's range is ``[LOW × point,
HIGH × point]`` (1.99× wide: wide enough for a loop that stops at its baseline and one that runs every
iteration). Each phase's range spans what the phase can do — ``least`` (no re-run, the loop stops at
its baseline, Phase 3 on the base set) to ``most`` (a re-run in each sweep, every iteration runs and
adds all the rows it may) — widened by the rate noise ``[RATE_LOW, RATE_HIGH]``. Phase 2's range is
therefore as wide as the loop's outcome is open (baseline only .. every iteration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deftpipe.config import PipelineConfig, SweepConfig
from deftpipe.pipeline._dry_run import Rates

LOW, HIGH = 0.7, 1.39  # the total's range around the point estimate (HIGH / LOW = 1.99)
#: a phase's range around its least/most work: the dry run's rates vary by +-15 % between two
#: pre-flights on a quiet host (bench/results/estimate.json), its per-row slope more
RATE_LOW, RATE_HIGH = 0.8, 1.2
RERUN_SHARE = 0.5  # a sweep re-runs a suspicious winner once (rerun_margin): about every second synthetic sweep
#: a sweep trial or loop retrain takes this many times the dry run's training cost per row-epoch:
#: Phase 1 took 0.65-0.89x of the model priced at 1.0 on a quiet 2-core box (synthetic small and
#: medium, 5 runs, bench/results/estimate.json): a job of thousands of rows runs at a steadier rate
#: than the dry run's 64/256-row epochs. 1.2-1.5x was seen only with other jobs on the box.
JOB_OVERHEAD = 0.9
#: a trial that runs beside another on half the cores costs this share of a trial-length alone:
#: 2 local workers on 2 cores took 113-126 ms per DeepPCB training step each, one trial alone 65-75 ms:
#: 0.83-0.89 (deftpipe.automl._local_workers; bench/results/speed.json "parallel")
SHARED_TRIAL = 0.86
LOOP_SHARE = 0.5  # the loop stops once the KPI is met: its iterations count half (0 to all of them happen)
GROWTH_SHARE = 0.5  # an iteration adds about half the rows it may add (measured: 0.2-0.45 on synthetic)
UNTRAINED_ROWS = 32  # deftpipe.pipeline._phases.UNTRAINED_ROWS
DATA_READS = 3.0  # CSV passes of the loop's data stages per iteration (routing, merge, leakage), measured
SDG_DECODES = 6.0  # one synthetic pair costs about six first decodes of a pair (bench/results/scale.json)
PHASES = ("phase1", "phase2", "phase3", "audit")


@dataclass
class PhaseCost:
    seconds: float = 0.0  # the point estimate (re-runs and loop iterations at their expected share)
    parts: list[str] = field(default_factory=list)
    full: float = 0.0  # the loop's iterations if every one runs (Phase 2 only)
    least: float = 0.0  # no re-run, the loop stops at its baseline, Phase 3 on the base set
    most: float = 0.0  # a re-run per sweep, every loop iteration runs and adds its rows

    def add(self, seconds: float, what: str, *, least: float | None = None, most: float | None = None) -> None:
        self.seconds += seconds
        self.least += seconds if least is None else least
        self.most += seconds if most is None else most
        if what:
            self.parts.append(f"{what} {seconds:.1f} s")


@dataclass(frozen=True)
class Workload:
    """Row counts of the splits and which of them already have a decode cache entry."""

    train: int
    val: int
    kpi: int
    pool: int
    holdout: int = 0
    cached: frozenset[str] = frozenset()  # names among train, val, kpi, pool, holdout
    #: forward passes per row of an inference job (4 with the torch model's flip TTA); training's per-epoch
    #: validation is one pass (deftpipe.model._train._validate_epoch), so it costs 1 / score_passes of it
    score_passes: int = 1
    workers: tuple[int, int] = (1, 1)  # trials side by side in Phase 1 and Phase 3 (SweepConfig.local_workers)

    def cold(self, name: str) -> int:
        return 0 if name in self.cached else getattr(self, name)


def per_iteration_growth(cfg: PipelineConfig) -> float:
    """Rows one loop iteration is expected to add: GROWTH_SHARE of the most it may add."""
    d = cfg.deft
    most = d.rca_max_groups * (d.sdg.count_per_target + d.mining.top_k_per_target) + (
        d.mining.hard_defects + d.mining.hard_pass)
    return GROWTH_SHARE * most


def trials(sweep: SweepConfig, share: float = RERUN_SHARE, workers: int = 1) -> float:
    """Trial-lengths of wall a sweep takes: its recommendations, ``workers`` at a time (full rounds cost
    :data:`SHARED_TRIAL` of a trial-length per trial, a last short round runs alone), + ``share`` of a
    fresh-seed re-run of the winner (one process)."""
    n = sweep.max_recommendations
    rounds, rest = divmod(n, workers) if workers > 1 else (0, n)
    return rounds * workers * SHARED_TRIAL + rest + (share if n > 1 else 0.0)


class Pricer:
    def __init__(self, rates: Rates, w: Workload):
        self.r, self.w = rates, w

    def infer(self, n: float) -> float:
        return self.r.s_infer_job + n * self.r.s_infer_row

    def train(self, n: float, epochs: int) -> float:
        val = self.r.s_infer_job + self.w.val * self.r.s_infer_row / self.w.score_passes  # one pass per epoch
        return epochs * (self.r.s_train_job + JOB_OVERHEAD * n * self.r.s_train_row_epoch + val)

    def decode(self, n: float) -> float:
        return n * self.r.s_decode_pair


def price(cfg: PipelineConfig, rates: Rates, w: Workload) -> dict[str, PhaseCost]:
    """Seconds per phase (before calibration), each with the parts it is made of."""
    p1, p3, d = cfg.automl.phase1, cfg.automl.phase3, cfg.deft
    pr = Pricer(rates, w)
    out = {name: PhaseCost() for name in PHASES}
    if p1.enabled:
        c = out["phase1"]
        c.add(pr.decode(w.cold("train") + w.cold("val")), "first decode of train + validation")
        n, job, k = trials(p1, workers=w.workers[0]), pr.train(w.train, p1.num_epochs), w.workers[0]
        c.add(n * job, f"{p1.max_recommendations} trials{f' ({k} at a time)' if k > 1 else ''} × {w.train} rows × "
                       f"{p1.num_epochs} epochs", least=trials(p1, 0.0, k) * job, most=trials(p1, 1.0, k) * job)
        c.add(pr.train(min(UNTRAINED_ROWS, w.train), 1), "quality check (untrained model)")
        c.add(pr.decode(w.cold("kpi")) + pr.infer(w.kpi), "the user's spec scored on the KPI set (reference)")
    c = out["phase2"]
    if not p1.enabled:
        c.add(pr.decode(w.cold("train") + w.cold("val")), "first decode of train + validation")
        c.add(pr.train(w.train, d.baseline_epochs or p1.num_epochs), "own baseline training")
    kpi_decode = 0 if p1.enabled else pr.decode(w.cold("kpi"))  # else Phase 1's reference decoded it
    c.add(kpi_decode + pr.infer(w.kpi) + pr.infer(w.val), "baseline KPI scoring + RCA",
          least=kpi_decode + pr.infer(w.kpi))  # no RCA when the baseline already meets the KPI
    grow = per_iteration_growth(cfg)
    grow_most = grow / GROWTH_SHARE  # every iteration adds all it may

    def iteration(i: int, grow: float) -> float:
        rows = w.train + i * grow
        t = pr.decode(w.cold("pool") if i == 1 else 0) + pr.infer(w.pool)  # routing embeds the pool
        t += DATA_READS * (w.pool + rows + w.val + w.kpi) * rates.s_csv_row
        t += grow * (SDG_DECODES + 1) * rates.s_decode_pair  # SDG draws, then the retrain decodes them
        t += pr.train(rows, d.num_epochs) + pr.infer(w.kpi)
        if i < d.max_iterations:
            t += pr.infer(w.val)  # RCA; the last iteration has no next one to feed
        return t

    for i in range(1, d.max_iterations + 1):
        t = iteration(i, grow)
        c.add(LOOP_SHARE * t, "", least=0.0, most=iteration(i, grow_most))
        c.full += t
    if d.max_iterations:
        c.parts.append(f"{d.max_iterations} iteration(s) from {w.train + grow:.0f} rows × {d.num_epochs} epochs, "
                       f"{c.full:.1f} s if all run, counted {LOOP_SHARE:g}× (the loop stops when the KPI is met)")
    if p3.enabled:
        rows = w.train + LOOP_SHARE * d.max_iterations * grow
        c = out["phase3"]
        n, k = trials(p3, workers=w.workers[1]), w.workers[1]
        c.add(n * pr.train(rows, p3.num_epochs), f"{p3.max_recommendations} trials{f' ({k} at a time)' if k > 1 else ''}"
                                                 f" × {rows:.0f} rows × {p3.num_epochs} epochs",
              least=trials(p3, 0.0, k) * pr.train(w.train, p3.num_epochs),
              most=trials(p3, 1.0, k) * pr.train(w.train + d.max_iterations * grow_most, p3.num_epochs))
        c.add(pr.infer(w.kpi), "KPI scoring")
    if w.holdout:  # deftpipe.audit.audit_run: the deliverable and the user's-spec reference on the holdout
        out["audit"].add(pr.decode(w.cold("holdout")) + 2 * pr.infer(w.holdout) + pr.infer(w.kpi),
                         f"2 models × {w.holdout} holdout rows")
    return out


def given_times(cfg: PipelineConfig) -> dict[str, PhaseCost] | None:
    """Per-job times from pipeline.yaml (``per_trial_seconds`` / ``per_iteration_seconds``), when all given."""
    p1, p3, d = cfg.automl.phase1, cfg.automl.phase3, cfg.deft
    need = [(p1.per_trial_seconds, p1.enabled), (p3.per_trial_seconds, p3.enabled),
            (d.per_iteration_seconds, d.max_iterations > 0)]
    if any(v is None and on for v, on in need):
        return None
    out = {name: PhaseCost() for name in PHASES}
    if p1.enabled:
        out["phase1"].add(p1.max_recommendations * p1.per_trial_seconds, f"{p1.max_recommendations} trials")
    if d.max_iterations:
        out["phase2"].add(d.max_iterations * d.per_iteration_seconds, f"{d.max_iterations} iterations",
                          least=0.0)
    if p3.enabled:
        out["phase3"].add(p3.max_recommendations * p3.per_trial_seconds, f"{p3.max_recommendations} trials")
    return out


def ranges(costs: dict[str, PhaseCost], ratios: dict[str, float]) -> dict[str, Any]:
    """The estimate's ``seconds``: per phase point/low/high (calibrated) and the totals.

    A phase's range is its least..most work widened by the rate noise; the total's is LOW..HIGH × the
    sum of the points (the phases' extremes do not all happen in one run)."""
    sec: dict[str, Any] = {}
    for name, c in costs.items():
        ratio = ratios.get(name, 1.0)
        sec[name] = round(c.seconds * ratio, 1)
        sec[f"{name}_low"] = round(RATE_LOW * min(c.least, c.seconds) * ratio, 1)
        sec[f"{name}_high"] = round(RATE_HIGH * max(c.most, c.seconds) * ratio, 1)
    total = sum(sec[name] for name in costs)
    sec["total"] = round(total, 1)
    low = round(LOW * total, 1)
    sec["total_low"], sec["total_high"] = low, min(round(HIGH * total, 1), 2 * low)  # rounding keeps it <= 2x
    return sec


__all__ = ["HIGH", "LOW", "RATE_HIGH", "RATE_LOW", "PHASES", "PhaseCost", "Workload", "given_times", "per_iteration_growth", "price",
           "ranges", "trials"]
