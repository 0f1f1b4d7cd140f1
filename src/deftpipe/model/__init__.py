"""The model part: adapter interface + the built-in ChangeNet-style siamese classifier.

The factory :func:`get_adapter` lives here, beside the adapters, so the interface module
(``_adapter``) imports none of its implementations. ``TorchAdapter`` and the training helpers are
imported only when used, so that importing this package (as automl/ and deft/ do) does not import
torch. A second backend (``deftpipe.tao``) implements the same interface in its own package and
registers itself with :func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from deftpipe.errors import SpecError
from deftpipe.model._adapter import EpochCallback, ModelAdapter, TrainResult
from deftpipe.model._checkpoint_names import FORMAT as CHECKPOINT_FORMAT
from deftpipe.model._checkpoint_names import VERSION as CHECKPOINT_VERSION
from deftpipe.model._command import PLACEHOLDERS as COMMAND_PLACEHOLDERS
from deftpipe.model._command import CommandAdapter
from deftpipe.spec import load_spec

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "COMMAND_PLACEHOLDERS", "CommandAdapter", "EpochCallback",
           "ModelAdapter", "TorchAdapter", "TrainResult", "device_problem", "get_adapter", "known_kinds",
           "register_backend", "scoring_passes", "train_model", "trains_on_cpu"]

#: backends outside this package, by ``adapter.kind`` (``register_backend``); the built-in ones are below
_BACKENDS: dict[str, Callable[..., ModelAdapter]] = {}


def register_backend(kind: str, factory: Callable[..., ModelAdapter]) -> None:
    """Make ``get_adapter`` build ``factory(spec, progress=...)`` for specs with ``adapter.kind == kind``.

    A second backend (``deftpipe.tao``) registers itself when imported, so this package never imports
    it: the model part stays below the backends that implement its interface.
    """
    _BACKENDS[kind] = factory


def known_kinds() -> list[str]:
    return sorted({"torch", "command", *_BACKENDS})


def get_adapter(spec: Any = None, *, progress: Any = None, images_dir: str | Path | None = None) -> ModelAdapter:
    """The adapter a spec asks for (``adapter.kind``: ``torch`` (default), ``command`` or ``tao``).

    ``progress`` (optional) receives training progress: ``start(epochs, steps_per_epoch)``,
    ``batch(epoch, step_in_epoch, loss)``, ``epoch_end(epoch, metrics)``, ``close()``.
    ``images_dir`` (built-in model): the image root of the CSVs it evaluates, infers or embeds.
    """
    kind = "torch"
    if spec is not None and not isinstance(spec, (str, Path)):
        kind = spec["adapter"]["kind"] if isinstance(spec, dict) and "adapter" in spec else getattr(
            getattr(spec, "adapter", None), "kind", "torch")
    elif isinstance(spec, (str, Path)):
        kind = load_spec(spec).adapter.kind
    if kind in _BACKENDS:  # a second backend that registered itself (deftpipe.tao: kind "tao")
        return _BACKENDS[kind](spec, progress=progress)
    if kind == "command":
        return CommandAdapter(spec, progress=progress)
    if kind != "torch":
        raise SpecError(f"adapter.kind {kind!r} has no backend loaded (known: {', '.join(known_kinds())}); "
                        f"'tao' needs deftpipe's TAO package: import deftpipe.tao (the deftpipe command does)")
    from deftpipe.model._torch_adapter import TorchAdapter  # late: imports torch

    return TorchAdapter(progress=progress, images_dir=images_dir)


def __getattr__(name: str):
    """The torch-backed names, imported on first use (importing them imports torch)."""
    if name == "TorchAdapter":
        from deftpipe.model._torch_adapter import TorchAdapter  # late: imports torch

        return TorchAdapter
    if name == "train_model":  # the built-in training loop (the TAO stand-in trains with it)
        from deftpipe.model._train import train_model  # late: imports torch

        return train_model
    if name == "trains_on_cpu":  # the sweeps' local_workers: auto
        from deftpipe.model._train import trains_on_cpu  # late: imports torch
        return trains_on_cpu
    if name == "scoring_passes":  # the cost model's price of an inference job
        from deftpipe.model._train import scoring_passes  # late: imports torch
        return scoring_passes
    if name == "device_problem":  # the pre-flight's device check
        from deftpipe.model._train import device_problem  # late: imports torch

        return device_problem
    raise AttributeError(f"module 'deftpipe.model' has no attribute {name!r}")
