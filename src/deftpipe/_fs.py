"""Crash-safe file writes and run locks.

Every file that matters is written to a temporary sibling, fsynced and renamed over the target, so
a reader (or a resumed run after ``kill -9``) sees either the old or the new content, never half.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from deftpipe._faults import disk_full
from deftpipe.errors import DeftpipeError, StateError

#: errno values that mean "this disk or folder cannot take the write": a user's problem, one line.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class DiskError(DeftpipeError):
    """A file could not be written: full or read-only disk, quota, permissions (names the file)."""


class LockedError(StateError):
    """Another live process holds the folder's :func:`run_lock`."""


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Turn a full/read-only disk while writing ``path`` into a :class:`DiskError` naming ``path``
    (not the temporary sibling); the old content of ``path`` is untouched."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_ERRNOS:
            raise
        raise DiskError(f"cannot write {path}: {err.strerror or os.strerror(err.errno)}; free space or make the "
                        "folder writable, then rerun the same command to resume (the previous version of the file "
                        "is intact)") from None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def user_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc), else by setting it back at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode(*, secret: bool = False, folder: bool = False) -> int:
    """The mode of a file or folder deftpipe creates: the user's umask applied (a team reads each other's
    results), except a file that holds a secret: 0600. ``mkstemp``/``mkdtemp`` alone would give 0600/0700."""
    if secret:
        return 0o700 if folder else 0o600
    return (0o777 if folder else 0o666) & ~user_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, secret: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename); the file
    follows the user's umask unless ``secret`` (then 0600)."""
    path = Path(path)
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, file_mode(secret=secret))
        try:
            with os.fdopen(fd, "wb") as f:
                disk_full(path)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, secret: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), secret=secret)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, secret: bool = False) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", secret=secret)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, secret: bool = False) -> Iterator[Path]:
    """Yield a temporary file path; on success it is fsynced and renamed to ``path``.

    For writers that need a filename (``torch.save``, ``np.save``, ``DataFrame.to_csv``). The file
    follows the user's umask unless ``secret`` (then 0600).
    """
    path = Path(path)
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.fchmod(fd, file_mode(secret=secret))
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming(path):
            disk_full(path)
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; rename it to ``path`` only on success.

    On any exception the temporary directory is removed, so no partial output is ever left.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        else:
            raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, file_mode(folder=True))  # mkdtemp makes 0700: the finished folder follows the umask
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def new_folder_removed_on_error(path: str | os.PathLike) -> Iterator[Path]:
    """Create ``path`` (and parents) if missing; if the block fails, remove what this created, so a
    refused or failed start (unreachable storage, bad settings, Ctrl-C) leaves no empty folder behind.
    A folder that already existed is left alone."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)
        raise


def lock_is_held(lock_path: str | os.PathLike) -> bool:
    """True while a live process holds ``lock_path`` (a :func:`run_lock` file); never creates or
    changes the file (``deftpipe status`` tells a live run from a dead one with it)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


#: What a user can do about a held lock, by what holds it (the advice must fit the command refused).
LOCK_HINTS = {
    "training": "wait for it to finish, or pass another --out folder",
    "pipeline run": "a run of this workspace is in progress (`deftpipe status WS` shows it); wait for it to "
                    "finish — a workspace runs one pipeline at a time, with or without --new",
    "DEFT loop": "a loop is in progress in this run folder (`deftpipe status WS` shows it); wait for it to finish",
}


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, *, what: str = "run", name: str = ".lock") -> Iterator[Path]:
    """Hold ``<folder>/<name>`` (default ``.lock``) for the duration of a long run.

    The lock is an OS-level file lock (released by the kernel if the process dies, so ``kill -9``
    never leaves a stale lock). A second process trying to write the same folder gets a clear
    :class:`StateError` instead of corrupting it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / name
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise LockedError(f"another deftpipe {what} is already writing {folder} (lock {lock_path} is held); "
                          f"{LOCK_HINTS.get(what, 'wait for it to finish')}") from None
    try:
        yield lock_path
    finally:
        lock.release()


__all__ = [
    "DISK_ERRNOS",
    "DiskError",
    "LockedError",
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_mode",
    "lock_is_held",
    "new_folder_removed_on_error",
    "run_lock",
]
