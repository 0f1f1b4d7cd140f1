"""The settings one loop run works with, read back from the state's ``config`` snapshot."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deftpipe.config import KpiConfig
from deftpipe.data import ImageLayout, layout_for
from deftpipe.deft._records import DeftState
from deftpipe.errors import DataError
from deftpipe.model import get_adapter
from deftpipe.spec import Spec, load_spec


@dataclass(frozen=True)
class LoopContext:
    """Plain values every stage may read (never the KPI CSV except inference/evaluate)."""

    workspace: Path
    results_dir: Path
    spec_path: Path
    spec: Spec
    layout: ImageLayout
    train_csv: Path
    val_csv: Path
    kpi_csv: Path
    pool_csv: Path
    kpi: KpiConfig
    max_iterations: int
    num_epochs: int
    baseline_epochs: int | None
    batch_size: int | None
    top_k_per_target: int
    min_similarity: float
    hard_defects: int
    hard_pass: int
    sdg_count_per_target: int
    sdg_hard_pass_per_target: int
    sdg_contrast: tuple[float, float]
    regression_gate_pct: float | None
    rca_max_groups: int
    warm_start_lr_scale: float = 1.0
    warm_start_from: str = "best"
    added_rows_weight: float = 1.0
    show_progress: bool = True

    @classmethod
    def from_state(cls, state: DeftState | Mapping[str, Any], *, show_progress: bool = True) -> LoopContext:
        """The loop's settings from the state's snapshot (a resumed run behaves like the one that started it)."""
        record = DeftState.view(state)
        c = record.config
        spec = load_spec(c["spec"])
        return cls(
            workspace=Path(record.workspace),
            results_dir=Path(record.results_dir),
            spec_path=Path(c["spec"]),
            spec=spec,
            layout=layout_for(spec, record.workspace),
            train_csv=Path(c["train_csv"]),
            val_csv=Path(c["val_csv"]),
            kpi_csv=Path(c["kpi_csv"]),
            pool_csv=Path(c["pool_csv"]),
            kpi=KpiConfig(**record.kpi),
            max_iterations=int(record.max_iterations),
            num_epochs=int(c["num_epochs"]),
            baseline_epochs=c.get("baseline_epochs"),
            batch_size=c.get("batch_size"),
            top_k_per_target=int(c["mining"]["top_k_per_target"]),
            min_similarity=float(c["mining"]["min_similarity"]),
            hard_defects=int(c["mining"].get("hard_defects", 0)),  # a state from before the knob: off
            hard_pass=int(c["mining"].get("hard_pass", 0)),
            sdg_count_per_target=int(c["sdg"]["count_per_target"]),
            sdg_hard_pass_per_target=int(c["sdg"]["hard_pass_per_target"]),
            sdg_contrast=tuple(float(v) for v in c["sdg"].get("contrast", (1.0, 1.0))),
            regression_gate_pct=c.get("regression_gate_pct"),
            rca_max_groups=int(c.get("rca_max_groups", 8)),
            warm_start_lr_scale=float(c.get("warm_start_lr_scale", 1.0)),
            warm_start_from=str(c.get("warm_start_from", "best")),
            added_rows_weight=float(c.get("added_rows_weight", 1.0)),
            show_progress=show_progress,
        )

    def stage_dir(self, label: str, stage: str) -> Path:
        return self.results_dir / label / stage

    def adapter(self):
        return get_adapter(self.spec)


class HardStop(DataError):
    """A data failure the loop must not paper over (leaky pool, merged set invalid or leaking):
    the run is marked ``failed`` with ``hard_stop: true`` and is not resumed."""


def jsonable(obj: Any) -> Any:
    """Turn numpy scalars/arrays and paths into plain JSON values (NaN/inf become None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def relpath(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` with forward slashes (``../results/...`` is allowed)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


__all__ = ["HardStop", "LoopContext", "jsonable", "relpath"]
