"""The optional custom KPI evaluator (``kpi.evaluator_command`` in ``pipeline.yaml``, docs/contracts.md §5).

An argv list run after the built-in metrics; each item may use the placeholders
``{inference_csv}`` (the KPI scores the loop just wrote: the KPI CSV's columns + ``score``),
``{kpi_csv}`` and ``{out_dir}``. The program prints one JSON object of numbers on the last line of
its stdout, e.g. ``{"far_pct": 3.1, "line_cost": 12.0}``; those values are added to (and override)
the built-in metrics, so the KPI gate can read a metric only the plant's evaluator knows.
Run without a shell; its stdout and stderr go to ``out_dir/evaluator.log``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from deftpipe._argv import run_template
from deftpipe._redact import scrub_clip
from deftpipe.errors import DataError

TIMEOUT_S = 3600
PLACEHOLDERS = ("inference_csv", "kpi_csv", "out_dir")


def run_evaluator(argv_t: list[str], *, inference_csv: Path, kpi_csv: Path, out_dir: Path) -> dict[str, float]:
    """Run the evaluator and return its metrics.

    Raises:
        DataError: unknown placeholder, program missing / failing / timing out (see
            :func:`deftpipe._argv.run_template`), or output that is not one JSON object of finite numbers.
    """
    values = dict(zip(PLACEHOLDERS, (str(inference_csv), str(kpi_csv), str(out_dir)), strict=True))
    stdout = run_template(argv_t, values, what="kpi.evaluator_command", timeout_s=TIMEOUT_S,
                          log=out_dir / "evaluator.log", template_error=DataError)
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in data.values()):
        shown = scrub_clip(lines[-1], 200) if lines else "(nothing)"
        raise DataError("kpi.evaluator_command must print one JSON object of finite numbers on its last "
                        f"stdout line, e.g. {{\"far_pct\": 3.1}}; got {shown}")
    return {str(k): float(v) for k, v in data.items()}


__all__ = ["PLACEHOLDERS", "run_evaluator"]
