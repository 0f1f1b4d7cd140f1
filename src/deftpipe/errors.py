"""One small error hierarchy.

Every user-facing failure is a :class:`DeftpipeError`; the CLI turns it into one stderr line and
exit code 1. Messages say what was found, what was expected, and how to fix it, naming the file,
row, field or flag involved.
"""

from __future__ import annotations


class DeftpipeError(Exception):
    """Base class of every error a user can act on (exit code 1, no traceback)."""


class DataError(DeftpipeError):
    """A dataset CSV, image or workspace problem."""


class SpecError(DeftpipeError):
    """A model spec, search space or pipeline config problem."""


class CheckpointError(DeftpipeError):
    """A missing, corrupt, truncated or incompatible checkpoint."""


class TrainingError(DeftpipeError):
    """Training diverged (NaN/inf loss) or could not run."""


class StateError(DeftpipeError):
    """A corrupt or inconsistent deft_state.json / pipeline record, or a locked run."""


class SweepError(DeftpipeError):
    """An AutoML study could not be created, resumed or completed."""


__all__ = [
    "CheckpointError",
    "DataError",
    "DeftpipeError",
    "SpecError",
    "StateError",
    "SweepError",
    "TrainingError",
]
