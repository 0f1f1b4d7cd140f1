"""A second synthetic task for the bridge tests: balanced, easily learnt, binary or 3-class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from deftpipe.config import PipelineConfig, dump_config
from deftpipe.spec import dump_spec, spec_from_dict

CLASSES = ["PASS", "copper", "pin-hole"]  # names the data layer knows; the task itself is not AOI-like
SPLITS = {"train": 36, "val": 12, "kpi": 12, "pool": 12}  # rows per class


def make_easy_ws(root: Path, *, multiclass: bool, seed: int = 0) -> Path:
    """A balanced, easily learnt task: plain textures; "copper" adds a bright square, "pin-hole" a
    dark one. ``multiclass``: 3 classes and ``val_loss`` sweeps; else binary PASS/defect with
    ``far_pct``. The KPI target can never be met, so the loop always runs its iteration."""
    rng = np.random.default_rng(seed)
    ws = root / ("multiclass_ws" if multiclass else "binary_ws")
    rows: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for split, per_class in SPLITS.items():
        for label in CLASSES:
            for i in range(per_class):
                name = f"{split}_{label}_{i:03d}"
                golden = (rng.random((32, 32)) * 80 + 60).astype(np.uint8)
                test = golden.copy()
                if label != "PASS":
                    y, x = rng.integers(4, 24, size=2)
                    test[y:y + 6, x:x + 6] = 250 if label == "copper" else 5
                test = np.clip(test.astype(int) + rng.integers(-6, 7, test.shape), 0, 255).astype(np.uint8)
                for kind, img in (("golden", golden), ("test", test)):
                    d = ws / "images" / split / kind
                    d.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(d / f"{name}.png")
                rows[split].append({"input_path": f"{split}/test", "golden_path": f"{split}/golden",
                                    "label": label, "object_name": name, "boardname": f"{split}_board"})
    paths = {"train": "train/base/training_set.csv", "val": "train/base/validation_set.csv",
             "kpi": "kpi/testing_set.csv", "pool": "mining/mining_pool.csv"}
    for split, rel in paths.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows[split]).to_csv(ws / rel, index=False)
    spec = spec_from_dict({
        "model": {"width": 8, "depth": 3, "input_size": 32, **({"num_classes": 3, "classes": CLASSES}
                                                                  if multiclass else {})},
        "dataset": {"classify": {"images_dir": "../images", "image_ext": ".png"}},
        "train": {"num_epochs": 2, "batch_size": 16, "num_threads": 1},
    }, base_dir=ws / "specs")
    dump_spec(spec, ws / "specs" / "baseline_spec.yaml")
    cfg = PipelineConfig(name="balanced-multiclass")
    for sweep in (cfg.automl.phase1, cfg.automl.phase3):
        sweep.metric = "val_loss" if multiclass else "far_pct"
        sweep.max_recommendations = 2
        sweep.num_epochs = 2
        sweep.per_trial_seconds = 5.0
    cfg.deft.max_iterations = 1
    cfg.deft.num_epochs = 1
    cfg.deft.per_iteration_seconds = 10.0
    cfg.deft.sdg.count_per_target = 4
    cfg.deft.sdg.hard_pass_per_target = 2
    cfg.deft.regression_gate_pct = None
    cfg.kpi.operator, cfg.kpi.target = "<", 0.0  # never met: the loop always runs its iteration
    dump_config(cfg, ws)
    return ws
