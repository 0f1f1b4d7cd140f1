"""Pre-flight: nine sections in order, real check outcomes, blockers, secrets never printed, no writes."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from deftpipe.cli import app
from deftpipe.pipeline import preflight

SECTIONS = ["host", "credentials", "artefacts", "datasets", "phase1", "phase2", "phase3", "estimate", "confirm"]


def _edit_yaml(path, fn):
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))


def test_nine_sections_in_order_and_nothing_written(tiny_ws):
    report = preflight(tiny_ws, measure=False)
    assert [s["name"] for s in report["sections"]] == SECTIONS
    assert report["ok"], report["blockers"]
    datasets = report["sections"][3]
    assert [r["split"] for r in datasets["table"]] == ["train", "validation", "KPI test", "mining pool", "holdout"]
    train = datasets["table"][0]
    assert train["rows"] == train["pass"] + train["defects"] > 0 and "PASS" in train["labels"]
    assert datasets["leakage"]["n_overlapping"] == 0
    assert datasets["items"][0]["value"] == "0 overlapping rows"
    phase2 = {i["name"]: i for i in report["sections"][5]["items"]}
    assert phase2["baseline source"]["value"].startswith("automl_phase1")
    assert phase2["baseline source"]["status"] == "approved by this gate"
    assert "train.optim.lr" in {i["name"]: i for i in report["sections"][4]["items"]}["swept hyper-parameters"][
        "value"]
    assert report["confirmation"].startswith("Type 'go'")
    assert not (tiny_ws / "results").exists()


def test_estimate_uses_given_times_or_a_measured_dry_run(tiny_ws):
    def given(d):
        d["automl"]["phase1"]["per_trial_seconds"] = 10.0
        d["automl"]["phase3"]["per_trial_seconds"] = 20.0
        d["deft"]["per_iteration_seconds"] = 30.0

    measured = preflight(tiny_ws)["sections"][7]
    assert measured["rates"]["source"] == "measured dry run"
    assert measured["rates"]["s_train_row_epoch"] > 0 and measured["seconds"]["total"] > 0
    sec = measured["seconds"]
    assert 0 < sec["total_low"] < sec["total"] < sec["total_high"] <= 2 * sec["total_low"]
    for phase in ("phase1", "phase2", "phase3"):
        assert sec[f"{phase}_low"] <= sec[phase] <= sec[f"{phase}_high"]
    assert not (tiny_ws / "results").exists()  # the dry run lives in a temp folder
    _edit_yaml(tiny_ws / "pipeline.yaml", given)
    est = preflight(tiny_ws)["sections"][7]
    assert est["rates"]["source"] == "per-job times from pipeline.yaml"
    # 2 recs x 10 s; 1 iteration x 30 s (+ a zero-cost baseline eval); 2 recs x 20 s
    assert est["seconds"]["phase1"] == 20.0 and est["seconds"]["phase3"] == 40.0
    assert est["seconds"]["phase2"] == 30.0


def test_missing_weights_unset_env_and_leak_are_blockers(tiny_ws):
    spec = tiny_ws / "specs" / "baseline_spec.yaml"

    def weights_and_command(d):
        d.setdefault("train", {})["pretrained_model_path"] = "missing_weights.pth"
        d["adapter"] = {"kind": "command", "train": ["definitely-not-a-trainer-xyz", "--key", "${DEFTPIPE_TEST_TOKEN}"],
                        "evaluate": ["true"], "infer": ["true"], "embed": ["true"]}

    _edit_yaml(spec, weights_and_command)
    val = tiny_ws / "train" / "base" / "validation_set.csv"
    train_lines = (tiny_ws / "train" / "base" / "training_set.csv").read_text().splitlines()
    with val.open("a") as f:
        f.write(train_lines[1] + "\n")  # one training row copied into validation: a leak
    report = preflight(tiny_ws, measure=False)
    text = "\n".join(report["blockers"])
    assert not report["ok"]
    assert "missing_weights.pth is missing" in text
    assert "DEFTPIPE_TEST_TOKEN is used by a command template but is not set" in text
    assert "definitely-not-a-trainer-xyz" in text
    assert "overlapping rows between the splits" in text
    creds = {i["name"]: i["status"] for i in report["sections"][1]["items"]}
    assert creds["$DEFTPIPE_TEST_TOKEN (used by an external command template)"] == "UNSET"
    assert report["confirmation"].startswith("4 blocker(s)") or "blocker(s)" in report["confirmation"]


def test_holdout_is_leak_checked_and_its_absence_is_said_plainly(tiny_ws):
    holdout = tiny_ws / "holdout" / "holdout_set.csv"
    kpi_lines = (tiny_ws / "kpi" / "testing_set.csv").read_text().splitlines()
    with holdout.open("a") as f:
        f.write(kpi_lines[1] + "\n")  # a KPI row copied into the holdout: a leak
    report = preflight(tiny_ws, measure=False)
    assert "1 overlapping rows between the splits" in "\n".join(report["blockers"])
    holdout.unlink()
    report = preflight(tiny_ws, measure=False)
    assert report["ok"], report["blockers"]  # a workspace without a holdout still runs ...
    datasets = report["sections"][3]
    assert datasets["table"][-1]["status"] == "none"
    audit = {i["name"]: i for i in datasets["items"]}["audit"]
    assert audit["value"].startswith("no holdout: the run will end without an audit")  # ... and says so
    assert any("without an audit" in w for w in report["warnings"])


def test_unreachable_storage_is_missing_and_password_never_shown(tiny_ws):
    secret = "s3cr3t-pw-123"

    def storage(d):
        d["automl"]["phase1"]["storage"] = f"postgresql://deft:{secret}@127.0.0.1:1/optuna"

    _edit_yaml(tiny_ws / "pipeline.yaml", storage)
    result = CliRunner().invoke(app, ["preflight", str(tiny_ws), "--json", "--no-dry-run"])
    assert result.exit_code == 1
    assert secret not in result.output
    report = json.loads(result.stdout)
    creds = {i["name"]: i["status"] for i in report["sections"][1]["items"]}
    assert any(k.endswith("password in URL") and v == "SET" for k, v in creds.items())
    arte = {i["name"]: i for i in report["sections"][2]["items"]}
    assert arte["Phase 1 storage"]["status"] == "MISSING"
    assert any("Phase 1 storage postgresql://deft:***@127.0.0.1:1/optuna is not reachable" in b
               for b in report["blockers"])


def test_cli_preflight_text_and_missing_csv(tiny_ws):
    shutil.move(tiny_ws / "kpi" / "testing_set.csv", tiny_ws / "kpi" / "moved.csv")
    result = CliRunner().invoke(app, ["preflight", str(tiny_ws), "--no-dry-run"])
    assert result.exit_code == 1
    assert "KPI test CSV" in result.output and "is missing; fix data.kpi_csv in pipeline.yaml" in result.output
    for title in ("1. Workspace, host and platform", "4. Datasets", "9. Confirmation"):
        assert title in result.output


def test_not_a_workspace_is_one_clear_error(tmp_path):
    from deftpipe.errors import SpecError

    with pytest.raises(SpecError, match="is not a deftpipe workspace"):
        preflight(tmp_path)
