"""A plain TAO Visual ChangeNet classify workspace (CSVs + images + experiment YAML), no deftpipe files."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from pipeline_tests._workspaces import make_easy_ws

SPLIT_CSVS = {"train": "train/base/training_set.csv", "val": "train/base/validation_set.csv",
              "kpi": "kpi/testing_set.csv", "pool": "mining/mining_pool.csv"}


def experiment(src: Path, results: Path, **train: object) -> dict:
    """A TAO classify spec over ``src`` (the keys of TAO's tutorial experiment_classify.yaml)."""
    ds = {"csv_path": None, "images_dir": str(src / "images")}
    doc = {
        "encryption_key": "tlt_encode", "task": "classify", "results_dir": str(results),
        "model": {"backbone": {"type": "fan_small_12_p4_hybrid", "pretrained_backbone_path": None},
                  "classify": {"train_margin_euclid": 2.0, "eval_margin": 0.005, "embedding_vectors": 5,
                               "embed_dec": 30, "difference_module": "euclidean",
                               "learnable_difference_modules": 4}},
        "dataset": {"classify": {
            "train_dataset": {**ds, "csv_path": str(src / SPLIT_CSVS["train"])},
            "validation_dataset": {**ds, "csv_path": str(src / SPLIT_CSVS["val"])},
            "test_dataset": {**ds, "csv_path": str(src / SPLIT_CSVS["kpi"])},
            "infer_dataset": {**ds, "csv_path": str(src / SPLIT_CSVS["kpi"])},
            "image_ext": ".png", "batch_size": 16, "workers": 2, "num_input": 1, "input_map": None,
            "concat_type": "linear", "image_width": 32, "image_height": 32, "num_classes": 2}},
        "train": {"pretrained_model_path": None, "num_epochs": 2, "checkpoint_interval": 1,
                  "validation_interval": 1, "seed": 7,
                  "optim": {"lr": 0.002, "optim": "adamw", "policy": "linear", "momentum": 0.9,
                            "weight_decay": 0.01},
                  "classify": {"loss": "contrastive", "cls_weight": [1.0, 10.0]}, **train},
    }
    return doc


def make_tao_workspace(root: Path, **train: object) -> tuple[Path, Path]:
    """(TAO dataset folder, experiment YAML path): the easy binary task, deftpipe's files removed."""
    src = make_easy_ws(root, multiclass=False)
    for p in ("specs", "pipeline.yaml", ".deftpipe_cache"):
        target = src / p
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    spec = root / "experiment_classify.yaml"
    spec.write_text(yaml.safe_dump(experiment(src, root / "tao_results", **train), sort_keys=False))
    return src, spec
