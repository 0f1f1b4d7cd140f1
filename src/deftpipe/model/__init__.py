"""The model part: adapter interface + the built-in ChangeNet-style siamese classifier."""

from deftpipe.model._adapter import EpochCallback, ModelAdapter, TrainResult, get_adapter

__all__ = ["EpochCallback", "ModelAdapter", "TrainResult", "get_adapter"]
