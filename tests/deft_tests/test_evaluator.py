"""kpi.evaluator_command: a plant's own KPI evaluator, run for real as a subprocess."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from deftpipe.deft._evaluator import run_evaluator
from deftpipe.deft._loop import gate
from deftpipe.deft._steps import step_evaluate
from deftpipe.errors import DataError

# counts the defects scored below 0.5 and prints them as the plant's metric
EVALUATOR = """
import json, sys
import pandas as pd
df = pd.read_csv(sys.argv[1])
low = int(((df["label"] != "PASS") & (df["score"].astype(float) < 0.5)).sum())
print("evaluating", len(df), "rows")
print(json.dumps({"escapes_at_half": low, "rows": len(df)}))
"""


def test_custom_metric_reaches_the_state_and_the_gate(run_copy, loop_run, tmp_path):
    def _run(results, argv, *, metric="escapes_at_half", target=0.0):
        return loop_run(results, metric=metric, operator="<=", target=target, evaluator_command=argv)

    script = tmp_path / "evaluator.py"
    script.write_text(EVALUATOR)
    run = _run(run_copy, [sys.executable, str(script), "{inference_csv}"])
    inf = pd.read_csv(run.it("iter1")["inference_csv"])
    expected = int(((inf["label"] != "PASS") & (inf["score"] < 0.5)).sum())
    outcome = step_evaluate(run, "iter1")
    assert outcome.updates["escapes_at_half"] == expected and outcome.updates["rows"] == len(inf)
    assert "far_pct" in outcome.updates  # the built-in metrics stay
    assert f"escapes_at_half {expected:g} (target ≤ 0)" in outcome.summary
    saved = json.loads(outcome.artefacts["metrics_json"].read_text())
    assert saved["custom_evaluator"] == {"escapes_at_half": expected, "rows": len(inf)}
    # the gate reads the custom metric: met at target = the value, not met below it
    met = _run(run_copy, run.ctx.kpi.evaluator_command, target=expected)
    met.it("iter1").update(outcome.updates)
    assert gate(met, "iter1") == ("complete", f"KPI met: escapes_at_half {float(expected)} <= {expected:g}", False)
    unmet = _run(run_copy, run.ctx.kpi.evaluator_command, metric="rows", target=0)
    unmet.it("iter1").update(outcome.updates)
    verdict = gate(unmet, "iter1")
    assert verdict is None or not verdict[1].startswith("KPI met")


@pytest.mark.parametrize(("body", "argv_extra", "message"), [
    ("print('no json here')", [], "must print one JSON object of finite numbers"),
    ("print('{\"far_pct\": \"low\"}')", [], "must print one JSON object of finite numbers"),
    ("import sys; sys.exit('broken evaluator')", [], "exited with code 1: broken evaluator"),
    ("print('{}')", ["{model}"], "unknown placeholder 'model'"),
])
def test_bad_evaluators_are_clear_errors(tmp_path, body, argv_extra, message):
    script = tmp_path / "bad.py"
    script.write_text(body)
    with pytest.raises(DataError, match=message):
        run_evaluator([sys.executable, str(script), *argv_extra], inference_csv=tmp_path / "x.csv",
                      kpi_csv=tmp_path / "k.csv", out_dir=tmp_path)


def test_missing_program(tmp_path):
    with pytest.raises(DataError, match="program 'no-such-evaluator' not found"):
        run_evaluator(["no-such-evaluator"], inference_csv=tmp_path / "x.csv", kpi_csv=tmp_path / "k.csv",
                      out_dir=tmp_path)
