"""The model spec (docs/contracts.md §4): a TAO-like YAML file validated by Pydantic.

Sections: ``model`` (architecture), ``dataset.classify`` (where images live), ``train`` (epochs,
batch size, optimiser, augmentation, warm start, seed) and ``adapter`` (the built-in PyTorch model
or an external trainer driven by argv templates). Unknown keys and out-of-range values are errors.

Relative paths inside a spec file (``images_dir``, ``pretrained_model_path``) are resolved against
the folder of the spec file when it is loaded, so a spec can be moved together with its workspace;
:func:`dump_spec` always writes absolute paths.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from deftpipe._fs import atomic_write_text
from deftpipe._tao_schema import TaoSection, TaoSettings
from deftpipe._yaml import load_yaml_file
from deftpipe.errors import SpecError, clip

SPEC_VERSION = 1


MAX_SEED = 2**32 - 1  # numpy's seed range


class StrictSection(BaseModel):
    """Base of every settings section (spec and ``pipeline.yaml``): unknown keys, NaN/inf and a
    true/false where a number is expected are errors (Pydantic would read ``true`` as 1 epoch)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, bool) and info.field_name in cls.model_fields:
            ann = cls.model_fields[info.field_name].annotation
            if ann is not bool and bool not in typing.get_args(ann):
                raise ValueError("expected a number or text, not true/false")
        return v


class _Strict(StrictSection):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSection(_Strict):
    backbone: Literal["cnn"] = "cnn"  # shared siamese CNN encoder
    width: int = Field(16, ge=4, le=512)  # channels of the first conv block (doubles per stage)
    depth: int = Field(4, ge=2, le=8)  # number of conv stages (each halves the resolution)
    # how golden and test are compared: pooled |a-b| / concat, multi-scale feature-map difference
    # (ChangeNet-like), the same tolerant to misregistration, or early fusion of
    # (golden, test, |test-golden|) pixels (see docs/model.md)
    fusion: Literal["late_absdiff", "late_concat", "multiscale", "multiscale_tolerant", "multiscale_conv",
                    "early_diff"] = "multiscale"
    shift_tolerance_px: int = Field(8, ge=0, le=64)  # misregistration multiscale_tolerant forgives (px)
    input_size: int = Field(64, ge=16, le=1024)  # image side in px; other sizes are an error
    # k > 1: the image is k times the window; the model sees its centre 1/k at full resolution and
    # the whole image downsampled k times, each through its own encoder (docs/model.md)
    context: int = Field(1, ge=1, le=4)
    flip_tta: bool = False  # score = mean P(defect) over the four flips of the pair (4x inference)
    # each stage max-pools right after its conv, before BN and ReLU: the same weights, a quarter of
    # the normalisation work (docs/model.md, "Speed")
    pool_first: bool = False
    num_input: int = Field(1, ge=1, le=8)  # lighting channels per image (len of input_map)
    num_classes: int = Field(2, ge=2, le=64)  # 2 = binary PASS vs defect; >2 = multi-class
    classes: list[str] | None = None  # class names for multi-class, PASS first
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # dropout before the MLP head
    head_hidden: int = Field(64, ge=4, le=4096)  # hidden units of the MLP head


class ClassifySection(_Strict):
    images_dir: str = "../images"  # root of the image tree the CSV paths are relative to
    image_ext: str = ".png"  # file extension of every image
    # lighting name -> channel index; file = {object_name}_{light}{image_ext}; empty = no suffix
    input_map: dict[str, int] = Field(default_factory=dict)
    train_csv: str | None = None
    val_csv: str | None = None
    test_csv: str | None = None

    @field_validator("image_ext")
    @classmethod
    def _dot(cls, v: str) -> str:
        return v if v.startswith(".") else "." + v


class DatasetSection(_Strict):
    classify: ClassifySection = Field(default_factory=ClassifySection)


class OptimSection(_Strict):
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0, le=10.0)  # peak learning rate
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD momentum / Adam beta1
    beta2: float = Field(0.999, gt=0.0, lt=1.0)  # Adam beta2
    scheduler: Literal["none", "cosine", "step"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0, le=100.0)  # linear warm-up length in epochs


class AugmentSection(_Strict):
    flip: bool = True  # same random h/v flip on golden and test
    rotate90: bool = True  # same random 90-degree rotation on golden and test
    shift_px: int = Field(0, ge=0, le=64)  # independent shift of the test image (misregistration); 0 won on DeepPCB
    brightness: float = Field(0.1, ge=0.0, le=1.0)  # independent brightness jitter of the test image
    noise: float = Field(0.02, ge=0.0, le=1.0)  # gaussian pixel noise (std, in [0,1] units)
    # share of pixels moved by one pixel (to their 3x3 max or min; only edge pixels change),
    # independently on golden and test: edge jaggies and line-width slivers that are not defects; 0 = off
    edge_jitter: float = Field(0.0, ge=0.0, le=1.0)


