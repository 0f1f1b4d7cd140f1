"""Local workers: a sweep that runs several trials at once on this host (``local_workers``).

On a CPU two trials side by side, each on half the cores, finish sooner than the same two one after
the other on all of them, because PyTorch's intra-op threads scale below linearly. Measured with the
DeepPCB default on 2 cores, alternated: a training step took 65–75 ms on 2 threads alone, and
113–123 ms on 1 thread with a second 1-thread trial beside it, so two trials take 1.65–1.77
trial-lengths instead of 2 (``bench/results/speed.json``, ``parallel``; in full runs the trials of a
round took 146–158 s against 87 s for a trial alone).

:func:`deftpipe.automl.run_sweep` with ``local_workers`` = n > 1 starts n − 1 child processes
(``deftpipe.automl._worker_process``: :func:`deftpipe.automl.run_worker` on the study it created) and runs trials itself as the n-th.
Each training re-takes its share of the cores while it runs (``deftpipe._cores``), so a trial left
alone gets the whole host back. A worker:

* reads its orders, the storage URL among them, from its stdin, never from its command line (a URL
  may hold a password and a command line is visible to every user of the host);
* writes its progress to ``<out_dir>/workers/local-<i>.log``;
* stops starting trials at the sweep's deadline, and exits once the study holds N done trials or
  the process that started it is gone (a kill -9 included). A trial it leaves running goes stale
  after the heartbeat's grace period and is retried when the sweep resumes.

``auto`` (the pipeline's default) means 2 when the trials train the built-in model on a CPU of at
least 2 cores, the sweep has at least 2 trials of at least :data:`AUTO_MIN_ROW_EPOCHS` training
row-epochs each, and no thread count is pinned (``train.num_threads``, ``$DEFTPIPE_NUM_THREADS``);
1 otherwise: a GPU, TAO or a command backend runs one trial at a time. Only 2 workers were
measured (on 2 cores).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from deftpipe._cores import env_threads, host_cores

AUTO = "auto"
AUTO_WORKERS = 2  # what ``auto`` starts where parallel trials pay (the only count measured)
#: ``auto`` starts workers only for trials of at least this many training row-epochs (DeepPCB's default
#: has 45,600): a worker's start (Python, torch, its data: a few seconds) would eat the gain of a
#: trial of seconds, as on the synthetic workspaces (medium: 6,400)
AUTO_MIN_ROW_EPOCHS = 20_000
PARENT_POLL_S = 0.5  # how often a worker checks that the process that started it is alive
EXIT_WAIT_S = 60.0  # after the sweep's last trial: how long a worker may take to exit before it is stopped
LOG_DIR = "workers"


def resolve(requested: int | str, *, trials: int, cpu_torch: bool, pinned_threads: int = 0,
            row_epochs: int = 0) -> int:
    """The number of trials a sweep runs at once: ``requested``, or for ``auto`` the rule above
    (``row_epochs``: training rows × epochs of one trial)."""
    if requested != AUTO:
        return max(1, min(int(requested), trials))
    if (not cpu_torch or pinned_threads or env_threads() or host_cores() < 2 or trials < 2
            or row_epochs < AUTO_MIN_ROW_EPOCHS):
        return 1
    return min(AUTO_WORKERS, trials)


def log_path(out_dir: str | Path, index: int) -> Path:
    return Path(out_dir) / LOG_DIR / f"local-{index}.log"


@contextlib.contextmanager
def running(extra: int, *, url: str, study: str, out_dir: str | Path, heartbeat: int,
            deadline: float | None) -> Iterator[list[subprocess.Popen]]:
    """``extra`` worker processes on ``study`` for the block; after it they are waited for (briefly:
    the study is then done), and stopped if the block fails or they outstay :data:`EXIT_WAIT_S`."""
    procs: list[subprocess.Popen] = []
    orders = {"storage": url, "study": study, "heartbeat": heartbeat, "deadline": deadline, "parent": os.getpid()}
    try:
        for i in range(1, extra + 1):
            log = log_path(out_dir, i)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as sink:
                p = subprocess.Popen([sys.executable, "-m", "deftpipe.automl._worker_process"],
                                     stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT)
            procs.append(p)
            assert p.stdin is not None
            p.stdin.write(json.dumps(orders).encode())
            p.stdin.close()
        yield procs
        end = time.monotonic() + EXIT_WAIT_S
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, end - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def failures(procs: list[subprocess.Popen], out_dir: str | Path) -> list[str]:
    """One line per worker that exited with an error, naming its log."""
    return [f"local worker {i} exited with code {p.returncode}; its log: {log_path(out_dir, i)}"
            for i, p in enumerate(procs, start=1) if p.returncode not in (0, None)]


def exit_with(parent: int) -> None:
    """Exit this process as soon as ``parent`` is gone (it is then re-parented)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(3)

    threading.Thread(target=watch, name="deftpipe-parent-watch", daemon=True).start()


__all__ = ["AUTO", "exit_with", "failures", "log_path", "resolve", "running"]
