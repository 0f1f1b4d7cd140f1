"""A DeepPCB workspace as `init --from-deeppcb` writes it (context 2) runs the DEFT loop end to end."""

from __future__ import annotations

import numpy as np
from PIL import Image

from deftpipe.config import dump_config, load_config
from deftpipe.data import import_deeppcb, read_dataset
from deftpipe.deft import run_loop
from deftpipe.spec import dump_spec, load_spec


def test_context_two_workspace_runs_the_loop_with_sdg_in_the_window(make_fake_deeppcb, tmp_path):
    src = make_fake_deeppcb(tmp_path / "dp", {"10000": 4, "20000": 3, "30000": 3, "40000": 3}, size=160)
    ws = import_deeppcb(src, tmp_path / "ws", crop_size=32, kpi_groups=["20000"], val_groups=["30000"],
                        pool_groups=["40000"], workers=1)
    spec_path = ws / "specs" / "baseline_spec.yaml"
    spec = load_spec(spec_path)
    assert (spec.model.context, spec.model.input_size) == (2, 64)  # the import's default
    spec.model.width, spec.model.depth, spec.train.num_epochs, spec.train.num_threads = 8, 3, 1, 1
    dump_spec(spec, spec_path)
    cfg = load_config(ws)
    cfg.kpi.operator, cfg.kpi.target = "<", 0.0  # never met: the iteration runs
    cfg.deft.num_epochs, cfg.deft.regression_gate_pct = 1, None
    cfg.deft.sdg.count_per_target, cfg.deft.sdg.hard_pass_per_target = 3, 2
    dump_config(cfg, ws)

    state = run_loop(ws, results_dir=ws / "results" / "run_ctx", max_iterations=1, show_progress=False)

    it = state["iterations"]["iter1"]
    assert it["stage_completed"] == "loop_stop" and it["sdg_rows"] > 0
    sdg = read_dataset(it["sdg_csv"])
    defects = sdg[sdg["label"] != "PASS"]
    assert len(defects) > 0
    for _, row in defects.iterrows():
        golden = np.asarray(Image.open(ws / "images" / row["golden_path"] / f"{row['object_name']}.png"), int)
        test = np.asarray(Image.open(ws / "images" / row["input_path"] / f"{row['object_name']}.png"), int)
        assert golden.shape == test.shape == (64, 64)  # drawn on the stored 2x crop
