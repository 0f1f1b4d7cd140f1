"""Test hook for the resume tests: a kill -9 in the *middle* of a stage.

``DEFTPIPE_FAULT_IN=<stage>`` (or ``<label>:<stage>``) ends the process with exit code 137, as
``kill -9`` would, while that stage runs: as soon as the stage has put its first file (or temp
file) in its folder, or, for a stage done before a file is seen, after it returns and before its
commit. Either way the stage is cut short and uncommitted, so the resumed run must clear its
folder and redo it. (``DEFTPIPE_FAULT_AFTER`` in ``_state`` kills right after a commit.) Never set
outside tests.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

FAULT_IN = "DEFTPIPE_FAULT_IN"


def _has_file(folder: Path) -> bool:
    with contextlib.suppress(OSError):  # the stage is writing: entries come and go
        return any(p.is_file() for p in folder.rglob("*"))
    return False


@contextlib.contextmanager
def die_mid_stage(label: str, stage: str, folder: Path) -> Iterator[None]:
    fault = os.environ.get(FAULT_IN)
    if not fault or fault not in (stage, f"{label}:{stage}"):
        yield
        return

    def watch() -> None:
        while True:
            if _has_file(folder):
                os._exit(137)
            time.sleep(0.001)

    threading.Thread(target=watch, daemon=True).start()
    yield
    os._exit(137)  # done before a file was seen: die with the stage uncommitted
