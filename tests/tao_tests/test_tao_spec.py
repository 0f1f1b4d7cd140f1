"""TAO classify spec <-> deftpipe spec, against the ExperimentConfig key list pinned from nvidia-tao-core."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
import yaml

from deftpipe.automl import load_search_space, parse_search_space
from deftpipe.errors import SpecError
from deftpipe.spec import load_spec
from deftpipe.tao import SEARCH_SPACE as TAO_SPACE_PATH
from deftpipe.tao._spec import (
    KEYS_FILE,
    get_dotted,
    pinned_keys,
    resolve_refs,
    spec_from_tao,
    tao_experiment,
    unknown_keys,
)

from ._tao_ws import SPLIT_CSVS, experiment

# The keys issue 15 names, each checked against the pinned list. The list itself was generated from the
# nvidia-tao-core 7.3.0 wheel (PyPI), nvidia_tao_core/config/visual_changenet/default_config.py,
# ExperimentConfig, by walking dataclasses.fields to every leaf (see tao_changenet_keys.json "source").
ISSUE_KEYS = [
    "task", "results_dir", "encryption_key", "model.backbone.type", "model.classify.difference_module",
    "model.classify.eval_margin", "dataset.classify.train_dataset.csv_path",
    "dataset.classify.validation_dataset.images_dir", "dataset.classify.test_dataset.csv_path",
    "dataset.classify.infer_dataset.csv_path", "dataset.classify.image_ext", "dataset.classify.batch_size",
    "dataset.classify.num_input", "dataset.classify.input_map", "dataset.classify.concat_type",
    "dataset.classify.image_width", "dataset.classify.image_height", "dataset.classify.num_classes",
    "train.num_epochs", "train.checkpoint_interval", "train.validation_interval", "train.pretrained_model_path",
    "train.seed", "train.optim.optim", "train.optim.lr", "train.optim.policy", "train.optim.momentum",
    "train.optim.weight_decay", "train.classify.loss", "train.classify.cls_weight", "evaluate.checkpoint",
    "inference.checkpoint",
]

# TAO's tutorial spec (NVIDIA/tao_tutorials notebooks/tao_launcher_starter_kit/visual_changenet/specs/
# experiment_classify.yaml): its structure and values, with OmegaConf references and the keys older
# than the 7.3.0 schema (val_interval, output_shape). Paths are filled in by the test.
TUTORIAL = """
encryption_key: tlt_encode
task: classify
train:
  resume_training_checkpoint_path: null
  pretrained_model_path: null
  classify: {loss: "contrastive", cls_weight: [1.0, 10.0]}
  num_epochs: 30
  num_nodes: 1
  val_interval: 1
  checkpoint_interval: 1
  optim: {lr: 0.00005, optim: "adamw", policy: "linear", momentum: 0.9, weight_decay: 0.01}
  results_dir: "${results_dir}/train"
  tensorboard: {enabled: True, infrequent_logging_frequency: 1}
results_dir: /results
model:
  backbone: {type: "fan_small_12_p4_hybrid", pretrained_backbone_path: null}
  classify: {train_margin_euclid: 2.0, eval_margin: 0.005, embedding_vectors: 5, embed_dec: 30,
             difference_module: 'euclidean', learnable_difference_modules: 4}
dataset:
  classify:
    train_dataset: {csv_path: DATA/train_combined.csv, images_dir: DATA/images/}
    validation_dataset: {csv_path: DATA/valid_combined.csv, images_dir: DATA/images/}
    test_dataset: {csv_path: DATA/valid_combined.csv, images_dir: DATA/images/}
    infer_dataset: {csv_path: DATA/valid_combined.csv, images_dir: DATA/images/}
    image_ext: .jpg
    batch_size: 16
    workers: 2
    fpratio_sampling: 0.2
    num_input: 4
    input_map: {LowAngleLight: 0, SolderLight: 1, UniformLight: 2, WhiteLight: 3}
    concat_type: linear
    grid_map: {x: 2, y: 2}
    output_shape: [128, 128]
    augmentation_config: {rgb_input_mean: [0.485, 0.456, 0.406], rgb_input_std: [0.229, 0.224, 0.225]}
    num_classes: 2
evaluate:
  checkpoint: "${results_dir}/train/changenet_classify.pth"
  batch_size: ${dataset.classify.batch_size}
inference:
  checkpoint: "${results_dir}/train/changenet_classify.pth"
  batch_size: ${dataset.classify.batch_size}
