"""``pipeline.yaml`` (docs/contracts.md §2, §7–§9): one Pydantic model per section, each field commented.

Paths are relative to the workspace (the folder holding ``pipeline.yaml``). Unknown keys and
out-of-range values are errors. Each part reads only its own section: ``automl.phase1`` /
``automl.phase3`` (the sweeps), ``deft`` (the loop), ``kpi`` and ``data`` (shared).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from deftpipe._fs import atomic_write_text
from deftpipe._tao_schema import AdapterChoice
from deftpipe._yaml import load_yaml_file
from deftpipe.errors import SpecError
from deftpipe.spec import MAX_SEED, StrictSection, describe_validation_error

CONFIG_NAME = "pipeline.yaml"


class _Strict(StrictSection):
    pass


class DataPaths(_Strict):
    spec: str = "specs/baseline_spec.yaml"  # hand-authored model spec
    train_csv: str = "train/base/training_set.csv"  # base training set
    val_csv: str = "train/base/validation_set.csv"  # validation set for both sweeps and RCA
    kpi_csv: str = "kpi/testing_set.csv"  # KPI test set: read only by the DEFT evaluate stage
    pool_csv: str = "mining/mining_pool.csv"  # labelled pool for mining
    # holdout (boards used nowhere else): read only by the audit, never for a choice (docs/contracts.md §11);
    # a workspace without this file runs without an audit
    holdout_csv: str = "holdout/holdout_set.csv"
    images_dir: str = "images"  # image root the CSV paths are relative to


class KpiConfig(_Strict):
    metric: str = "far_pct"  # metric the KPI gate reads (far_pct = FAR @ 100% recall, in %)
    operator: Literal["<=", "<", ">=", ">"] = "<="
    target: float = 5.0
    evaluator_command: list[str] | None = None  # optional custom evaluator printing JSON {metric: v}
    # shipped threshold = the KPI set's 100 %-recall threshold x (1 - threshold_margin), lowered to
    # where the KPI set's FAR reaches threshold_far_budget (%) or (1 + threshold_far_reserve) x the
    # model's own KPI FAR@100%R, whichever is higher, when that is lower (budget null/0: off): all
    # flag more on new boards (recall up, FAR up); the audit measures them (docs/pipeline.md)
    threshold_margin: float = Field(0.0, ge=0.0, lt=1.0)
    threshold_far_budget: float | None = Field(10.0, ge=0.0, le=100.0)
    threshold_far_reserve: float = Field(0.5, ge=0.0, le=10.0)

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return {
            "<=": value <= self.target,
            "<": value < self.target,
            ">=": value >= self.target,
            ">": value > self.target,
        }[self.operator]


class SweepConfig(_Strict):
    """``automl.phase1`` / ``automl.phase3``: what the file says of a sweep. The pipeline turns it into
    the sweep's one settings object, :class:`deftpipe.automl.SweepOptions`, in
    :func:`deftpipe.pipeline.sweep_options` (adding the phase's spec, data and output folder)."""

    enabled: bool = True
    algorithm: str = "tpe"  # bayesian|tpe|random|grid|cmaes|hyperband|asha|bohb
    max_recommendations: int = Field(4, ge=1, le=10000)  # number of trials
    metric: Literal["far_pct", "val_loss"] = "far_pct"
    num_epochs: int = Field(2, ge=1, le=10000)  # pinned epoch budget per trial
    batch_size: int | None = Field(None, ge=1)  # pinned batch size (None = spec's)
    search_space: str | None = None  # YAML search space (None = built-in default)
    storage: str | None = None  # SQLAlchemy URL / journal file (None = local file in the out dir)
    study_name: str | None = None
    seed: int = Field(0, ge=0, le=MAX_SEED)
    keep_checkpoints: int = Field(3, ge=1)  # only the best K trials keep their checkpoints
    rerun_margin: float = Field(5.0, ge=0.0)  # re-run the winner with a fresh seed if it wins by more
    # Phase 3 only: every trial starts from the loop's chosen checkpoint (false = from scratch on the
    # loop's data; the ablation's "not warm-started" arm)
    warm_start: bool = True
    per_trial_seconds: float | None = None  # for the compute estimate (None = measured dry run)
    # trials at once on this host (auto: 2 for the built-in model on a CPU of >= 2 cores, else 1;
    # deftpipe.automl._local_workers)
    local_workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"


class MiningConfig(_Strict):
    top_k_per_target: int = Field(5, ge=1)
    min_similarity: float = Field(0.9, ge=-1.0, le=1.0)
    # once validation is solved (RCA finds only weak defects): hard pool rows per iteration on top of
    # the targets' neighbours, the eligible pool defects the current model scores lowest and the
    # PASS rows it scores highest (0 turns each off)
    hard_defects: int = Field(20, ge=0)
    hard_pass: int = Field(10, ge=0)


class SdgConfig(_Strict):
    count_per_target: int = Field(40, ge=0)  # synthetic pairs per SDG target
    hard_pass_per_target: int = Field(20, ge=0)  # hard PASS pairs per false-alarm group
    # share of the full copper/substrate contrast a synthetic defect is painted at, drawn per pair
    # from [low, high]: escapes are often faint (partial etch, residue), not clean edits
    contrast: tuple[float, float] = (0.5, 1.0)

    @field_validator("contrast")
    @classmethod
    def _contrast_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        low, high = v
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"needs 0 < low <= high <= 1, e.g. [0.5, 1.0]; got [{low}, {high}]")
        return v


