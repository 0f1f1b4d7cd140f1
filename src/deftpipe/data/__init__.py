"""Data layer: CSV contract, validation, leakage check, image cache, synthetic + DeepPCB workspaces."""

from deftpipe.data._cache import clear_memo, load_image, load_pairs
from deftpipe.data._csv import (
    DEFECT_CLASSES,
    IDENTITY_COLUMNS,
    PASS,
    REQUIRED_COLUMNS,
    ImageLayout,
    identity_keys,
    is_defect,
    normalize_label,
    read_dataset,
    write_dataset,
)

__all__ = [
    "DEFECT_CLASSES",
    "IDENTITY_COLUMNS",
    "PASS",
    "REQUIRED_COLUMNS",
    "ImageLayout",
    "clear_memo",
    "identity_keys",
    "load_image",
    "load_pairs",
    "is_defect",
    "normalize_label",
    "read_dataset",
    "write_dataset",
]
