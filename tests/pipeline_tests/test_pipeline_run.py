"""End-to-end runs of the bridge: a non-AOI balanced multi-class task with val_loss, approval, --new."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deftpipe import deft
from deftpipe.errors import SpecError
from deftpipe.pipeline import PreflightError, run_pipeline
from deftpipe.selection import RULE_FIGURE
from deftpipe.spec import load_spec

from ._workspaces import CLASSES, make_easy_ws


@pytest.mark.slow
def test_val_loss_multiclass_task(tmp_path):
    ws = make_easy_ws(tmp_path, multiclass=True)
    result = run_pipeline(ws, yes=True, show_progress=False)
    run = Path(result["results_dir"])
    assert result["status"] == "complete"
    # Phase 1 → 2: merged spec (no budget keys), copied checkpoint, pre-seeded state.
    merged = load_spec(ws / "specs" / "baseline_spec_automl.yaml")
    assert merged.model.classes == CLASSES and merged.train.num_epochs == 2
    best1 = json.loads((run / "automl" / "phase1" / "best_rec.json").read_text())
    assert best1["metric_name"] == "val_loss"
    assert "num_epochs" not in json.dumps(best1["best"]["specs"])
    ckpts = list((run / "baseline" / "train").glob("model_epoch_*_step_*.pth"))
    assert len(ckpts) == 1 and ckpts[0].stat().st_size > 0
    assert ckpts[0].name == (f"model_epoch_{best1['best']['checkpoint_epoch']:03d}_"
                             f"step_{best1['best']['checkpoint_step']:03d}.pth")
    state = json.loads((run / "deft_state.json").read_text())
    assert state["iterations"]["baseline"]["source"] == "automl_phase1"
    assert state["iterations"]["baseline"]["best_ckpt_path"] == str(ckpts[0])
    assert state["config"]["spec"] == str(run / "automl" / "phase1" / "baseline_spec_automl.yaml")
    # Phase 2 → 3: warm start from the loop's best, trained on the last combined CSV, same val set.
    best3 = json.loads((run / "final_automl" / "best_rec.json").read_text())
    assert best3["metric_name"] == "val_loss"
    record = json.loads((run / "pipeline_state.json").read_text())
    ho = record["phases"]["phase3"]["handoff"]
    assert ho["train_csv"].endswith("train_combined_iter1.csv")
    assert all(state["iterations"][k][RULE_FIGURE] is not None for k in ("baseline", "iter1"))
    assert ho["warm_start_iteration"] == deft.loop_best(state).kept.label  # the do-no-harm chain
    assert state["iterations"]["final_automl"]["source"] == "automl_phase3"
    assert (run / "best_model.json").is_file()
    assert [p["label"] for p in result["trajectory"]] == ["phase1", "reference", "baseline", "iter1", "final_automl"]
    assert result["trajectory"][0]["metric"] == "val_loss"
    # the headline: the deliverable against the user's spec trained once (Phase 1's first trial)
    gain = result["improvement"]
    assert gain["reference_step"] == "user spec (KPI)"
    assert gain["deliverable"] == json.loads((run / "best_model.json").read_text())["far_pct"]
    summary = (run / "pipeline_summary.md").read_text()
    assert "| Phase 1 best (val) | validation | val_loss |" in summary
    # this workspace has no holdout: the run still completes and says plainly that nothing was audited
    audit = json.loads((run / "best_model.json").read_text())["audit"]
    assert audit["done"] is False and "no audit was done" in audit["reason"]
    assert "**No audit was done**" in summary and record["phases"]["audit"]["status"] == "done"
    html = (run / "report.html").read_text()
    assert html.index('aria-label="Pipeline trajectory') < html.index('aria-label="DEFT loop')  # first chart


def test_refused_approval_writes_nothing(tiny_ws):
    cfg = yaml.safe_load((tiny_ws / "pipeline.yaml").read_text())
    cfg["automl"]["phase1"]["per_trial_seconds"] = 1.0
    cfg["automl"]["phase3"]["per_trial_seconds"] = 1.0
    cfg["deft"]["per_iteration_seconds"] = 1.0
    (tiny_ws / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(PreflightError, match=r"not approved \(got 'no', expected 'go'\); nothing was written"):
        run_pipeline(tiny_ws, ask=lambda prompt: "no", show_progress=False)

    def closed(prompt):
        raise EOFError

    with pytest.raises(PreflightError, match="stdin is closed; type 'go' at the prompt or pass --yes"):
        run_pipeline(tiny_ws, ask=closed, show_progress=False)
    assert not (tiny_ws / "results").exists()


def test_blockers_stop_the_run_before_anything_is_written(tiny_ws):
    (tiny_ws / "train" / "base" / "validation_set.csv").unlink()
    with pytest.raises(PreflightError, match=r"pre-flight found \d blocker\(s\), nothing was started; first: "):
        run_pipeline(tiny_ws, yes=True, show_progress=False)
    assert not (tiny_ws / "results").exists()


def test_bad_pipeline_yaml_is_one_clear_error(tiny_ws):
    (tiny_ws / "pipeline.yaml").write_text("automl: {phase1: {max_recommendations: 0}}\n")
    with pytest.raises(SpecError, match="automl.phase1.max_recommendations"):
        run_pipeline(tiny_ws, yes=True, show_progress=False)


def test_hard_stopped_loop_skips_phase3_and_says_why(tiny_ws):
    """A run whose loop hard-stopped (here: a state left so by the regression gate) ends `stopped`."""
    from typer.testing import CliRunner

    from deftpipe._clock import new_run_folder
    from deftpipe.cli import app
    from deftpipe.config import load_config
    from deftpipe.deft._commit import mark_run
    from deftpipe.deft._state import new_state
    from deftpipe.pipeline import PipelineRecord

    cfg_path = tiny_ws / "pipeline.yaml"
    raw = yaml.safe_load(cfg_path.read_text())
    raw["automl"]["phase1"]["enabled"] = False  # the loop trains its own baseline: no Phase 1 needed here
    raw["deft"]["per_iteration_seconds"] = 1.0
    raw["automl"]["phase3"]["per_trial_seconds"] = 1.0
    cfg_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(tiny_ws)
    run = new_run_folder(tiny_ws, create=False)
    PipelineRecord.create(run, workspace=tiny_ws)
    state = new_state(workspace=tiny_ws, results_dir=run, config=cfg, spec_path=tiny_ws / "specs" /
                      "baseline_spec.yaml", max_iterations=1)
    state["iterations"]["baseline"] = {"status": "complete", "stage_completed": "rca", "far_pct": 40.0}
    state["iterations"]["iter1"] = {"status": "complete", "stage_completed": "evaluate", "far_pct": 75.0}
    reason = "regression gate: far_pct 75.0 is 35.0 points worse than the baseline's 40.0 (gate 20.0)"
    mark_run(run, state, status="failed", reason=reason, hard_stop=True)

    result = CliRunner().invoke(app, ["run", str(tiny_ws), "--yes"])
    assert result.exit_code == 1
    assert "Phase 2 hard-stopped (regression gate" in result.output and "Phase 3 skipped" in result.output
    record = json.loads((run / "pipeline_state.json").read_text())
    assert record["status"] == "stopped"
    assert record["phases"]["phase3"]["status"] == "skipped"
    assert "hard-stopped (regression gate" in record["phases"]["phase3"]["reason"]
    summary = (run / "pipeline_summary.md").read_text()
    assert "| phase3 | skipped |" in summary and reason in summary
    assert not (run / "final_automl").exists()
    # A finished run is not resumed: the next `run` would start a new folder.
    from deftpipe.pipeline import latest_unfinished

    assert latest_unfinished(tiny_ws) is None
