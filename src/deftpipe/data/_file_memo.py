"""Per-process memo of facts about image files, keyed by (path, size, mtime_ns).

The DEFT loop validates and leak-checks its growing training set every iteration; the images
carried over have not changed since the last check, so re-decoding and re-hashing them is pure
overhead (seconds per iteration on DeepPCB). A file that is rewritten gets a new size or mtime and
is checked again; nothing is memoised for a file that failed, so a fix is seen at once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
SHA1 = "sha1"  # kind of the SHA-1 digest of a file's bytes (leak check; image cache)
_MEMO: dict[tuple[str, str, int, int], object] = {}


def _file_key(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return path, st.st_size, st.st_mtime_ns


def map_files(kind: str, paths: Iterable[str], compute: Callable[[str], T], *, keep: Callable[[T], bool],
              missing: T, workers: int = 8) -> dict[str, T]:
    """``{path: compute(path)}`` for every distinct path; ``missing`` where there is no such file.

    Results with ``keep(result)`` are remembered for that (size, mtime) of the file; only the
    files not remembered run ``compute``, in a pool of ``workers`` threads (1: inline). Threads pay
    off for work that releases the GIL on large inputs (hashing, reading); decoding small images
    does not (see ``_cache.DECODE_THREADS``).
    """
    out: dict[str, T] = {}
    todo: list[tuple[str, tuple[str, str, int, int]]] = []
    for p in dict.fromkeys(paths):
        key = _file_key(p)
        if key is None:
            out[p] = missing
        elif (kind, *key) in _MEMO:
            out[p] = _MEMO[(kind, *key)]  # type: ignore[assignment]
        else:
            todo.append((p, (kind, *key)))
    if not todo:
        return out
    paths_todo = [p for p, _ in todo]
    n = min(workers, len(paths_todo))
    if n > 1:
        # one contiguous chunk per thread: a task per file cost ~40 us of pool overhead each,
        # more than hashing a small PNG (1,400 files: 62 ms of submit/wait for ~15 ms of work)
        size = -(-len(paths_todo) // n)
        chunks = [paths_todo[i:i + size] for i in range(0, len(paths_todo), size)]
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            values = [v for part in pool.map(lambda chunk: [compute(p) for p in chunk], chunks) for v in part]
    else:
        values = [compute(p) for p in paths_todo]
    for (p, key), value in zip(todo, values, strict=True):
        out[p] = value
        if keep(value):
            _MEMO[key] = value
    return out


def remember(kind: str, path: str, size: int, mtime_ns: int, value: object) -> None:
    """Record ``value`` for ``path`` at that (size, mtime) — for a caller that already read the
    file for another reason (the image cache hashes the bytes it decodes, so the leak check of a
    set that was just trained on does not read every file a second time)."""
    _MEMO[(kind, path, size, mtime_ns)] = value


def recall(kind: str, path: str, size: int, mtime_ns: int) -> object | None:
    """The remembered value, or None."""
    return _MEMO.get((kind, path, size, mtime_ns))


def entries(kind: str) -> list[tuple[str, int, int, object]]:
    """Every remembered (path, size, mtime, value) of one kind."""
    return [(k[1], k[2], k[3], v) for k, v in _MEMO.items() if k[0] == kind]


def clear() -> None:
    """Forget everything (tests)."""
    _MEMO.clear()
