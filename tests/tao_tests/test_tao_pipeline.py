"""The full three-phase pipeline on the TAO backend (VirtualEnvSDK + stand-in trainer), tiny budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deftpipe.cli import app
from deftpipe.pipeline import run_pipeline
from deftpipe.spec import load_spec
from deftpipe.tao import make_sdk

from ._tao_ws import SPLIT_CSVS


@pytest.mark.slow
def test_tao_backend_runs_all_three_phases(tao_src, tmp_path):
    src, spec = tao_src
    ws = tmp_path / "ws"
    res = CliRunner().invoke(app, ["init", "--from-tao", str(spec), str(ws), "--kpi-csv", str(src / SPLIT_CSVS["kpi"]),
                                   "--pool-csv", str(src / SPLIT_CSVS["pool"])])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((ws / "pipeline.yaml").read_text())
    # a narrow space in TAO's key names, so one short trial learns the easy task, warm-started too
    (ws / "specs" / "tao_search_space.yaml").write_text(
        "train.optim.lr: {type: float, low: 0.0006, high: 0.001}\n"
        "train.optim.policy: {type: categorical, choices: [linear]}\n")  # 'step' needs 3+ epochs (TAO)
    for phase in ("phase1", "phase3"):
        cfg["automl"][phase].update(max_recommendations=1, num_epochs=2, per_trial_seconds=5.0)
    cfg["deft"].update(max_iterations=1, num_epochs=1, per_iteration_seconds=10.0, regression_gate_pct=None)
    assert cfg["deft"]["sdg"]["count_per_target"] == 0  # init --from-tao: no SDG images in the TAO folder
    cfg["kpi"].update(operator="<", target=0.0)  # never met: the loop runs its iteration
    for f, data in (("pipeline.yaml", cfg),):
        (ws / f).write_text(yaml.safe_dump(data, sort_keys=False))
    for f in ("pipeline.yaml", "specs/baseline_spec.yaml"):
        p = ws / f
        p.write_text(p.read_text().replace("poll_s: 5.0", "poll_s: 0.1"))

    before = sorted(p for p in src.parent.rglob("*"))
    result = run_pipeline(ws, yes=True, show_progress=False)
    assert sorted(p for p in src.parent.rglob("*")) == before  # the TAO workspace gained no file
    assert result["status"] == "complete", result
    run = Path(result["results_dir"])
    labels = [p["label"] for p in result["trajectory"]]
    assert [x for x in labels if x != "reference"] == ["phase1", "baseline", "iter1", "final_automl"]
    state = json.loads((run / "deft_state.json").read_text())
    for label in ("baseline", "iter1", "final_automl"):
        it = state["iterations"][label]
        assert isinstance(it["far_pct"], float) and Path(it["best_ckpt_path"]).is_file()
    # every model was trained by a TAO job; the DEFT retrain was warm-started through TAO's key
    sdk = make_sdk(load_spec(ws / "specs" / "baseline_spec.yaml").adapter.tao)
    jobs = sdk.list_jobs()
    assert all(r["status"] == "Complete" for r in jobs)
    folders = [(r["action"], json.loads(r["specs"])["results_dir"]) for r in jobs]
    assert len(folders) == len(set(folders))  # no job launched twice
    trains = [json.loads(r["specs"]) for r in jobs if r["action"] == "train"]
    assert len(trains) >= 3  # Phase 1 (+ its checks), the DEFT iteration, Phase 3
    warm = [t for t in trains if t["train"]["pretrained_model_path"]]
    assert len(warm) == 2  # the DEFT iteration and the Phase 3 trial
    merged = load_spec(run / "automl" / "phase1" / "baseline_spec_automl.yaml")
    assert merged.adapter.kind == "tao" and merged.tao.source == str(spec)
    assert (run / "best_model.json").is_file() and (run / "pipeline_summary.md").is_file()