class TrainSection(_Strict):
    num_epochs: int = Field(5, ge=1, le=10000)
    batch_size: int = Field(32, ge=1, le=65536)
    seed: int = Field(42, ge=0, le=MAX_SEED)  # recorded with every result; numpy takes 0..2**32-1
    optim: OptimSection = Field(default_factory=OptimSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    # class imbalance: weight positives in the loss, oversample defects, or nothing
    class_balance: Literal["pos_weight", "sampler", "none"] = "pos_weight"
    # focal loss: each row's loss x (1 - p_true) ** focal_gamma, so hard rows carry the gradient; 0 = plain
    focal_gamma: float = Field(0.0, ge=0.0, le=10.0)
    pretrained_model_path: str | None = None  # warm-start weights (not the optimiser)
    # rows the DEFT loop added (CSV column source = sdg / mining_pool) are drawn this many times as
    # often as the others (sampling with replacement); 1 = plain epochs. Set by deft.added_rows_weight
    added_rows_weight: float = Field(1.0, ge=1.0, le=100.0)
    num_threads: int = Field(0, ge=0, le=1024)  # torch intra-op threads; 0 = all cores
    # arithmetic of the convolutions: fp32, bf16 (autocast; the head and the loss stay fp32), or auto =
    # bf16 where the device computes it natively (CPU with AMX or AVX512-BF16, a CUDA GPU with bf16),
    # else fp32. The precision used is recorded in metrics.json (docs/model.md, "Speed")
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    keep_checkpoints: int = Field(1, ge=1, le=1000)  # epoch checkpoints kept besides the best


class AdapterSection(_Strict):
    kind: Literal["torch", "command", "tao"] = "torch"
    # for kind=command: argv templates; placeholders {spec} {train_csv} {val_csv} {out_dir}
    # {pretrained} {checkpoint} {csv} {out_csv} {out_npy} {epochs}
    train: list[str] | None = None
    evaluate: list[str] | None = None
    infer: list[str] | None = None
    embed: list[str] | None = None
    timeout_s: float | None = None
    tao: TaoSettings | None = None  # for kind=tao: platform and job settings (docs/tao.md)


class Spec(_Strict):
    model: ModelSection = Field(default_factory=ModelSection)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    train: TrainSection = Field(default_factory=TrainSection)
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    tao: TaoSection | None = None  # the adopted TAO classify spec (adapter.kind: tao; docs/tao.md)

    @property
    def images_dir(self) -> Path:
        return Path(self.dataset.classify.images_dir)

    @property
    def lights(self) -> tuple[str, ...]:
        m = self.dataset.classify.input_map
        return tuple(sorted(m, key=lambda k: m[k]))


def describe_validation_error(err: ValidationError) -> str:
    """Pydantic errors as one line: "unknown key 'a.b'; 'c.d': <msg> (got <value>)"."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        else:
            parts.append(f"'{loc}': {e['msg']} (got {clip(repr(e.get('input')), 80)})")
    return "; ".join(parts)


def _format_validation_error(err: ValidationError, where: str) -> str:
    return (f"invalid spec {where}: {describe_validation_error(err)}"
            " — fix the value or remove the key (see docs/spec.md)")


def _resolve_paths(spec: Spec, base: Path) -> Spec:
    c = spec.dataset.classify
    c.images_dir = str((base / c.images_dir).resolve())
    for k in ("train_csv", "val_csv", "test_csv"):
        v = getattr(c, k)
        if v:
            setattr(c, k, str((base / v).resolve()))
    if spec.train.pretrained_model_path:
        spec.train.pretrained_model_path = str((base / spec.train.pretrained_model_path).resolve())
    return spec


def spec_from_dict(data: dict[str, Any] | None, *, base_dir: str | Path | None = None, where: str = "") -> Spec:
    """Validate a spec mapping. Relative paths resolve against ``base_dir`` (default: cwd)."""
    try:
        spec = Spec.model_validate(data or {})
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, where or "(mapping)")) from None
    return _resolve_paths(spec, Path(base_dir) if base_dir else Path.cwd())


#: other spec formats ``load_spec`` translates: (accepts(document), translate(document, source=path));
#: deftpipe.tao registers TAO's classify spec when imported (this module never imports it)
_READERS: list[tuple[Callable[[dict[str, Any]], bool], Callable[..., Spec]]] = []


def register_reader(accepts: Callable[[dict[str, Any]], bool], translate: Callable[..., Spec]) -> None:
    """Let :func:`load_spec` read another tool's spec format: ``translate(doc, source=path)`` for every
    document ``accepts(doc)`` says is one."""
    if (accepts, translate) not in _READERS:
        _READERS.append((accepts, translate))


def load_spec(path: str | Path) -> Spec:
    """Load and validate a YAML spec (``deftpipe._yaml``: safe, bounded).

    Raises:
        SpecError: missing or empty file, YAML syntax error, unknown key or out-of-range value.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist; pass an existing YAML with --spec")
    data = load_yaml_file(path, "spec file")
    if not isinstance(data, dict):
        raise SpecError(f"spec file {path} must hold a mapping at top level, got {type(data).__name__}")
    for accepts, translate in _READERS:  # e.g. a TAO Visual ChangeNet classify spec (deftpipe.tao)
        if accepts(data):
            return translate(data, source=path)
    return spec_from_dict(data, base_dir=path.parent, where=str(path))


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def dump_spec(spec: Spec | dict[str, Any], path: str | Path) -> Path:
    """Write a spec as YAML atomically (paths are absolute after loading)."""
    data = spec_to_dict(spec) if isinstance(spec, Spec) else spec
    return atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in recursively (override wins; inputs untouched)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set ``data['a']['b']['c'] = value`` for ``dotted == 'a.b.c'`` (in place; returns data)."""
    node = data
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return data


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{'train.optim.lr': 0.1}`` -> ``{'train': {'optim': {'lr': 0.1}}}``."""
    out: dict[str, Any] = {}
    for k, v in flat.items():
        set_dotted(out, k, v)
    return out


__all__ = [
    "MAX_SEED",
    "SPEC_VERSION",
    "StrictSection",
    "Spec",
    "deep_merge",
    "describe_validation_error",
    "dump_spec",
    "load_spec",
    "register_reader",
    "set_dotted",
    "spec_from_dict",
    "spec_to_dict",
    "unflatten",
]
