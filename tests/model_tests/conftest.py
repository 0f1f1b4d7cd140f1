"""Shared model fixtures: one tiny synthetic workspace and one trained checkpoint per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from deftpipe.data import make_synthetic_workspace
from deftpipe.spec import Spec, load_spec


@dataclass(frozen=True)
class Tiny:
    ws: Path
    spec_path: Path
    train_csv: Path
    val_csv: Path
    kpi_csv: Path

    def spec(self, **train: object) -> Spec:
        """The workspace spec with quick settings (1 thread, 1 epoch) and ``train`` overrides."""
        s = load_spec(self.spec_path)
        s.train.num_threads = 1
        s.train.num_epochs = 1
        for k, v in train.items():
            setattr(s.train, k, v)
        return s


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    ws = make_synthetic_workspace(tmp_path_factory.mktemp("model") / "ws", size="tiny")
    return Tiny(ws, ws / "specs" / "baseline_spec.yaml", ws / "train" / "base" / "training_set.csv",
                ws / "train" / "base" / "validation_set.csv", ws / "kpi" / "testing_set.csv")


@pytest.fixture(scope="session")
def trained(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory):
    """A 2-epoch run on the tiny workspace (TrainResult)."""
    from deftpipe.model import get_adapter

    spec = tiny.spec(num_epochs=2, keep_checkpoints=1)
    return get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path_factory.mktemp("trained") / "run")
