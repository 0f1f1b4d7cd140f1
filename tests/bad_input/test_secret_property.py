"""Property: a secret printed by a user program, at any offset of any length of output, reaches no
stored or printed text. Every path that stores or prints subprocess output is fed the same text:
the program's log and error message (``run_template``), the evaluator's message, the loop's and the
pipeline record's failure reason (``deft_state.json``, ``pipeline_state.json``, hence ``status`` and
``report.html``), a trial's fail reason, a failed training's ``metrics.json`` and the CLI's error line."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deftpipe._argv import run_template
from deftpipe._redact import scrub, scrub_clip
from deftpipe.errors import DataError

NAMES = ["DB_PWD", "PLANT_PASS", "S3_KEY", "LINE_AUTH", "AWS_CREDENTIALS", "SENTRY_DSN", "MY_API_TOKEN",
         "HF_SECRET", "CUSTOM_THING"]  # CUSTOM_THING: marked by the user in DEFTPIPE_SECRET_VARS
SOME = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
secret = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", min_size=6, max_size=40)


def _stores(tmp: Path, raw: str) -> list[str]:
    """Every text the project stores or prints from an error message ``raw``."""
    from deftpipe.deft._loop import fail
    from deftpipe.model._train import _record_failure
    from deftpipe.pipeline._pipeline_state import PipelineRecord

    texts = [scrub_clip(raw, 200), scrub_clip(raw, 600)]
    run = SimpleNamespace(ctx=SimpleNamespace(results_dir=tmp / "nowhere"), state={"events": []})
    with warnings.catch_warnings():  # the fake run has no report to rebuild
        warnings.simplefilter("ignore")
        fail(run, "baseline", "evaluate", raw)
    texts.append(json.dumps(run.state))
    rec_dir = tmp / "rec"
    rec_dir.mkdir(exist_ok=True)
    rec = PipelineRecord.create(rec_dir, workspace=tmp)
    rec.fail("phase2", raw)
    texts.append((rec_dir / "pipeline_state.json").read_text())
    out = tmp / "train"
    out.mkdir(exist_ok=True)
    (out / "metrics.json").write_text("{}")
    _record_failure(out, False, RuntimeError(raw))
    texts.append((out / "metrics.json").read_text())
    return texts


@SOME
@given(value=secret, name=st.sampled_from(NAMES), before=st.integers(0, 900), after=st.integers(0, 300),
       code=st.sampled_from([0, 2]))
def test_a_secret_anywhere_in_program_output_is_never_stored(tmp_path, monkeypatch, value, name, before, after, code):
    monkeypatch.setenv("DEFTPIPE_SECRET_VARS", "CUSTOM_THING")
    monkeypatch.setenv(name, value)
    text = "a" * before + value + "b" * after
    prog = [sys.executable, "-c", "import os, sys; t = os.environ['T']; print(t); print(t, file=sys.stderr); "
            f"sys.exit({code})"]
    monkeypatch.setenv("T", text)
    log = tmp_path / "program.log"
    try:
        run_template([p.replace("{", "{{").replace("}", "}}") for p in prog], {}, what="kpi.evaluator_command",
                     log=log)
        message = ""
    except DataError as e:
        message = str(e)
    texts = [log.read_text(), message, *_stores(tmp_path, text), *_stores(tmp_path, message or text)]
    for t in texts:
        assert value not in t
        # no piece of the secret longer than half of it survives next to the cut either
        half = value[: max(4, len(value) // 2)] if len(value) >= 12 else None
        if half and half not in value[1:]:
            assert not any(value[i:i + len(half)] in t for i in range(len(value) - len(half) + 1)
                           if "a" not in value[i:i + len(half)] and "b" not in value[i:i + len(half)])


@pytest.mark.parametrize("name", ["DB_PWD", "PGPASSFILE_X", "API_KEY", "AUTH_HEADER", "MY_CRED", "SENTRY_DSN"])
def test_usual_secret_names_are_hidden(monkeypatch, name):
    monkeypatch.setenv(name, "s3cr3t-value")
    assert scrub("x s3cr3t-value y") == "x *** y"


def test_url_with_password_in_any_variable_is_hidden(monkeypatch):
    monkeypatch.setenv("DATABASE", "postgresql://u:pw-778899@h/db")
    assert "pw-778899" not in scrub("connect failed: pw-778899 rejected")


def test_shell_pwd_and_short_values_are_not_hidden(monkeypatch):
    monkeypatch.setenv("PWD", "/home/ann/ws")
    monkeypatch.setenv("X_KEY", "abc")
    assert scrub("/home/ann/ws abc") == "/home/ann/ws abc"


def test_the_cli_error_line_is_scrubbed(monkeypatch, capsys):
    import deftpipe.cli as cli

    monkeypatch.setenv("DB_PWD", "hunter2-long")

    def boom(**_):
        raise DataError("evaluator said: hunter2-long")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 1
    assert "hunter2-long" not in capsys.readouterr().err
