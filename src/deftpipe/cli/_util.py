"""Shared CLI helpers: consoles (stdout for results, stderr for messages) and JSON output."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

out = Console()  # machine-readable output and tables
err = Console(stderr=True)  # progress, messages


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (no Rich markup, safe to pipe)."""
    print(json.dumps(obj, indent=2, default=str))
