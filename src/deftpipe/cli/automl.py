"""`deftpipe automl ...` commands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach this part's commands to the root app."""
    return None
