"""A local worker's process (``python -m deftpipe.automl._worker_process``; :mod:`._local_workers`).

Its orders come as JSON on stdin: the storage URL, the study, the heartbeat, the deadline and the
pid of the sweep that started it, whose death ends this process too.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from deftpipe._malloc import keep_freed_memory
from deftpipe.automl._local_workers import exit_with
from deftpipe.automl._sweep import run_worker
from deftpipe.errors import DeftpipeError


def main() -> int:
    log = Console(file=sys.stdout, soft_wrap=True)  # stdout is the worker's log file
    orders: dict[str, Any] = json.loads(sys.stdin.read())
    exit_with(int(orders["parent"]))
    keep_freed_memory()  # as the ``deftpipe`` command does: freed activations stay for the next step
    try:
        summary = run_worker(orders["storage"], orders["study"], heartbeat_interval=int(orders["heartbeat"]),
                             deadline=orders.get("deadline"))
    except DeftpipeError as err:
        log.print(f"local worker: {err}", markup=False)
        return 2
    log.print(f"local worker done: {summary['trials_run_here']} trial(s) run here", markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
