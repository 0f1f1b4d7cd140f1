"""The validation scores of a training run's best checkpoint, kept beside it.

Training scores the validation set after every epoch anyway; keeping the best epoch's scores
(``val_scores.npz`` in the run folder, with the checkpoint name and the validation CSV's path and
SHA-1) lets a consumer that needs exactly those scores — DEFT's RCA — skip a second inference
pass. A sidecar that does not match the checkpoint or the CSV byte for byte is ignored.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from deftpipe._fs import atomic_path

FILE = "val_scores.npz"


def _sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def save_val_scores(out_dir: Path, checkpoint_name: str, val_csv: Path, scores: np.ndarray) -> Path:
    path = Path(out_dir) / FILE
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, scores=np.asarray(scores, dtype=np.float64), checkpoint=np.array(checkpoint_name),
                 csv=np.array(str(Path(val_csv).resolve())), csv_sha1=np.array(_sha1(val_csv)))
    return path


def stored_val_scores(checkpoint: str | Path, csv: str | Path) -> np.ndarray | None:
    """The scores training recorded for ``checkpoint`` on ``csv``, or None (no sidecar, another
    checkpoint, another or changed CSV, unreadable file)."""
    checkpoint, csv = Path(checkpoint), Path(csv)
    path = checkpoint.parent / FILE
    if not path.is_file() or not csv.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if (str(z["checkpoint"]) != checkpoint.name or str(z["csv"]) != str(csv.resolve())
                    or str(z["csv_sha1"]) != _sha1(csv)):
                return None
            return np.asarray(z["scores"], dtype=np.float64)
    except (OSError, ValueError, KeyError):
        return None


__all__ = ["FILE", "save_val_scores", "stored_val_scores"]
