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
U = TypeVar("U")
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
    # one contiguous chunk per thread: a task per file cost ~40 us of pool overhead each, more than
    # hashing a small PNG (profiled: 62 ms of submit/wait for 1,400 files)
    values = map_chunked(compute, [p for p, _ in todo], threads=workers, step=-(-len(todo) // max(workers, 1)))
    for (p, key), value in zip(todo, values, strict=True):
        out[p] = value
        if keep(value):
            _MEMO[key] = value
    return out


def map_chunked(fn: Callable[[T], U], items: list[T], *, threads: int, step: int) -> list[U]:
    """``[fn(x) for x in items]``, in order, on ``threads`` threads that each take ``step`` items at
    a time (a future per item costs more than a cheap ``fn``); inline when one thread would do."""
    if threads <= 1 or len(items) <= step:
        return [fn(x) for x in items]
    chunks = [items[i:i + step] for i in range(0, len(items), step)]
    with ThreadPoolExecutor(min(threads, len(chunks))) as pool:
        return [v for part in pool.map(lambda chunk: [fn(x) for x in chunk], chunks) for v in part]


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
