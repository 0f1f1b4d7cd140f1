"""How many compute threads a deftpipe process takes: a fair share of the host's cores.

The rule (docs/benchmarks.md, "Cores shared"), in order:

1. an explicit request (``train.num_threads`` in the spec, ``--threads N`` on a command);
2. ``$DEFTPIPE_NUM_THREADS``;
3. otherwise ``cores ÷ live deftpipe workers on this host`` (at least 1), where ``cores`` is the
   CPUs this process may run on and a *worker* is any deftpipe process inside a training,
   inference or embedding job. Each such job registers a lock file under
   ``$DEFTPIPE_RUNTIME_DIR`` (default ``<tmp>/deftpipe-workers-<uid>``) and holds an exclusive
   ``flock`` on it while it runs; a file whose lock can be taken belongs to a dead process and is
   removed — only a file deftpipe can prove it made (its name ``deftpipe-worker-<pid>-<random>.lock``
   and its content, :data:`MAGIC`), so a runtime folder shared with other programs loses none of
   their files. The share is taken when a job starts.

``$DEFTPIPE_NUM_THREADS`` must be a whole number ≥ 1 (or unset/empty); anything else is one error
naming the variable, raised by every command before it starts (:func:`env_threads`).

Why: PyTorch's intra-op pool spins while it waits, so two processes that each take every core
fight over them — measured on 2 cores under load, 4.1× slower per training row with 2 threads
than with 1 (bench/results/cores.json).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deftpipe._fs import lock_is_held
from deftpipe.errors import SpecError

ENV_THREADS = "DEFTPIPE_NUM_THREADS"
ENV_DIR = "DEFTPIPE_RUNTIME_DIR"
MAGIC = b"deftpipe worker registration\n"
_OURS = re.compile(r"deftpipe-worker-\d+-[A-Za-z0-9_]+\.lock")


def env_threads() -> int:
    """``$DEFTPIPE_NUM_THREADS`` as a number (0 when unset or empty).

    Raises:
        SpecError: it is set to anything but a whole number ≥ 1.
    """
    raw = os.environ.get(ENV_THREADS, "").strip()
    if not raw:
        return 0
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise SpecError(f"{ENV_THREADS}={raw[:40]!r} is not a whole number of threads ≥ 1; set it to e.g. "
                        f"{ENV_THREADS}=2, or unset it to share this host's cores fairly")
    return n


def host_cores() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def registry_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or Path(tempfile.gettempdir()) / f"deftpipe-workers-{os.getuid()}")


def is_ours(path: Path) -> bool:
    """``path`` is a worker registration deftpipe wrote: its name pattern and its content."""
    if not _OURS.fullmatch(path.name):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC) + 1) == MAGIC
    except OSError:
        return False


def _held(path: Path) -> bool:
    """True when a live process holds the lock on ``path``; a stale file of ours is removed."""
    if lock_is_held(path):
        return True
    with contextlib.suppress(OSError):
        path.unlink()
    return False


def live_workers() -> int:
    """Registered deftpipe workers on this host whose process is alive."""
    d = registry_dir()
    try:
        files = [p for p in d.glob("deftpipe-worker-*.lock") if is_ours(p)]
    except OSError:
        return 0
    return sum(_held(p) for p in files)


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """Count this process as a worker while the block runs (nested blocks count once)."""
    global _depth
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    d = registry_dir()
    fd, path = None, None
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"deftpipe-worker-{os.getpid()}-", suffix=".tmp", dir=d)
        os.write(fd, MAGIC)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = Path(name).with_suffix(".lock")
        os.rename(name, path)  # visible to the count only once locked
    except OSError:
        pass  # no shared registry (read-only tmp): this process simply is not counted
    _depth = 1
    try:
        yield
    finally:
        _depth = 0
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
        if fd is not None:
            os.close(fd)


_depth = 0


def fair_threads(requested: int = 0) -> int:
    """The thread count of the rule above (call it inside :func:`registered` to count yourself)."""
    if requested > 0:
        return requested
    env = env_threads()
    if env > 0:
        return env
    return max(host_cores() // max(live_workers(), 1), 1)


__all__ = ["ENV_DIR", "ENV_THREADS", "MAGIC", "env_threads", "fair_threads", "is_ours", "host_cores", "live_workers", "registered", "registry_dir"]
