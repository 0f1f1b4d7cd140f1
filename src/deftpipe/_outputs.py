"""Outputs are checked before any work: no command writes over one of its own inputs, into a
workspace's dataset files (its split CSVs, spec, ``pipeline.yaml``, images), or over a folder where
it would write a file. One check, called by every command that takes ``--out``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from deftpipe.config import CONFIG_NAME, DataPaths, find_workspace, load_config
from deftpipe.errors import DataError


def _same(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def workspace_dataset_files(path: Path) -> tuple[Path | None, list[Path], Path | None]:
    """The workspace holding ``path`` (or None), its dataset files and its images folder."""
    ws = find_workspace(path.parent if not path.exists() else path)
    if ws is None:
        return None, [], None
    try:
        data = load_config(ws).data
    except Exception:  # noqa: BLE001 - a broken pipeline.yaml still protects the default layout
        data = DataPaths()
    files = [ws / CONFIG_NAME] + [(ws / getattr(data, k)).resolve() for k in
                                  ("spec", "train_csv", "val_csv", "kpi_csv", "pool_csv", "holdout_csv")]
    return ws, files, (ws / data.images_dir).resolve()


def check_output(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (), flag: str = "--out",
                 folder: bool = False) -> Path:
    """Refuse ``out`` before any work when it would overwrite an input or a workspace's dataset files.

    Args:
        out: the file (or, with ``folder``, the folder) the command will write.
        inputs: the command's input files and folders.
        flag: the option named in the message.
        folder: ``out`` is a folder the command writes into (else a file).

    Raises:
        DataError: ``out`` is one of ``inputs`` or inside one of the input folders, a dataset file or
            the images folder of a workspace, or (a file) an existing folder.
    """
    out = Path(out)
    for given in filter(None, inputs):
        src = Path(given)
        if _same(out, src) or (src.is_dir() and out.resolve().is_relative_to(src.resolve())):
            raise DataError(f"{flag} {out} is also an input of this command ({src}); it would be overwritten — "
                            f"write to another path")
    if not folder and out.is_dir():
        raise DataError(f"{flag} {out} is a folder; give the path of a file to write (e.g. {out / 'out.csv'})")
    ws, files, images = workspace_dataset_files(out)
    if ws is not None:
        target = out.resolve()
        if any(_same(out, f) for f in files) or (folder and any(f.is_relative_to(target) for f in files)):
            raise DataError(f"{flag} {out} would overwrite the dataset files of workspace {ws}; write outside its "
                            "dataset files (e.g. under its results/ folder)")
        if images is not None and target.is_relative_to(images):
            raise DataError(f"{flag} {out} is inside the images folder {images} of workspace {ws}; write elsewhere")
    return out


__all__ = ["check_output", "workspace_dataset_files"]
