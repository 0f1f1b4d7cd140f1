"""No secret value reaches an artefact or a message: a user program that prints one (the KPI
evaluator, an external trainer), a storage URL with a password."""

from __future__ import annotations

import sys

import pytest

from deftpipe._argv import run_template
from deftpipe.errors import DataError

SECRET = "tok-9f8e7d6c5b4a"
LEAKY = [sys.executable, "-c", "import os, sys; print('token is', os.environ['PLANT_API_TOKEN']); "
         "print('db postgresql://u:pw-123456@h/db', file=sys.stderr); sys.exit({code})"]


@pytest.mark.parametrize("code", [0, 3])
def test_user_program_output_is_scrubbed_in_log_and_message(tmp_path, monkeypatch, code):
    monkeypatch.setenv("PLANT_API_TOKEN", SECRET)
    log = tmp_path / "evaluator.log"
    argv = [a.replace("{code}", str(code)) if "{code}" in a else a for a in LEAKY]
    argv = [a.replace("{", "{{").replace("}", "}}") for a in argv]  # literal braces in the template
    try:
        out = run_template(argv, {}, what="kpi.evaluator_command", log=log)
        message = ""
    except DataError as e:
        out, message = "", str(e)
    assert (code != 0) == bool(message)
    text = log.read_text()
    assert "token is ***" in text and "pw-123456" not in text and "u:***@h" in text
    assert SECRET not in text and SECRET not in message and "pw-123456" not in message
    assert SECRET in out or code != 0  # the program's stdout itself is handed back unchanged for parsing


def test_storage_password_never_in_a_message(bad):
    r = bad.refused("automl", "worker", "--storage", "postgresql://alice:hunter2-pw@127.0.0.1:9/optuna",
                    "--study", "s", match=r"alice:\*\*\*@")
    assert "hunter2-pw" not in r.err + r.out
