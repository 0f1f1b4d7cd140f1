"""The model part: adapter interface + the built-in ChangeNet-style siamese classifier.

``TorchAdapter``, ``CommandAdapter`` and ``TaoAdapter`` are imported lazily so that importing this package (as
automl/ and deft/ do) does not import torch.
"""

from deftpipe.model._adapter import EpochCallback, ModelAdapter, TrainResult, get_adapter

__all__ = ["CommandAdapter", "EpochCallback", "ModelAdapter", "TaoAdapter", "TorchAdapter", "TrainResult",
           "get_adapter"]


def __getattr__(name: str):
    if name == "TorchAdapter":
        from deftpipe.model._torch_adapter import TorchAdapter

        return TorchAdapter
    if name == "CommandAdapter":
        from deftpipe.model._command import CommandAdapter

        return CommandAdapter
    if name == "TaoAdapter":
        from deftpipe.model._tao_adapter import TaoAdapter

        return TaoAdapter
    raise AttributeError(f"module 'deftpipe.model' has no attribute {name!r}")
