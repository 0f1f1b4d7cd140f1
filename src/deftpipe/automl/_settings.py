"""Sweep settings stored in the study's user attributes.

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
from typing import Any

import optuna

from deftpipe.errors import SweepError

SETTINGS_ATTR = "deftpipe_settings"
SETTINGS_VERSION = 1
#: metric name -> optimisation direction.
METRICS = {"far_pct": "minimize", "val_loss": "minimize"}
#: Settings a resume must repeat exactly (the others may change between runs).
FROZEN = ("metric", "algorithm", "seed", "space_hash", "num_epochs", "batch_size", "train_csv",
          "val_csv", "spec_hash", "pretrained")


@dataclass(frozen=True)
class SweepSettings:
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


__all__ = ["METRICS", "SETTINGS_ATTR", "SweepSettings", "check_resumable", "read_settings", "write_settings"]
