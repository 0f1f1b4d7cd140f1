"""TAO Visual ChangeNet classify spec <-> deftpipe spec, both ways.

* :func:`spec_from_tao`: a TAO ``experiment.yaml`` (``task: classify``) becomes a deftpipe
  :class:`~deftpipe.spec.Spec` with ``adapter.kind: tao``. Keys both tools know map to deftpipe's
  sections (:data:`SHARED_KEYS`); TAO-only keys that matter to a sweep go to the typed ``tao``
  section; the whole TAO document is kept verbatim in ``tao.experiment``.
* :func:`tao_experiment`: the TAO document a job runs — the verbatim one with deftpipe's current
  values (swept hyper-parameters, pinned budget, warm start, the CSVs of this job) written back under
  their TAO keys.

The TAO key list is pinned in ``changenet_keys.json`` (taken from nvidia-tao-core's
``ExperimentConfig``; the file says which version). Keys outside it are kept and reported, never
dropped: TAO's own tutorial specs carry a few (``train.val_interval``, ``dataset.classify.output_shape``).
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from deftpipe.errors import SpecError

KEYS_FILE = Path(__file__).with_name("changenet_keys.json")

#: TAO key -> deftpipe spec key, for the keys both describe. A search space for the TAO backend may
#: name either spelling; every other TAO key a sweep may tune lives under ``tao.`` (same path).
SHARED_KEYS = {
    "train.num_epochs": "train.num_epochs",
    "train.seed": "train.seed",
    "train.pretrained_model_path": "train.pretrained_model_path",
    "train.optim.lr": "train.optim.lr",
    "train.optim.optim": "train.optim.optimizer",
    "train.optim.weight_decay": "train.optim.weight_decay",
    "train.optim.momentum": "train.optim.momentum",
    "dataset.classify.batch_size": "train.batch_size",
    "dataset.classify.image_ext": "dataset.classify.image_ext",
    "dataset.classify.num_input": "model.num_input",
    "dataset.classify.num_classes": "model.num_classes",
}
#: TAO-only keys mirrored, typed, in the spec's ``tao`` section (so a sweep can tune them).
TAO_SECTION_KEYS = (
    "model.backbone.type", "model.classify.difference_module", "model.classify.train_margin_euclid",
    "model.classify.eval_margin", "model.classify.learnable_difference_modules", "train.optim.policy",
    "train.classify.loss", "train.classify.cls_weight", "train.checkpoint_interval", "train.validation_interval",
)
#: TAO's LR policy -> the closest schedule of deftpipe's own trainer (used by the stand-in trainer).
POLICY_TO_SCHEDULER = {"linear": "cosine", "step": "step"}
_LEGACY = {"train.validation_interval": "train.val_interval"}  # older TAO spelling, still in the tutorials
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")


@cache
def pinned_keys() -> dict[str, list[str] | None]:
    """Every leaf key of TAO's Visual ChangeNet ``ExperimentConfig`` -> its valid options (or None)."""
    return json.loads(KEYS_FILE.read_text(encoding="utf-8"))["keys"]


def search_key(key: str) -> str:
    """The deftpipe spec key a TAO-named search-space key tunes (other keys are returned as they are)."""
    if key in SHARED_KEYS:
        return SHARED_KEYS[key]
    return "tao." + key if key in TAO_SECTION_KEYS else key


def is_tao_document(data: Any) -> bool:
    """True for a TAO Visual ChangeNet spec (``task``/``encryption_key`` or TAO's dataset layout)."""
    if not isinstance(data, dict):
        return False
    ds = (data.get("dataset") or {}).get("classify") if isinstance(data.get("dataset"), dict) else None
    return "task" in data or "encryption_key" in data or (isinstance(ds, dict) and "train_dataset" in ds)


