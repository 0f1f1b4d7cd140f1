"""Shared CLI helpers: consoles (stdout for results, stderr for messages) and JSON output."""

from __future__ import annotations

import json
import math
from typing import Any

import typer
from rich.console import Console

out = Console()  # machine-readable output and tables
err = Console(stderr=True)  # progress, messages


def finite(value: float | None) -> float | None:
    """Typer callback: NaN and infinity pass Click's range checks; refuse them here."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def probability(value: float | None) -> float | None:
    """Typer callback for a threshold: a finite number from 0 to 1 (NaN is named as such, not as
    "out of range": Click's range check lets it through and then words it wrongly)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number from 0 to 1, got {value}")
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"must be a number from 0 to 1, got {value}")
    return value


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (no Rich markup, safe to pipe)."""
    print(json.dumps(obj, indent=2, default=str))
