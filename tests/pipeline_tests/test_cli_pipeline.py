"""The pipeline commands' help, usage errors and exit codes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deftpipe.cli import app


@pytest.mark.parametrize("cmd, example", [("preflight", "deftpipe preflight demo_ws --json"),
                                          ("run", "deftpipe run my_ws --yes"),
                                          ("demo", "deftpipe demo demo_ws")])
def test_help_has_an_example(cmd, example):
    result = CliRunner().invoke(app, [cmd, "--help"])
    assert result.exit_code == 0 and example in result.output


def test_usage_error_exits_2():
    assert CliRunner().invoke(app, ["run"]).exit_code == 2
    assert CliRunner().invoke(app, ["preflight", "ws", "--bogus"]).exit_code == 2


def test_run_on_a_folder_without_workspace_is_one_clear_error(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from deftpipe.cli import main; main()", "run", str(tmp_path),
                          "--yes"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: ") and "is not a deftpipe workspace" in out.stderr
    assert "Traceback" not in out.stderr
