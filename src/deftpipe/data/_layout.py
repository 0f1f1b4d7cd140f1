"""Find where a CSV's images are: explicit ``--images-dir`` or the enclosing workspace's settings.

The default for a CSV inside a workspace is the images dir of its ``pipeline.yaml`` (``data.images_dir``)
with the image extension and lighting names of the workspace's spec (``data.spec``).
"""

from __future__ import annotations

from pathlib import Path

from deftpipe.config import find_workspace, load_config
from deftpipe.data._csv import ImageLayout
from deftpipe.errors import DataError
from deftpipe.spec import Spec, load_spec


def _workspace_spec(start: str | Path):
    """(workspace or None, its spec or None) for the workspace enclosing ``start``."""
    ws = find_workspace(start)
    if ws is None:
        return None, None
    cfg = load_config(ws)
    spec_path = cfg.path(ws, cfg.data.spec)
    return ws, (load_spec(spec_path) if spec_path.is_file() else None)


def workspace_image_settings(start: str | Path) -> tuple[Path | None, str, tuple[str, ...]]:
    """(images dir, image_ext, lights) of the workspace enclosing ``start`` (None, defaults if none)."""
    ws, spec = _workspace_spec(start)
    spec = spec or Spec()
    if ws is None:
        return None, spec.dataset.classify.image_ext, spec.lights
    cfg = load_config(ws)
    return cfg.path(ws, cfg.data.images_dir), spec.dataset.classify.image_ext, spec.lights


def workspace_input_size(csv: str | Path) -> int | None:
    """The image side the workspace enclosing ``csv`` trains at (its spec's ``model.input_size``,
    built-in model only: an external trainer may take any size); None outside a workspace."""
    _, spec = _workspace_spec(Path(csv).resolve().parent)
    return spec.model.input_size if spec is not None and spec.adapter.kind == "torch" else None


def layout_for(spec, start: str | Path | None) -> ImageLayout:
    """The one image-root rule of every command: inside a workspace (the folder of ``pipeline.yaml``
    above ``start``), its ``data.images_dir``; outside any, the spec's ``dataset.classify.images_dir``.
    The spec always gives the image extension and the lighting names."""
    ext, lights = spec.dataset.classify.image_ext, spec.lights
    ws = find_workspace(start) if start is not None else None
    if ws is None:
        return ImageLayout.create(spec.images_dir, ext, lights)
    cfg = load_config(ws)
    return ImageLayout.create(cfg.path(ws, cfg.data.images_dir), ext, lights)


def resolve_layout(csv: str | Path, images_dir: str | Path | None = None) -> ImageLayout:
    """The :class:`ImageLayout` of ``csv``: ``images_dir`` if given, else its workspace's.

    Raises:
        DataError: no ``images_dir`` given and ``csv`` lies in no workspace, or the folder is missing.
    """
    found, ext, lights = workspace_image_settings(Path(csv).resolve().parent)
    if images_dir is None:
        if found is None:
            raise DataError(f"{csv} is not inside a deftpipe workspace (no pipeline.yaml above it), so "
                            "its images folder is unknown; pass --images-dir DIR")
        images_dir = found
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"images folder {images_dir} does not exist; pass the folder the CSV paths are "
                        "relative to with --images-dir DIR")
    return ImageLayout.create(images_dir, ext, lights)


__all__ = ["layout_for", "resolve_layout", "workspace_image_settings", "workspace_input_size"]
