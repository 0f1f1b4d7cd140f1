"""The ``deftpipe`` command: one Typer root app, one sub-app per part.

Library errors (:class:`DeftpipeError`) become one line on stderr and exit code 1; usage errors
exit 2 (Typer/Click); Ctrl-C exits 130 with a hint to resume.
"""

from __future__ import annotations

import os
import sys

import typer

from deftpipe.errors import DeftpipeError

app = typer.Typer(
    name="deftpipe",
    help="AutoML baseline -> DEFT data-improvement loop -> AutoML refinement for AOI classifiers.\n\n"
    "Example: deftpipe demo ./demo_ws",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from deftpipe.cli import audit as audit_cli
    from deftpipe.cli import automl as automl_cli
    from deftpipe.cli import data as data_cli
    from deftpipe.cli import deft as deft_cli
    from deftpipe.cli import model as model_cli
    from deftpipe.cli import pipeline as pipeline_cli

    for mod in (data_cli, model_cli, automl_cli, deft_cli, pipeline_cli, audit_cli):
        mod.register(app)


_register()


def main() -> None:
    try:
        app()
    except DeftpipeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - users never see a traceback unless they ask
        if os.environ.get("DEFTPIPE_DEBUG"):
            raise
        print(f"internal error: {type(e).__name__}: {e} (set DEFTPIPE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        sys.exit(1)
