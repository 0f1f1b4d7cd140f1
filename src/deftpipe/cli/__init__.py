"""The ``deftpipe`` command: one Typer root app, one sub-app per part.

Library errors (:class:`DeftpipeError`) become one line on stderr and exit code 1; usage errors
exit 2 (Typer/Click); Ctrl-C exits 130 with a hint to resume.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import typer

import deftpipe.tao  # noqa: F401  (registers adapter.kind "tao" and the TAO spec format)
from deftpipe._cores import env_threads
from deftpipe._fs import DISK_ERRNOS
from deftpipe._malloc import keep_freed_memory
from deftpipe._redact import scrub, scrub_clip
from deftpipe.cli import audit as audit_cli
from deftpipe.cli import automl as automl_cli
from deftpipe.cli import data as data_cli
from deftpipe.cli import deft as deft_cli
from deftpipe.cli import model as model_cli
from deftpipe.cli import pipeline as pipeline_cli
from deftpipe.errors import DeftpipeError, clip

app = typer.Typer(
    name="deftpipe",
    help="AutoML baseline -> DEFT data-improvement loop -> AutoML refinement for AOI classifiers.\n\n"
    "Example: deftpipe demo ./demo_ws",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    for mod in (data_cli, model_cli, automl_cli, deft_cli, pipeline_cli, audit_cli):
        mod.register(app)


_register()


def _thread_error(args) -> None:
    """A background thread's exception (e.g. a sweep's heartbeat when the database goes away) is one
    scrubbed warning line, not a traceback; the main thread reports what it means."""
    if os.environ.get("DEFTPIPE_DEBUG"):
        threading.__excepthook__(args)
        return

    name = args.thread.name if args.thread is not None else "thread"
    print(f"warning: background {name} stopped: {type(args.exc_value).__name__}: "
          f"{scrub_clip(' '.join(str(args.exc_value).split()), 200)}", file=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop): unwound like Ctrl-C, so every record says
    "interrupted" and the same command resumes."""


_terminated = threading.Event()  # Click re-raises Ctrl-C as Abort: the flag survives the translation


def _on_sigterm(signum, frame) -> None:
    _terminated.set()
    raise Terminated()


def main() -> None:
    threading.excepthook = _thread_error
    _terminated.clear()
    with contextlib.suppress(ValueError):  # not the main thread (an embedding program): leave it alone
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        env_threads()  # a wrong DEFTPIPE_NUM_THREADS is one error before any command starts
        keep_freed_memory()  # a training step's activations stay in the heap for the next one
        rc = app(standalone_mode=False)
    except DeftpipeError as e:
        print(f"error: {scrub(str(e))}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as e:  # noqa: BLE001 - users never see a traceback unless they ask
        _usage_or_internal(e)
    if rc == 130:  # Typer turns Ctrl-C into exit code 130
        _interrupted()
    sys.exit(rc if isinstance(rc, int) else 0)


def _interrupted() -> None:
    if _terminated.is_set():
        print("terminated (SIGTERM): rerun the same command to resume where it stopped", file=sys.stderr)
        sys.exit(143)
    print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
    sys.exit(130)


def _usage_or_internal(e: Exception) -> None:
    """Typer/Click errors (bad flag or value: exit 2, help when no arguments) as one line;
    anything else is an internal error (one line, traceback with DEFTPIPE_DEBUG=1)."""
    kind = type(e).__name__
    if kind == "NoArgsIsHelpError":
        e.show()  # type: ignore[attr-defined]
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    if kind == "Abort":
        _interrupted()
    if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
        ctx = getattr(e, "ctx", None)
        where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        print(f"error: {clip(e.format_message())}{where}", file=sys.stderr)
        sys.exit(e.exit_code)

    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:  # full or read-only disk: expected, not internal
        print(f"error: cannot write {e.filename or 'a file'}: {e.strerror}; free space or make the folder writable, "
              "then rerun the same command to resume", file=sys.stderr)
        sys.exit(1)
    if os.environ.get("DEFTPIPE_DEBUG"):
        raise e

    print(f"internal error: {kind}: {scrub_clip(str(e))} (set DEFTPIPE_DEBUG=1 for the traceback)", file=sys.stderr)
    sys.exit(1)
