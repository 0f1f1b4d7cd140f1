"""The model part: adapter interface + the built-in ChangeNet-style siamese classifier.

``TorchAdapter``, ``CommandAdapter`` and the training helpers are imported lazily so that importing this
package (as automl/ and deft/ do) does not import torch. A second backend (``deftpipe.tao``) implements
the same interface in its own package and registers itself with :func:`register_backend`.
"""

from deftpipe.model._adapter import (
    EpochCallback,
    ModelAdapter,
    TrainResult,
    get_adapter,
    known_kinds,
    register_backend,
)

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CommandAdapter", "EpochCallback", "ModelAdapter",
           "TorchAdapter", "TrainResult", "get_adapter", "known_kinds", "register_backend", "train_model"]


def __getattr__(name: str):
    if name == "TorchAdapter":
        from deftpipe.model._torch_adapter import TorchAdapter

        return TorchAdapter
    if name == "CommandAdapter":
        from deftpipe.model._command import CommandAdapter

        return CommandAdapter
    if name == "train_model":  # the built-in training loop (the TAO stand-in trains with it)
        from deftpipe.model._train import train_model

        return train_model
    if name in ("CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"):
        from deftpipe.model import _checkpoint

        return _checkpoint.FORMAT if name == "CHECKPOINT_FORMAT" else _checkpoint.VERSION
    raise AttributeError(f"module 'deftpipe.model' has no attribute {name!r}")
