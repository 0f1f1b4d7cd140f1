"""Study storage: one place that turns ``--storage`` into an Optuna storage object.

Default (``None``): a SQLite file ``<out_dir>/study.db``. Why SQLite and not Optuna's journal file:
killed-worker recovery needs Optuna's heartbeat (a RUNNING trial whose process died is failed after
a grace period and retried), and in Optuna 5 only the RDB storages implement heartbeats. SQLite's
"database is locked" errors with several local workers are avoided by a long busy timeout
(writes are a handful per epoch). Several machines: pass any SQLAlchemy URL, e.g.
``postgresql://user@host/db``; a plain file path is taken as a SQLite file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError

from deftpipe._redact import scrub, scrub_clip
from deftpipe.errors import SweepError

DEFAULT_DB_NAME = "study.db"
DEFAULT_HEARTBEAT_S = 10  # seconds between heartbeats of a running trial
GRACE_FACTOR = 3  # a trial is stale after GRACE_FACTOR missed heartbeats
MAX_RETRY = 2  # how often a killed trial is retried before it stays failed
SQLITE_BUSY_TIMEOUT_S = 120
INIT_ATTEMPTS = 4  # tries to open a storage whose schema another process is creating


def redact(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (never print secrets)."""
    return scrub(url)


def storage_url(storage: str | Path | None, out_dir: str | Path | None) -> str:
    """Normalise ``--storage`` to an SQLAlchemy URL (``None`` -> ``sqlite:///<out_dir>/study.db``)."""
    if storage is None:
        if out_dir is None:
            raise SweepError("no --storage given and no --out folder to put the default study.db in")
        return f"sqlite:///{(Path(out_dir) / DEFAULT_DB_NAME).resolve()}"
    text = str(storage)
    if "://" not in text:
        if Path(text).suffix in (".log", ".journal", ".jsonl"):
            raise SweepError(
                f"--storage {text} looks like an Optuna journal file; deftpipe needs a database storage "
                "(journal files have no heartbeats, so a killed trial would never be retried): pass a "
                "SQLite file such as study.db, or a database URL such as postgresql://user@host/db")
        return f"sqlite:///{Path(text).resolve()}"
    scheme, rest = text.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; use psycopg2 when only it is installed
        # (deftpipe[postgres] installs psycopg2-binary).
        driver = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
        return f"postgresql+{driver}://{rest}"
    return text


def _sqlite_synchronous_normal(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")


def open_storage(url: str, *, heartbeat_interval: int | None = DEFAULT_HEARTBEAT_S) -> RDBStorage:
    """An RDB storage with heartbeat + retry of stale trials. A SQLite file's folder must exist.

    Raises:
        SweepError: unsupported URL, missing driver, missing folder/file, or the database cannot be reached.
    """
    engine_kwargs: dict = {"pool_pre_ping": True}
    sqlite = url.startswith("sqlite:///") and ":memory:" not in url
    hb = heartbeat_interval if heartbeat_interval and heartbeat_interval > 0 else None
    try:
        if sqlite:
            db = Path(url.split("sqlite:///", 1)[-1])
            if not db.parent.is_dir():  # never create folders a typo names
                raise SweepError(f"the folder {db.parent} of SQLite storage {db.name} does not exist; create it "
                                 "or fix --storage / automl.*.storage")
            engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
            # Write-ahead log: readers never block the writer (several local workers, the dashboard),
            # and a commit costs one fsync of the log instead of two of the database. Persistent.
            with contextlib.closing(sqlite3.connect(db, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
        for attempt in range(INIT_ATTEMPTS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=hb,
                        grace_period=hb * GRACE_FACTOR if hb else None,
                        heartbeat_stale_trial_callback=(
                            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY) if hb else None),
                    )
                break
            except SQLAlchemyError:
                # Two processes creating the schema of a new database at once: one loses the race
                # (duplicate alembic version row); the schema exists on the next try.
                if attempt == INIT_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
        if sqlite:
            # In WAL mode synchronous=NORMAL is still crash-safe (no corruption; at worst the last
            # commits before a power cut are lost) and skips an fsync per commit (~10 ms each).
            event.listen(storage.engine, "connect", _sqlite_synchronous_normal)
            storage.engine.dispose()  # pooled connections made during set-up get the pragma too
        return storage
    except SweepError:
        raise
    except ImportError as err:
        raise SweepError(
            f"storage {redact(url)} needs a database driver that is not installed ({err}); for PostgreSQL "
            "install it with `pip install 'deftpipe[postgres]'`"
        ) from None
    except Exception as err:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot open"
        msg = redact(str(err).splitlines()[0]) if str(err) else type(err).__name__
        raise SweepError(
            f"cannot open study storage {redact(url)}: {msg}; check the URL given with --storage "
            "(SQLAlchemy form, e.g. postgresql://user@host:5432/db or sqlite:///path/study.db)"
        ) from None


def _storage_cause(err: BaseException | None) -> BaseException | None:
    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, (optuna.exceptions.StorageInternalError, SQLAlchemyError)):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """A database that goes away mid-sweep (server restarted, network cut) is one line, not an
    internal error: the study keeps every finished trial, and a rerun resumes it (a trial cut short
    goes stale and is retried)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - Optuna can mask the storage error (an UnboundLocalError in
        # its own clean-up when the database is gone): look down the exception chain
        cause = _storage_cause(err)
        if cause is None:
            raise
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise SweepError(f"lost the study storage {redact(url)} ({scrub_clip(first, 200)}); once it is reachable, rerun "
                         "the same command to resume: finished trials are kept, a trial cut short is retried") from None


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]


__all__ = ["DEFAULT_DB_NAME", "DEFAULT_HEARTBEAT_S", "open_storage", "redact", "storage_errors", "storage_url",
           "study_names"]
