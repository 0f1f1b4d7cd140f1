"""Writing a complete workspace (docs/contracts.md §2): the split CSVs, the baseline spec, pipeline.yaml.

The holdout (``holdout/holdout_set.csv``, docs/contracts.md §11) is optional: a builder that has no boards
left for it simply passes no ``holdout`` split, and the workspace runs without an audit.

Both workspace builders (synthetic generator, DeepPCB importer) draw their images into a temporary
folder and call :func:`write_workspace_files` on it last; :func:`build_workspace` renames the folder
into place only when everything succeeded, so a failure never leaves a half-written workspace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from deftpipe._fs import atomic_dir
from deftpipe.config import PipelineConfig, dump_config
from deftpipe.data._csv import write_dataset
from deftpipe.errors import DataError
from deftpipe.spec import Spec, dump_spec

SPLIT_FILES = {
    "train": "train/base/training_set.csv",
    "val": "train/base/validation_set.csv",
    "kpi": "kpi/testing_set.csv",
    "pool": "mining/mining_pool.csv",
    "holdout": "holdout/holdout_set.csv",  # optional; read only by the audit (deftpipe.audit)
}
OPTIONAL_SPLITS = ("holdout",)


@contextlib.contextmanager
def build_workspace(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``dest`` on success (removed on failure).

    Raises:
        DataError: ``dest`` exists and is not empty.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest} already exists and is not empty; choose a new workspace folder "
                        "or remove the old one first")
    with atomic_dir(dest) as tmp:
        yield tmp


def baseline_spec(image_size: int, *, num_epochs: int = 2, batch_size: int = 32,
                  shift_px: int | None = None) -> Spec:
    """The hand-authored model spec a new workspace starts from (paths relative to specs/).

    ``shift_px`` overrides the training-time misregistration augmentation (None: Spec default).
    """
    spec = Spec()
    c = spec.dataset.classify
    c.images_dir = "../images"
    c.image_ext = ".png"
    c.train_csv = "../" + SPLIT_FILES["train"]
    c.val_csv = "../" + SPLIT_FILES["val"]
    spec.model.input_size = image_size
    # the speed levers (docs/model.md, "Speed"): pooling before BN and bf16 convolutions where the CPU
    # or GPU has them; DeepPCB leave-board-groups-out folds inside the default's spread
    spec.model.pool_first = True
    spec.train.precision = "auto"
    spec.train.num_epochs = num_epochs
    spec.train.batch_size = batch_size
    if shift_px is not None:
        spec.train.augment.shift_px = shift_px
    return spec


def write_workspace_files(root: Path, splits: dict[str, pd.DataFrame], spec: Spec,
                          config: PipelineConfig) -> None:
    """Write the split CSVs, ``specs/baseline_spec.yaml`` and ``pipeline.yaml`` under ``root``.

    ``splits`` needs train/val/kpi/pool; ``holdout`` is written when present."""
    for name, rel in SPLIT_FILES.items():
        if name in OPTIONAL_SPLITS and name not in splits:
            continue
        write_dataset(splits[name], root / rel)
    dump_spec(spec, root / config.data.spec)
    dump_config(config, root)


__all__ = ["OPTIONAL_SPLITS", "SPLIT_FILES", "baseline_spec", "build_workspace", "write_workspace_files"]
