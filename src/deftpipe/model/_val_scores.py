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


def csv_stamp(csv: str | Path) -> tuple[str, str]:
    """(resolved path, SHA-1 of the bytes) of a CSV: what the kept scores are checked against."""
    return str(Path(csv).resolve()), hashlib.sha1(Path(csv).read_bytes()).hexdigest()


def save_val_scores(out_dir: Path, checkpoint_name: str, stamp: tuple[str, str], scores: np.ndarray) -> Path:
    """Keep ``scores`` as the validation scores of ``checkpoint_name`` on the CSV ``stamp`` names."""
    path = Path(out_dir) / FILE
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, scores=np.asarray(scores, dtype=np.float64), checkpoint=np.array(checkpoint_name),
                 csv=np.array(stamp[0]), csv_sha1=np.array(stamp[1]))
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
            if str(z["checkpoint"]) != checkpoint.name or (str(z["csv"]), str(z["csv_sha1"])) != csv_stamp(csv):
                return None
            return np.asarray(z["scores"], dtype=np.float64)
    except (OSError, ValueError, KeyError):
        return None


__all__ = ["FILE", "csv_stamp", "save_val_scores", "stored_val_scores"]
