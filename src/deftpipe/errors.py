"""One small error hierarchy.

Every user-facing failure is a :class:`DeftpipeError`; the CLI turns it into one stderr line and
exit code 1. Messages say what was found, what was expected, and how to fix it, naming the file,
row, field or flag involved.
"""

from __future__ import annotations

#: The most characters of one user-supplied value an error message repeats (a 1 MB cell or YAML
#: value is shown as its head, its length and its tail, never in full).
MAX_ECHO = 200


def clip(value: object, limit: int = MAX_ECHO) -> str:
    """``str(value)``, shortened to about ``limit`` characters with the number left out."""
    s = str(value)
    if len(s) <= limit:
        return s
    half = limit // 2
    return f"{s[:half]}…[{len(s) - 2 * half} more characters]…{s[-half:]}"


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


class NoUsableTrial(SweepError):
    """A sweep finished without a trial that can win (every one failed, was pruned or collapsed)."""


__all__ = [
    "MAX_ECHO",
    "CheckpointError",
    "DataError",
    "DeftpipeError",
    "NoUsableTrial",
    "SpecError",
    "StateError",
    "SweepError",
    "TrainingError",
    "clip",
]