class DeftConfig(_Strict):
    max_iterations: int = Field(3, ge=0, le=100)
    num_epochs: int = Field(3, ge=1)  # epochs of each iteration's warm-started retrain
    # multiplies the spec's learning rate in the warm-started retrains (not the baseline train);
    # 0.3 measured better than 1.0 on DeepPCB and the synthetic set (docs/deft.md, Benchmark)
    warm_start_lr_scale: float = Field(0.3, gt=0.0, le=10.0)
    # which checkpoint an iteration's retrain starts from: the previous iteration's, the model RCA
    # analysed and the data was aimed at (default, measured: docs/pipeline.md "Warm start"), or the
    # best so far by the selection rule (deftpipe.selection)
    warm_start_from: Literal["best", "analysed"] = "analysed"
    # a retrain draws the rows the loop added this many times as often as the others (train.added_rows_weight;
    # the torch adapter): a few hundred rows in thousands barely move the model at 1 (docs/deft.md)
    added_rows_weight: float = Field(1.0, ge=1.0, le=100.0)
    batch_size: int | None = Field(None, ge=1)  # None = the spec's
    baseline_epochs: int | None = Field(None, ge=1)  # own baseline train when not pre-seeded
    analysis_split: Literal["validation"] = "validation"  # RCA data; never the KPI set
    rca_max_groups: int = Field(8, ge=1)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    sdg: SdgConfig = Field(default_factory=SdgConfig)
    # hard stop if FAR is worse than the baseline by more than this many points (and beyond the
    # bootstrap interval); null = off. FAR@100%R is noisy, so the default only catches collapses.
    regression_gate_pct: float | None = Field(50.0, ge=0.0)
    per_iteration_seconds: float | None = None  # for the compute estimate


class AutomlConfig(_Strict):
    phase1: SweepConfig = Field(default_factory=SweepConfig)
    phase3: SweepConfig = Field(default_factory=lambda: SweepConfig(max_recommendations=3))


class BudgetConfig(_Strict):
    """Wall-clock budgets in seconds (None = none), checked between trials and loop iterations."""

    run_seconds: float | None = Field(None, gt=0)  # the three phases together
    phase1_seconds: float | None = Field(None, gt=0)
    phase2_seconds: float | None = Field(None, gt=0)
    phase3_seconds: float | None = Field(None, gt=0)


class PipelineConfig(_Strict):
    name: str = "deftpipe"
    data: DataPaths = Field(default_factory=DataPaths)
    kpi: KpiConfig = Field(default_factory=KpiConfig)
    automl: AutomlConfig = Field(default_factory=AutomlConfig)
    deft: DeftConfig = Field(default_factory=DeftConfig)
    adapter: AdapterChoice = Field(default_factory=AdapterChoice)  # backend (torch | command | tao; docs/tao.md)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    def path(self, workspace: str | Path, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else (Path(workspace) / p).resolve()


def load_config(workspace: str | Path) -> PipelineConfig:
    """Read ``<workspace>/pipeline.yaml`` (``deftpipe._yaml``: safe, bounded) and validate it.

    Raises:
        SpecError: no or empty pipeline.yaml, bad YAML, unknown key or invalid value.
    """
    path = Path(workspace) / CONFIG_NAME
    if not path.is_file():
        raise SpecError(
            f"{path} not found: {workspace} is not a deftpipe workspace; "
            "create one with `deftpipe init --synthetic DIR` or `deftpipe init --from-deeppcb PATH DIR`"
        )

    data = load_yaml_file(path, "workspace config")
    if not isinstance(data, dict):
        raise SpecError(f"{path} must hold a mapping at top level")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"invalid {path}: {describe_validation_error(err)}") from None


def dump_config(cfg: PipelineConfig, workspace: str | Path) -> Path:
    data: dict[str, Any] = cfg.model_dump(mode="json")
    return atomic_write_text(Path(workspace) / CONFIG_NAME, yaml.safe_dump(data, sort_keys=False))


def find_workspace(start: str | Path) -> Path | None:
    """Walk up from ``start`` to the first folder holding ``pipeline.yaml``."""
    p = Path(start).resolve()
    for d in [p, *p.parents] if p.is_dir() else [p.parent, *p.parent.parents]:
        if (d / CONFIG_NAME).is_file():
            return d
    return None


__all__ = [
    "AutomlConfig",
    "DataPaths",
    "DeftConfig",
    "KpiConfig",
    "PipelineConfig",
    "SweepConfig",
    "dump_config",
    "find_workspace",
    "load_config",
]
