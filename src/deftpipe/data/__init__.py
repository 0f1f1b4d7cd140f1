"""Data layer: CSV contract, validation, leakage check, image cache, synthetic + DeepPCB workspaces."""

from deftpipe.data._cache import clear_memo, is_cached, load_image, load_pairs
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
from deftpipe.data._deeppcb import import_deeppcb
from deftpipe.data._layout import layout_for, resolve_layout, workspace_input_size
from deftpipe.data._leakage import LeakReport, PairLeak, content_hashes, find_leaks
from deftpipe.data._open import open_image
from deftpipe.data._stats import dataset_stats, stats_table, workspace_table
from deftpipe.data._synthetic import SIZES as SYNTHETIC_SIZES
from deftpipe.data._synthetic import make_synthetic_workspace
from deftpipe.data._validate import validate_dataset
from deftpipe.data._workspace import SPLIT_FILES, build_workspace

__all__ = [
    "DEFECT_CLASSES",
    "IDENTITY_COLUMNS",
    "PASS",
    "REQUIRED_COLUMNS",
    "SPLIT_FILES",
    "SYNTHETIC_SIZES",
    "ImageLayout",
    "LeakReport",
    "PairLeak",
    "build_workspace",
    "clear_memo",
    "content_hashes",
    "dataset_stats",
    "find_leaks",
    "identity_keys",
    "import_deeppcb",
    "is_defect",
    "load_image",
    "is_cached",
    "load_pairs",
    "make_synthetic_workspace",
    "normalize_label",
    "open_image",
    "read_dataset",
    "layout_for",
    "resolve_layout",
    "stats_table",
    "validate_dataset",
    "workspace_input_size",
    "workspace_table",
    "write_dataset",
]
