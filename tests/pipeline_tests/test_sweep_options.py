"""One sweep-settings object (issue 27 item 5): pipeline.yaml → SweepOptions → run_sweep."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from deftpipe.automl import SweepOptions, run_sweep
from deftpipe.config import PipelineConfig, SweepConfig
from deftpipe.pipeline import sweep_options

#: SweepConfig fields that are not a sweep's own settings (the pipeline reads them around the sweep).
AROUND = {"enabled", "warm_start", "per_trial_seconds", "search_space", "study_name"}


def test_every_sweep_setting_of_pipeline_yaml_reaches_the_options(tmp_path):
    ws = tmp_path / "ws"
    cfg = PipelineConfig.model_validate({"automl": {"phase3": {
        "algorithm": "random", "max_recommendations": 7, "metric": "val_loss", "num_epochs": 3, "batch_size": 4,
        "search_space": "space.yaml", "storage": "sqlite:///x.db", "seed": 9, "keep_checkpoints": 2,
        "rerun_margin": 1.5}}})
    sc = cfg.automl.phase3
    o = sweep_options(ws, cfg, sc, spec=ws / "s.yaml", train_csv=ws / "t.csv", out_dir=ws / "out",
                      study_name="run-phase3", pretrained=ws / "w.pth")
    assert isinstance(o, SweepOptions)
    for name in set(SweepConfig.model_fields) - AROUND:
        assert getattr(o, name) == getattr(sc, name), name
    assert o.search_space == cfg.path(ws, "space.yaml") and o.study_name == "run-phase3"
    assert o.val_csv == cfg.path(ws, cfg.data.val_csv) and o.pretrained == ws / "w.pth"
    named = sweep_options(ws, PipelineConfig.model_validate({"automl": {"phase1": {"study_name": "mine"}}}),
                          SweepConfig(study_name="mine"), spec=ws / "s.yaml", train_csv=ws / "t.csv",
                          out_dir=ws / "o", study_name="run-phase1")
    assert named.study_name == "mine" and named.search_space is None


def test_run_sweep_takes_the_options_or_their_fields_not_both(tmp_path):
    o = SweepOptions(spec=tmp_path / "s.yaml", train_csv=tmp_path / "t.csv", val_csv=tmp_path / "v.csv",
                     out_dir=tmp_path / "o")
    with pytest.raises(TypeError, match="not both"):
        run_sweep(o, metric="val_loss")
    with pytest.raises(TypeError):
        run_sweep(spec="s.yaml", train_csv="t", val_csv="v", out_dir="o", no_such_setting=1)
    assert not (tmp_path / "o").exists()
    assert {f.name for f in dataclasses.fields(SweepOptions)} >= {"storage", "enqueue_spec", "heartbeat_interval"}
    assert SweepOptions(spec="s", train_csv="t", val_csv="v", out_dir="o", enqueue_spec=Path("a")).enqueue_sources() \
        == [Path("a")]
