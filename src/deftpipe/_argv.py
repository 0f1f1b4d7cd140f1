"""Run an external program from an argv template: the command model adapter and the custom KPI
evaluator share this.

Each template item is formatted on its own with ``str.format(**values)`` and the program runs
without a shell. Every way it can go wrong is one error naming ``what`` (e.g. ``adapter.train``):
an unknown placeholder (``template_error``), a missing program, a timeout or a non-zero exit
(``error``, with the last lines of its output).
"""

from __future__ import annotations

import string
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deftpipe._fs import atomic_write_text
from deftpipe._redact import scrub
from deftpipe.errors import DataError, SpecError, clip


def unknown_placeholders(argv_t: list[str], known: set[str] | list[str] | tuple[str, ...]) -> list[str]:
    """Placeholders of ``argv_t`` that are not in ``known`` (pre-flight asks before anything runs)."""
    names = {field.split(".")[0].split("[")[0] for item in argv_t
             for _, field, _, _ in string.Formatter().parse(item) if field is not None}
    return sorted(n for n in names if n not in set(known))


def run_template(argv_t: list[str], values: Mapping[str, Any], *, what: str, timeout_s: float | None = None,
                 timeout_name: str = "the time limit", log: Path | None = None,
                 error: type[Exception] = DataError, template_error: type[Exception] = SpecError) -> str:
    """Format ``argv_t`` with ``values``, run it, write ``$ argv``/stdout/stderr to ``log``; return stdout."""
    try:
        argv = [a.format(**values) for a in argv_t]
    except (KeyError, IndexError, ValueError) as e:
        raise template_error(f"{what} uses unknown placeholder {e}; available: "
                             f"{', '.join('{' + k + '}' for k in sorted(values))}") from None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise error(f"{what}: program {argv[0]!r} not found; fix the template or install it") from None
    except subprocess.TimeoutExpired:
        raise error(scrub(f"{what}: {' '.join(argv)} ran longer than {timeout_name}={timeout_s}s and was stopped")) from None
    if log is not None:  # a user program may print a secret: scrubbed from the log and from messages
        atomic_write_text(log, scrub(f"$ {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}"))
    if proc.returncode != 0:
        tail = " | ".join(scrub(proc.stderr or proc.stdout).strip().splitlines()[-2:])  # mask, then cut
        raise error(f"{what}: {clip(scrub(' '.join(argv)), 400)} exited with code {proc.returncode}: {clip(tail, 400)}")
    return proc.stdout


__all__ = ["run_template", "unknown_placeholders"]
