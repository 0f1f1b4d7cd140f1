"""SHA-1 digests of image files kept on disk between processes (the leak check's memo).

The leak check hashes every image of every split it compares. Inside a process the digests are
memoised (``_file_memo``) and the image cache hashes what it decodes, but a new process — a
resumed or repeated ``deftpipe deft run`` on a pre-seeded baseline, ``deftpipe data leakage`` —
would read every file again (DeepPCB: 45k files, 11 s in the first data_merge). So the digests of
a dataset's files are also kept in its cache folder, in one file per dataset root
(:func:`store_path`; datasets sharing the fallback ``~/.cache/deftpipe`` do not overwrite each
other's), keyed like the memo by (real path, size, mtime): a rewritten file simply misses and is
hashed again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from deftpipe._fs import atomic_path
from deftpipe.data import _file_memo

#: Saving rewrites the whole store, so it is done only when at least this many files were hashed
#: (a DEFT iteration's few dozen synthetic pairs are cheaper to hash again than to save).
MIN_NEW_TO_SAVE = 1000
_LOADED: set[str] = set()


def store_path(cache_dir: Path, root: str) -> Path:
    """The store of the dataset rooted at ``root`` (a real path) inside ``cache_dir``."""
    tag = hashlib.sha1(root.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return cache_dir / f"sha1_digests_{tag}.npz"


def load(store: Path) -> int:
    """Put the store's digests in the process memo (once per process); the number of entries."""
    if str(store) in _LOADED:
        return 0
    _LOADED.add(str(store))
    try:
        with np.load(store, allow_pickle=False) as z:
            paths, sizes, mtimes, digests = z["paths"], z["sizes"], z["mtimes"], z["digests"]
    except (OSError, ValueError, KeyError):
        return 0  # none yet, or damaged: the files are hashed again
    if not (len(paths) == len(sizes) == len(mtimes) == len(digests)) or digests.shape[1:] != (20,):
        return 0
    for p, s, m, d in zip(paths.tolist(), sizes.tolist(), mtimes.tolist(), digests, strict=True):
        _file_memo.remember(_file_memo.SHA1, p.decode("utf-8", "surrogateescape"), s, m, d.tobytes())
    return len(paths)


def save(store: Path, root: str) -> int:
    """Write every memoised digest of a file under ``root`` (newest mtime per path) to the store."""
    newest: dict[str, tuple[int, int, bytes]] = {}
    prefix = root.rstrip("/") + "/"
    for path, size, mtime, digest in _file_memo.entries(_file_memo.SHA1):
        if path.startswith(prefix) and isinstance(digest, bytes) and len(digest) == 20:
            if path not in newest or mtime > newest[path][1]:
                newest[path] = (size, mtime, digest)
    if not newest:
        return 0
    paths = list(newest)
    try:
        with atomic_path(store) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, paths=np.array([p.encode("utf-8", "surrogateescape") for p in paths]),
                         sizes=np.array([newest[p][0] for p in paths], np.int64),
                         mtimes=np.array([newest[p][1] for p in paths], np.int64),
                         digests=np.frombuffer(b"".join(newest[p][2] for p in paths), np.uint8).reshape(-1, 20))
    except OSError:
        return 0  # a read-only cache folder: still correct, just slower next time
    _LOADED.add(str(store))
    return len(paths)


def forget_loaded() -> None:
    """Tests: let the next :func:`load` read the store again."""
    _LOADED.clear()