"""


def test_tao_pinned_keys_cover_the_issue_and_say_where_they_came_from():
    meta = json.loads(KEYS_FILE.read_text())
    assert "nvidia-tao-core 7.3.0" in meta["source"] and "ExperimentConfig" in meta["source"]
    keys = pinned_keys()
    assert [k for k in ISSUE_KEYS if k not in keys] == []
    assert keys["train.optim.optim"] == ["adamw", "adam", "sgd"]
    assert keys["train.optim.policy"] == ["linear", "step"]
    assert keys["model.classify.difference_module"] == ["learnable", "euclidean"]
    assert "train.val_interval" not in keys and len(keys) > 150


def test_tao_pinned_keys_match_nvidia_tao_core_when_installed():
    cfg = pytest.importorskip("nvidia_tao_core.config.visual_changenet.default_config")
    live = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                walk(type(default), prefix + f.name + ".")
            else:
                live.append(prefix + f.name)

    walk(cfg.ExperimentConfig, "")
    assert sorted(live) == sorted(pinned_keys())


def test_tao_spec_translates_into_a_deftpipe_spec(tao_src):
    spec = load_spec(tao_src[1])  # load_spec used to refuse task/encryption_key/train.optim.optim/...
    assert spec.adapter.kind == "tao" and spec.adapter.tao.platform == "virtualenv"
    assert (spec.train.optim.lr, spec.train.optim.optimizer, spec.train.batch_size) == (0.002, "adamw", 16)
    assert (spec.train.num_epochs, spec.train.seed, spec.model.input_size) == (2, 7, 32)
    assert spec.train.optim.scheduler == "cosine"  # TAO policy linear -> the closest built-in schedule
    assert spec.images_dir == tao_src[0] / "images"
    assert spec.dataset.classify.train_csv == str(tao_src[0] / "train/base/training_set.csv")
    assert spec.tao.model.backbone.type == "fan_small_12_p4_hybrid"
    assert spec.tao.model.classify.eval_margin == 0.005 and spec.tao.train.classify.loss == "contrastive"
    assert spec.tao.source == str(tao_src[1])


def test_tao_round_trip_keeps_user_keys_and_writes_tuned_values_back(tao_src, tmp_path):
    doc = yaml.safe_load(tao_src[1].read_text())
    spec = spec_from_tao(doc, source=tao_src[1])
    spec.train.optim.lr = 0.0003
    spec.train.optim.optimizer = "sgd"
    spec.tao.train.optim.policy = "step"
    spec.train.num_epochs = 3  # TAO's StepLR needs 3+ (test below)
    spec.train.batch_size = 8
    out = tao_experiment(spec, results_dir=tmp_path / "r", train_csv=tmp_path / "t.csv", val_csv=tmp_path / "v.csv")
    assert get_dotted(out, "train.optim.lr") == 0.0003 and get_dotted(out, "train.optim.optim") == "sgd"
    assert get_dotted(out, "train.optim.policy") == "step"
    assert get_dotted(out, "dataset.classify.batch_size") == 8
    assert get_dotted(out, "dataset.classify.train_dataset.csv_path") == str(tmp_path / "t.csv")
    assert get_dotted(out, "train.results_dir") == str(tmp_path / "r" / "train")
    # every key the user wrote is still there, and the untouched ones keep their value
    assert unknown_keys(out) == [] and set(unknown_keys(doc)) == set()
    for key in ("encryption_key", "model.classify.embed_dec", "dataset.classify.concat_type",
                "train.classify.cls_weight", "model.backbone.type"):
        assert get_dotted(out, key) == get_dotted(doc, key)
    again = spec_from_tao(out)
    assert (again.train.optim.lr, again.tao.train.optim.policy, again.train.batch_size) == (0.0003, "step", 8)


def test_tao_tutorial_spec_resolves_references_and_reports_legacy_keys(tmp_path):
    doc = yaml.safe_load(TUTORIAL.replace("DATA", str(tmp_path)))
    assert sorted(unknown_keys(doc)) == ["dataset.classify.output_shape", "train.val_interval"]
    r = resolve_refs(doc)
    assert r["train"]["results_dir"] == "/results/train" and r["evaluate"]["batch_size"] == 16
    spec = spec_from_tao(doc, source=tmp_path / "experiment_classify.yaml")
    assert spec.lights == ("LowAngleLight", "SolderLight", "UniformLight", "WhiteLight")
    assert spec.model.num_input == 4 and spec.dataset.classify.image_ext == ".jpg"
    assert spec.tao.train.validation_interval == 1 and spec.train.optim.lr == 0.00005
    assert spec.tao.experiment == doc  # kept verbatim, references and all


def test_tao_spec_errors_say_what_to_fix(tao_src):
    doc = yaml.safe_load(tao_src[1].read_text())
    with pytest.raises(SpecError, match="task is 'segment'.*classify only"):
        spec_from_tao({**doc, "task": "segment"})
    bad = copy.deepcopy(doc)
    bad["dataset"]["classify"]["image_height"] = 64
    with pytest.raises(SpecError, match="image_width 32 != image_height 64"):
        spec_from_tao(bad)
    bad = copy.deepcopy(doc)
    bad["train"]["optim"]["optim"] = "lamb"
    with pytest.raises(SpecError, match="optimizer"):
        spec_from_tao(bad)


def test_tao_search_space_names_tao_keys():
    space = load_search_space(TAO_SPACE_PATH)
    assert space.names == ["train.optim.lr", "train.optim.optimizer", "tao.train.optim.policy",
                           "train.optim.weight_decay", "train.optim.momentum"]
    custom = parse_search_space({"train.classify.loss": {"type": "categorical", "choices": ["ce", "contrastive"]},
                                 "model.classify.train_margin_euclid": {"type": "float", "low": 1.0, "high": 4.0}})
    assert custom.names == ["tao.train.classify.loss", "tao.model.classify.train_margin_euclid"]
    with pytest.raises(SpecError, match="may not be swept"):
        parse_search_space({"dataset.classify.batch_size": {"type": "int", "low": 4, "high": 64}})
    with pytest.raises(SpecError, match="not a valid value"):
        parse_search_space({"train.optim.policy": {"type": "categorical", "choices": ["cosine"]}})


def test_tao_spec_fixture_is_a_valid_experiment(tao_src):
    doc = experiment(tao_src[0], tao_src[0] / "r")
    assert unknown_keys(doc) == []


# -- TAO's own limits (nvidia_tao_pytorch/cv/visual_changenet/classification/models/cn_pl_model.py) --------
_OK = {"policy": "linear", "num_epochs": 2, "loss": "contrastive", "difference_module": "euclidean",
       "cls_weight": [1.0, 10.0], "num_classes": 2}


@pytest.mark.parametrize("change, found", [
    ({"policy": "step", "num_epochs": 2}, "'step' needs train.num_epochs >= 3 .*step_size = num_epochs // 3 = 0"),
    ({"loss": "contrastive", "difference_module": "learnable"}, "'contrastive' needs .*'euclidean'"),
    ({"loss": "ce", "difference_module": "euclidean"}, "'ce' needs .*'learnable'"),
    ({"loss": "ce", "difference_module": "learnable", "cls_weight": [1.0]}, "1 value.* for 2 classes"),
])
def test_tao_constraints_each_refuses_what_tao_refuses(change, found):
    from deftpipe.tao._spec import tao_constraints

    assert tao_constraints(**_OK) == []
    assert tao_constraints(**{**_OK, "policy": "step", "num_epochs": 3}) == []  # step_size 1: TAO accepts
    assert tao_constraints(**{**_OK, "loss": "ce", "difference_module": "learnable"}) == []
    problems = tao_constraints(**{**_OK, **change})
    assert len(problems) == 1 and re.search(found, problems[0])


def test_tao_step_policy_below_three_epochs_never_reaches_a_job(tao_src, tmp_path):
    spec = load_spec(tao_src[1])
    spec.tao.train.optim.policy = "step"
    spec.train.num_epochs = 2
    with pytest.raises(SpecError, match="TAO cannot run this spec: .*'step' needs train.num_epochs >= 3"):
        tao_experiment(spec, results_dir=tmp_path)
    spec.train.num_epochs = 3
    assert tao_experiment(spec, results_dir=tmp_path)["train"]["optim"]["policy"] == "step"


def test_tao_spec_without_a_seed_keeps_taos_default(tao_src, tmp_path):
    doc = experiment(tao_src[0], tmp_path)
    del doc["train"]["seed"]
    spec = spec_from_tao(doc)
    assert "seed" not in tao_experiment(spec, results_dir=tmp_path)["train"]  # TAO's ExperimentConfig default
    spec.train.seed = 5  # e.g. a sweep's fresh-seed re-run chose one
    assert tao_experiment(spec, results_dir=tmp_path)["train"]["seed"] == 5
    assert tao_experiment(spec_from_tao(experiment(tao_src[0], tmp_path)), results_dir=tmp_path)["train"]["seed"] == 7


def test_tao_preflight_blocks_step_with_short_epoch_budgets(tao_src, tmp_path):
    from typer.testing import CliRunner

    from deftpipe.cli import app
    from deftpipe.pipeline import preflight

    src, spec = tao_src
    ws = tmp_path / "ws"
    res = CliRunner().invoke(app, ["init", "--from-tao", str(spec), str(ws), "--kpi-csv", str(src / SPLIT_CSVS["kpi"]),
                                   "--pool-csv", str(src / SPLIT_CSVS["pool"])])
    assert res.exit_code == 0, res.output
    assert not [b for b in preflight(ws, measure=False)["blockers"] if "TAO" in b]  # init pins 3 epochs
    cfg = yaml.safe_load((ws / "pipeline.yaml").read_text())
    cfg["automl"]["phase3"]["num_epochs"] = 2
    (ws / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    bad = [b for b in preflight(ws, measure=False)["blockers"] if "StepLR" in b]
    assert len(bad) == 1 and "automl.phase3.num_epochs = 2" in bad[0] and "phase1" not in bad[0]
