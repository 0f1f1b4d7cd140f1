"""Sweep settings: what a sweep is asked to do (:class:`SweepOptions`) and what its study stores
(:class:`SweepSettings`).

:class:`SweepOptions` is the one settings object of a sweep. ``pipeline.yaml``'s ``automl.phase1`` /
``automl.phase3`` become one in :func:`deftpipe.pipeline.sweep_options`, ``deftpipe automl run``'s
options in the CLI's ``sweep_options``; :func:`deftpipe.automl.run_sweep` takes it, checks it and
resolves it (spec loaded, paths absolute, the pinned budget filled in) into :class:`SweepSettings`.

Optuna persists trials but not the sampler, the search space or our objective. Everything needed to
rebuild the objective is written once into the study (``deftpipe_settings``), so that
``deftpipe automl worker --storage URL --study NAME`` can join from the storage alone, and a resume
whose algorithm, metric, space, seed, budget, data or spec differ is refused instead of silently
mixing two experiments in one study.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from deftpipe.automl._storage import DEFAULT_HEARTBEAT_S
from deftpipe.errors import SweepError

if TYPE_CHECKING:  # types only: the spec module is not needed to build the options
    from deftpipe.spec import Spec

SETTINGS_ATTR = "deftpipe_settings"
SETTINGS_VERSION = 1
#: metric name -> optimisation direction.
METRICS = {"far_pct": "minimize", "val_loss": "minimize"}
#: Settings a resume must repeat exactly (the others may change between runs).
FROZEN = ("metric", "algorithm", "seed", "space_hash", "num_epochs", "batch_size", "train_csv",
          "val_csv", "spec_hash", "pretrained")


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """Everything one sweep is asked to do; :func:`deftpipe.automl.run_sweep` checks it.

    ``None`` means the documented default. Running the same options again resumes the same study.
    """

    spec: Spec | dict[str, Any] | str | Path  # base model spec (Spec, mapping or YAML path)
    train_csv: str | Path
    val_csv: str | Path  # the only set trials are scored on
    out_dir: str | Path  # study.db (unless ``storage``), trials/, best_rec.json
    metric: str = "far_pct"  # far_pct (FAR @ 100 % recall) | val_loss (with a collapse guard); minimised
    algorithm: str = "tpe"  # a name from deftpipe.automl.ALGORITHMS
    max_recommendations: int = 4  # number of done trials the study is run to
    storage: str | None = None  # SQLAlchemy URL or SQLite file; None = <out_dir>/study.db
    study_name: str | None = None  # None = deftpipe-automl
    pretrained: str | Path | None = None  # warm-start checkpoint of every trial
    # spec YAML(s) or best_rec.json(s) whose swept values become the first trials (only when created)
    enqueue_spec: str | Path | list[str | Path] | None = None
    search_space: str | Path | dict[str, Any] | None = None  # YAML path or mapping; None = built-in
    num_epochs: int | None = None  # pinned epochs per trial (None = space's pinned value, else the spec's)
    batch_size: int | None = None  # pinned batch size (None = space's pinned value, else the spec's)
    seed: int = 0  # sampler seed
    keep_checkpoints: int = 3  # only the best K trials keep their checkpoints
    rerun_margin: float = 5.0  # re-run a winner that beats the runner-up by more (percent)
    heartbeat_interval: int = DEFAULT_HEARTBEAT_S  # seconds between trial heartbeats (0 = off)
    # trials run at once on this host: this process + local_workers - 1 child workers (needs heartbeats);
    # "auto": the rule of deftpipe.automl._local_workers.resolve (the pipeline's default)
    local_workers: int | str = 1

    def enqueue_sources(self) -> list[str | Path]:
        e = self.enqueue_spec
        return list(e) if isinstance(e, (list, tuple)) else [e] if e else []


@dataclass(frozen=True)
class SweepSettings:
    """A :class:`SweepOptions` checked and resolved: what the study stores and every trial reads."""

    spec: dict[str, Any]  # the base spec, validated, absolute paths
    train_csv: str
    val_csv: str
    out_dir: str  # trial folders go to <out_dir>/trials/trial_<NNN>/
    metric: str
    algorithm: str
    seed: int
    num_epochs: int  # pinned epoch budget of every trial
    batch_size: int  # pinned batch size of every trial
    space: dict[str, Any]  # SearchSpace.to_dict()
    space_hash: str
    pretrained: str | None
    max_recommendations: int
    keep_checkpoints: int
    rerun_margin: float
    version: int = SETTINGS_VERSION

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_attr(self) -> dict[str, Any]:
        return {**asdict(self), "spec_hash": self.spec_hash}

    @classmethod
    def from_attr(cls, data: dict[str, Any]) -> SweepSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def read_settings(study: optuna.Study) -> SweepSettings | None:
    data = study.user_attrs.get(SETTINGS_ATTR)
    return SweepSettings.from_attr(data) if data else None


def write_settings(study: optuna.Study, settings: SweepSettings) -> None:
    study.set_user_attr(SETTINGS_ATTR, settings.to_attr())


def check_resumable(stored: SweepSettings, new: SweepSettings, study_name: str) -> None:
    """Refuse a resume whose experiment-defining settings differ from the stored ones.

    Raises:
        SweepError: naming each differing setting with the stored and the new value.
    """
    old, cur = stored.to_attr(), new.to_attr()
    diffs = [f"{k}: study has {old.get(k)!r}, this run has {cur.get(k)!r}" for k in FROZEN if old.get(k) != cur.get(k)]
    if diffs:
        raise SweepError(
            f"cannot resume study '{study_name}' with different settings ({'; '.join(diffs)}); "
            "rerun with the original values, or start a new study with another --study name or --out folder"
        )


__all__ = ["METRICS", "SETTINGS_ATTR", "SweepOptions", "SweepSettings", "check_resumable", "read_settings", "write_settings"]
