"""What names and tags a built-in checkpoint: torch-free, so the command adapter and the pre-flight
can read them without importing torch (:mod:`deftpipe.model._checkpoint` reads and writes the files)."""

from __future__ import annotations

import re

FORMAT = "deftpipe.siamese"
VERSION = 1
NAME_RE = re.compile(r"model_epoch_(\d{3,})_step_(\d{3,})\.pth$")


def checkpoint_name(epoch: int, step: int) -> str:
    return f"model_epoch_{epoch:03d}_step_{step:03d}.pth"


__all__ = ["FORMAT", "NAME_RE", "VERSION", "checkpoint_name"]