def get_dotted(data: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = data
    for k in dotted.split("."):
        if not isinstance(node, dict) or k not in node:
            return default
        node = node[k]
    return node


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def leaf_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key not in ("dataset.classify.input_map", "dataset.classify.grid_map"):
            out += leaf_keys(v, key + ".")
        else:
            out.append(key)
    return out


def unknown_keys(doc: dict[str, Any]) -> list[str]:
    """Keys of a TAO document that nvidia-tao-core's ExperimentConfig (pinned) does not have."""
    known = pinned_keys()
    return [k for k in leaf_keys(doc) if k not in known]


def resolve_refs(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy with OmegaConf-style ``${a.b}`` references replaced by their values (TAO's specs use
    ``${results_dir}/train`` and ``${dataset.classify.batch_size}``). Unknown references stay."""
    out = copy.deepcopy(doc)

    def sub(value: Any, depth: int = 0) -> Any:
        if isinstance(value, dict):
            return {k: sub(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, depth) for v in value]
        if not isinstance(value, str) or depth > 8:
            return value
        whole = _REF.fullmatch(value.strip())
        if whole:
            target = get_dotted(out, whole.group(1), value)
            return value if target is value else sub(target, depth + 1)
        return _REF.sub(lambda m: str(get_dotted(out, m.group(1), m.group(0))), value)

    return sub(out)


def _one_images_dir(doc: dict[str, Any], where: str) -> str | None:
    dirs = {get_dotted(doc, f"dataset.classify.{s}.images_dir") for s in
            ("train_dataset", "validation_dataset", "test_dataset", "infer_dataset")} - {None, ""}
    if len({str(Path(d)) for d in dirs}) > 1:
        raise SpecError(f"TAO spec {where}: the datasets use different images_dir ({', '.join(sorted(dirs))}); "
                        "deftpipe needs one image root — move the images under one folder or use one images_dir")
    return dirs.pop() if dirs else None


def spec_from_tao(doc: dict[str, Any], *, source: str | Path | None = None, settings: Any = None):
    """Translate a TAO classify spec into a deftpipe :class:`~deftpipe.spec.Spec` (``adapter.kind: tao``).

    Args:
        doc: the TAO document (``yaml.safe_load`` of ``experiment.yaml``).
        source: its file; relative paths resolve against its folder.
        settings: :class:`~deftpipe._tao_schema.TaoSettings` (or a mapping); None = defaults.
    Raises:
        SpecError: not a classify spec, several image roots, non-square images, or invalid values.
    """
    from deftpipe.spec import spec_from_dict

    where = str(source) if source else "(mapping)"
    task = doc.get("task", "classify")
    if task != "classify":
        raise SpecError(f"TAO spec {where}: task is '{task}'; deftpipe drives Visual ChangeNet classify only "
                        "(task: classify)")
    r = resolve_refs(doc)
    w, h = get_dotted(r, "dataset.classify.image_width"), get_dotted(r, "dataset.classify.image_height")
    if w is not None and h is not None and w != h:
        raise SpecError(f"TAO spec {where}: image_width {w} != image_height {h}; deftpipe's metrics and "
                        "stand-in trainer use square pairs — crop or pad the images to a square")
    out: dict[str, Any] = {"model": {}, "dataset": {"classify": {}}, "train": {"optim": {}},
                           "adapter": {"kind": "tao", "tao": settings if settings is not None else {}},
                           "tao": {"source": str(Path(source).resolve()) if source else None,
                                   "experiment": copy.deepcopy(doc)}}
    for tao_key, spec_key in SHARED_KEYS.items():
        v = get_dotted(r, tao_key)
        if v is not None:
            _set(out, spec_key, v)
    if w is not None:
        out["model"]["input_size"] = int(w)
    c = out["dataset"]["classify"]
    images = _one_images_dir(r, where)
    if images:
        c["images_dir"] = images
    c["input_map"] = get_dotted(r, "dataset.classify.input_map") or {}
    c.setdefault("image_ext", ".jpg")  # ExperimentConfig's default_value
    for split, key in (("train_dataset", "train_csv"), ("validation_dataset", "val_csv"), ("test_dataset", "test_csv")):
        v = get_dotted(r, f"dataset.classify.{split}.csv_path")
        if v:
            c[key] = v
    for key in TAO_SECTION_KEYS:
        v = get_dotted(r, key)
        if v is None and key in _LEGACY:
            v = get_dotted(r, _LEGACY[key])
        if v is not None:
            _set(out["tao"], key, v)
    policy = get_dotted(r, "train.optim.policy")
    if policy in POLICY_TO_SCHEDULER:
        out["train"]["optim"]["scheduler"] = POLICY_TO_SCHEDULER[policy]
    base = Path(source).resolve().parent if source else None
    return spec_from_dict(out, base_dir=base, where=f"{where} (translated from TAO)")


DEFTPIPE_DEFAULT_SEED = 42  # deftpipe's Spec.train.seed default (spec.py)


def tao_constraints(*, policy: str, num_epochs: int, loss: str, difference_module: str,
                    cls_weight: list[float], num_classes: int) -> list[str]:
    """What TAO's Visual ChangeNet classify refuses or crashes on, one message each ([] = fine).

    Read from nvidia_tao_pytorch/cv/visual_changenet/classification/models/cn_pl_model.py
    (``ChangeNetPlModel``): ``configure_optimizers`` builds ``StepLR(step_size=max_epochs // 3)`` for
    ``policy: step`` (0 below 3 epochs: PyTorch divides by it at the first scheduler step);
    ``_build_criterion`` asserts contrastive <-> euclidean, ce <-> learnable, and one ``cls_weight``
    per class for ce.
    """
    out = []
    if policy == "step" and num_epochs // 3 < 1:
        out.append(f"train.optim.policy 'step' needs train.num_epochs >= 3 (TAO's StepLR step_size = "
                   f"num_epochs // 3 = {num_epochs // 3}); use policy 'linear' or pin 3+ epochs")
    if loss == "contrastive" and difference_module != "euclidean":
        out.append("train.classify.loss 'contrastive' needs model.classify.difference_module 'euclidean' (TAO asserts it)")
    if loss == "ce" and difference_module != "learnable":
        out.append("train.classify.loss 'ce' needs model.classify.difference_module 'learnable' (TAO asserts it)")
    if loss == "ce" and len(cls_weight) != num_classes:
        out.append(f"train.classify.cls_weight has {len(cls_weight)} value(s) for {num_classes} classes; TAO's ce "
                   "loss needs one per class")
    return out


def spec_constraints(spec: Any, num_epochs: int | None = None) -> list[str]:
    """:func:`tao_constraints` of a TAO-backed spec (``num_epochs`` overrides the spec's)."""
    t = spec.tao
    if t is None:
        return []
    return tao_constraints(policy=t.train.optim.policy, num_epochs=num_epochs or spec.train.num_epochs,
                           loss=t.train.classify.loss, difference_module=t.model.classify.difference_module,
                           cls_weight=list(t.train.classify.cls_weight), num_classes=spec.model.num_classes)


def tao_experiment(spec: Any, *, results_dir: str | Path, train_csv: str | Path | None = None,
                   val_csv: str | Path | None = None, infer_csv: str | Path | None = None,
                   checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The TAO document one job runs: ``spec.tao.experiment`` with deftpipe's values written back.

    ``results_dir`` becomes TAO's ``results_dir``; each action writes under ``<results_dir>/<action>``.
    """
    from deftpipe._tao_schema import TaoSection
    from deftpipe.spec import spec_to_dict

    section = spec.tao or TaoSection()
    problems = spec_constraints(spec)
    if problems:  # TAO would refuse or crash on it inside the job: say so before launching one
        raise SpecError("TAO cannot run this spec: " + "; ".join(problems))
    doc = copy.deepcopy(section.experiment) or {}
    flat = spec_to_dict(spec)
    doc["task"] = "classify"
    doc["results_dir"] = str(results_dir)
    for action in ("train", "evaluate", "inference"):
        _set(doc, f"{action}.results_dir", str(Path(results_dir) / action))
    seed_given = get_dotted(section.experiment, "train.seed") is not None
    for tao_key, spec_key in SHARED_KEYS.items():
        value = get_dotted(flat, spec_key)
        if tao_key == "train.seed" and not seed_given and value == DEFTPIPE_DEFAULT_SEED:
            continue  # the TAO spec had no seed and nothing chose one: TAO keeps its own default
        _set(doc, tao_key, value)
    tao_flat = section.model_dump(mode="json")
    for key in TAO_SECTION_KEYS:
        _set(doc, key, get_dotted(tao_flat, key))
    c = spec.dataset.classify
    images = str(spec.images_dir)
    _set(doc, "dataset.classify.input_map", dict(c.input_map) or None)
    _set(doc, "dataset.classify.image_width", spec.model.input_size)
    _set(doc, "dataset.classify.image_height", spec.model.input_size)
    for split, csv in (("train_dataset", train_csv), ("validation_dataset", val_csv),
                       ("infer_dataset", infer_csv), ("test_dataset", infer_csv)):
        if csv is not None:
            _set(doc, f"dataset.classify.{split}", {"csv_path": str(Path(csv).resolve()), "images_dir": images})
    if checkpoint is not None:
        for action in ("evaluate", "inference"):
            _set(doc, f"{action}.checkpoint", str(checkpoint))
    return resolve_refs(doc)


__all__ = ["SHARED_KEYS", "TAO_SECTION_KEYS", "get_dotted", "is_tao_document", "pinned_keys", "resolve_refs",
           "search_key", "spec_constraints", "spec_from_tao", "tao_constraints", "tao_experiment", "unknown_keys"]
