"""Paths read from deftpipe's own files (``deft_state.json``, ``pipeline_state.json``,
``best_model.json``, …) are resolved in one place and must stay inside the run folder, its workspace
or a dataset file/folder that workspace's ``pipeline.yaml`` names. An edited or hostile file can
never lead a command to read, score or overwrite another file on the machine.

Every reader of such a file goes through :func:`read_run_json` (or calls :func:`check_stored_paths`
on what it parsed); ``tests/bad_input/test_stored_paths.py`` lists the readers by scanning the source,
so a new one cannot bypass the rule.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from deftpipe.config import CONFIG_NAME, find_workspace, load_config
from deftpipe.errors import StateError, clip

#: Fields whose value is a path deftpipe will read or write (any depth of the document).
PATH_FIELDS = frozenset({
    # deft_state.json artefacts (deft._state.ARTEFACT_FIELDS) and its config block
    "best_ckpt_path", "train_spec", "inference_csv", "metrics_json", "rca_gaps", "rca_summary", "rca_embeddings",
    "routing_json", "sdg_csv", "sdg_allocation", "mined_csv", "mining_report", "combined_training_csv",
    "provenance_csv", "merge_validation", "spec", "train_csv", "val_csv", "kpi_csv", "pool_csv", "holdout_csv",
    "images_dir", "workspace", "rows_csv", "embeddings_npy", "scores_npy",
    # pipeline_state.json, best_model.json, best_rec.json
    "checkpoint", "best_checkpoint", "warm_start_checkpoint", "best_rec_path", "kpi_inference_csv",
    "inference_spec", "spec_path", "details",
})


def run_folder(path: Path) -> Path:
    """The ``results/run_*`` folder holding ``path`` (a file in it or below), else its folder."""
    p = Path(path).resolve()
    for d in p.parents:
        if d.name.startswith("run_") and d.parent.name == "results":
            return d
    return p.parent


def allowed_roots(source: Path, data: Any = None) -> list[str]:
    """Real paths a file's paths may lie in: its run folder, the workspace and its dataset paths."""
    run = run_folder(source)
    ws = find_workspace(run)
    if ws is None and run.parent.name == "results":  # WS/results/run_*: WS by the layout (docs/contracts.md §2)
        ws = run.parent.parent
    if ws is None and isinstance(data, dict) and isinstance(data.get("workspace"), str):
        recorded = Path(data["workspace"])  # a run folder kept outside its workspace
        if (recorded / CONFIG_NAME).is_file():
            ws = recorded
    roots = [run]
    if ws is not None:
        roots.append(Path(ws))
        with contextlib.suppress(Exception):  # a broken pipeline.yaml: its own error comes elsewhere
            cfg = load_config(ws)
            roots += [cfg.path(ws, getattr(cfg.data, k)) for k in type(cfg.data).model_fields]
    return [os.path.realpath(r) for r in roots]


def inside(path: str | Path, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def check_stored_paths(data: Any, source: str | Path) -> Any:
    """Raise when a path field of ``data`` (parsed from ``source``) leads outside the allowed roots.

    Returns ``data`` unchanged. Relative paths are taken from ``source``'s folder.

    Raises:
        StateError: naming the file, the field and the path, and how to recover.
    """
    source = Path(source)
    roots: list[str] | None = None

    def walk(node: Any, where: str) -> None:
        nonlocal roots
        if isinstance(node, dict):
            for k, v in node.items():
                key = f"{where}.{k}" if where else str(k)
                if k in PATH_FIELDS and isinstance(v, str) and v and "://" not in v:
                    p = Path(v) if os.path.isabs(v) else source.parent / v
                    if roots is None:
                        roots = allowed_roots(source, data)
                    if not inside(p, roots):
                        raise StateError(f"{source}: {key} names {clip(v, 300)}, outside the run folder and its workspace "
                                         "(and the dataset paths its pipeline.yaml names); deftpipe never follows such a path — "
                                         "restore the file, or start a new run with `deftpipe run WS --new`")
                else:
                    walk(v, key)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(data, "")
    return data


def read_run_json(path: str | Path, *, missing: str | None = None) -> Any:
    """Parse ``path`` (a JSON file deftpipe wrote) and :func:`check_stored_paths` it.

    Args:
        missing: the message when the file does not exist (default: "<path> not found").

    Raises:
        StateError: missing, not JSON, or a path field outside the allowed roots.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError(missing or f"{path} not found") from None
    except (OSError, ValueError) as e:
        raise StateError(f"{path} cannot be read as JSON ({clip(e, 200)}); restore it or rerun to rewrite it") from None
    return check_stored_paths(data, path)


__all__ = ["PATH_FIELDS", "allowed_roots", "check_stored_paths", "inside", "read_run_json", "run_folder"]
