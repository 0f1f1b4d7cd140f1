"""Typed settings of the TAO backend (``adapter.kind: tao``), shared by the spec and ``pipeline.yaml``.

:class:`TaoSettings` says *where and how* TAO jobs run (platform, image, job store); :class:`TaoSection`
holds *what* TAO trains: the user's TAO Visual ChangeNet classify spec, kept verbatim, plus the
TAO-only hyper-parameters a sweep may tune, under their TAO key names (``tao.train.optim.policy`` is
TAO's ``train.optim.policy``). Keys both tools share (``train.optim.lr``, ``train.num_epochs``, …) live
in the deftpipe spec's own sections; see :mod:`deftpipe.tao._spec` for the mapping.

These are part of the spec's and the config's *schema* (``adapter.tao``, ``tao``), so they sit below
both, with no import of deftpipe at all; the TAO code that uses them (translation, jobs, adapter,
checks, adoption, stand-in) lives in :mod:`deftpipe.tao`, which is above the spec and imports it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PLATFORMS = ("virtualenv", "docker", "slurm", "kubernetes")
#: The TAO PyTorch container the SDK's own DockerSDK docstring launches Visual ChangeNet from.
DEFAULT_IMAGE = "nvcr.io/nvidia/tao/tao-toolkit:6.26.3-pyt"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaoSettings(_Strict):
    platform: Literal["virtualenv", "docker", "slurm", "kubernetes"] = "virtualenv"
    image: str = DEFAULT_IMAGE  # container image (docker, slurm, kubernetes)
    # virtualenv: the venv whose python runs the trainer (None = this interpreter's) and the script
    # that follows TAO's file contract (None = deftpipe's stand-in trainer, a built-in CNN: not TAO's model)
    venv: str | None = None
    script: str | None = None
    # the SDK's durable job store (SQLite) and job folders; None = the SDK default
    # ($TAO_SDK_STATE_DIR or ~/.tao_sdk). A resumed run re-attaches to its jobs through it.
    state_dir: str | None = None
    gpu_count: int = Field(1, ge=0, le=64)
    poll_s: float = Field(5.0, gt=0.0, le=3600.0)  # status polling interval
    timeout_s: float | None = Field(None, gt=0.0)  # give up on a job after this long (None = never)
    # docker: bind mounts [{host_path, container_path}]; mount the workspace and the images at the
    # same paths inside the container, since the TAO spec deftpipe writes uses host paths
    mounts: list[dict[str, str]] = Field(default_factory=list)
    shm_size: str | None = "16g"  # docker --shm-size (TAO's data loaders need more than Docker's 64 MB)
    partition: str | None = None  # slurm
    account: str | None = None  # slurm
    namespace: str | None = None  # kubernetes
    # mining needs an embedding per pair and TAO exports none for classify: deftpipe embeds the
    # pair itself (the downsampled golden/test difference image) and scores it with TAO's siamese_score
    mining_embedding: Literal["pair_difference"] = "pair_difference"


class TaoOptim(_Strict):
    policy: Literal["linear", "step"] = "linear"  # TAO train.optim.policy (LR schedule)


class TaoTrainClassify(_Strict):
    loss: Literal["ce", "contrastive"] = "contrastive"  # TAO train.classify.loss
    cls_weight: list[float] = Field(default_factory=lambda: [1.0, 10.0])  # TAO train.classify.cls_weight


class TaoTrain(_Strict):
    optim: TaoOptim = Field(default_factory=TaoOptim)
    classify: TaoTrainClassify = Field(default_factory=TaoTrainClassify)
    checkpoint_interval: int = Field(1, ge=1)
    validation_interval: int = Field(1, ge=1)


class TaoModelClassify(_Strict):
    difference_module: Literal["learnable", "euclidean"] = "euclidean"
    train_margin_euclid: float = Field(2.0, ge=1.0)
    eval_margin: float = Field(2.0, ge=0.0)  # TAO's decision threshold on siamese_score (euclidean)
    learnable_difference_modules: int = Field(4, ge=1, le=4)


class TaoBackbone(_Strict):
    type: str = "fan_small_12_p4_hybrid"


class TaoModel(_Strict):
    backbone: TaoBackbone = Field(default_factory=TaoBackbone)
    classify: TaoModelClassify = Field(default_factory=TaoModelClassify)


class TaoSection(_Strict):
    source: str | None = None  # the TAO spec file this was adopted from (never modified)
    experiment: dict[str, Any] = Field(default_factory=dict)  # that spec, verbatim
    model: TaoModel = Field(default_factory=TaoModel)
    train: TaoTrain = Field(default_factory=TaoTrain)




class AdapterChoice(_Strict):
    """``pipeline.yaml``'s ``adapter`` section: which backend the pipeline's phases run on."""

    kind: Literal["torch", "command", "tao"] = "torch"  # must match the spec's adapter.kind (pre-flight)
    tao: TaoSettings | None = None  # kind=tao: platform and job settings (the spec's adapter.tao agrees)


__all__ = ["DEFAULT_IMAGE", "PLATFORMS", "AdapterChoice", "TaoSection", "TaoSettings"]
