"""Decode-once image cache.

Decoding PNG/JPEG every epoch wastes the CPU, so every image is decoded once into a uint8 ``.npy``
file keyed by (absolute path, file size, mtime); a changed file gets a new key and is decoded again.
Training, inference and embedding all go through :func:`load_pairs`.

Cache folder: ``$DEFTPIPE_CACHE_DIR`` if set, else ``<dataset root>/.deftpipe_cache/images`` (the
workspace, so the cache goes away with it), else ``~/.cache/deftpipe/images`` when that is not
writable.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from deftpipe._fs import atomic_path
from deftpipe.data._csv import ImageLayout
from deftpipe.errors import DataError

_MEMO: dict[str, np.ndarray] = {}  # in-process memo: key -> decoded image
_MEMO_MAX = 200_000


def cache_dir_for(layout: ImageLayout) -> Path:
    env = os.environ.get("DEFTPIPE_CACHE_DIR")
    if env:
        return Path(env)
    root = Path(layout.root or layout.images_dir)
    d = root / ".deftpipe_cache" / "images"
    try:
        d.mkdir(parents=True, exist_ok=True)
        return d
    except OSError:
        return Path.home() / ".cache" / "deftpipe" / "images"


def _key(path: Path, size: int, resize: bool) -> str:
    st = path.stat()
    raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}|{int(resize)}"
    return hashlib.sha1(raw.encode()).hexdigest()


def decode_image(path: Path, size: int | None = None, *, resize: bool = False) -> np.ndarray:
    """Decode one image to a 2-D uint8 array (grayscale: one channel per lighting file).

    Raises:
        DataError: unreadable file, more than one distinct colour channel, or a size other than
            ``size`` x ``size`` (unless ``resize``).
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA"):
                arr3 = np.asarray(im.convert("RGB"))
                if not (np.array_equal(arr3[..., 0], arr3[..., 1]) and np.array_equal(arr3[..., 0], arr3[..., 2])):
                    raise DataError(
                        f"image {path} has 3 colour channels; expected 1 grayscale channel per lighting "
                        "file (list each light in the spec's dataset.classify.input_map)"
                    )
                im2 = im.convert("L")
            else:
                im2 = im.convert("L")
            if size is not None and im2.size != (size, size):
                if not resize:
                    raise DataError(
                        f"image {path} is {im2.size[0]}x{im2.size[1]} but the spec expects "
                        f"{size}x{size} (model.input_size); fix model.input_size or re-crop the images"
                    )
                im2 = im2.resize((size, size), Image.BILINEAR)
            return np.asarray(im2, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"image {path} cannot be decoded ({err}); replace or remove the file") from None


def load_image(path: str | Path, size: int | None = None, *, resize: bool = False,
               cache_dir: Path | None = None) -> np.ndarray:
    """One image through the cache (memo → .npy on disk → decode)."""
    path = Path(path)
    try:
        key = _key(path, size or 0, resize)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    hit = _MEMO.get(key)
    if hit is not None:
        return hit
    arr = None
    npy = (cache_dir / key[:2] / f"{key}.npy") if cache_dir else None
    if npy is not None and npy.is_file():
        try:
            arr = np.load(npy, allow_pickle=False)
        except (OSError, ValueError):
            arr = None  # a damaged cache entry is simply rebuilt
    if arr is None:
        arr = decode_image(path, size, resize=resize)
        if npy is not None:
            try:
                with atomic_path(npy) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, arr, allow_pickle=False)
            except OSError:
                pass  # read-only cache: still correct, just slower next time
    if len(_MEMO) < _MEMO_MAX:
        _MEMO[key] = arr
    return arr


def clear_memo() -> None:
    """Forget in-process decoded images (the on-disk cache stays)."""
    _MEMO.clear()


def load_pairs(df: pd.DataFrame, layout: ImageLayout, size: int, *, resize: bool = False,
               use_cache: bool = True, num_threads: int | None = None) -> np.ndarray:
    """Decoded golden/test pairs of every row.

    Args:
        df: dataset rows (``input_path``, ``golden_path``, ``object_name``).
        layout: where the images are and which lighting files make the channels.
        size: expected image side in pixels (``model.input_size``).
        resize: resize other sizes instead of raising.
        use_cache: False decodes every file (for benchmarks).
    Returns:
        uint8 array of shape ``(N, 2, L, size, size)``; axis 1 is (golden, test), L = number of lights.
    Raises:
        DataError: a missing/undecodable image, a path escaping the dataset root, or a wrong size.
    """
    n_light = max(1, len(layout.lights))
    jobs: list[Path] = []
    for row in df[["input_path", "golden_path", "object_name"]].itertuples(index=False):
        r = {"input_path": row.input_path, "golden_path": row.golden_path, "object_name": row.object_name}
        test_files, golden_files = layout.row_files(r)
        for p in (*golden_files, *test_files):
            if layout.escapes(p):
                raise DataError(f"image path {p} escapes the dataset root {layout.root}; "
                                "CSV paths must stay inside the workspace/images folder")
        jobs.extend(golden_files)
        jobs.extend(test_files)
    cdir = cache_dir_for(layout) if use_cache else None

    def one(p: Path) -> np.ndarray:
        if not use_cache:
            return decode_image(p, size, resize=resize)
        return load_image(p, size, resize=resize, cache_dir=cdir)

    threads = num_threads or min(4, os.cpu_count() or 1)
    if len(jobs) > 64 and threads > 1:
        with ThreadPoolExecutor(threads) as ex:
            arrays = list(ex.map(one, jobs))
    else:
        arrays = [one(p) for p in jobs]
    out = np.empty((len(df), 2, n_light, size, size), dtype=np.uint8)
    if arrays:
        out.reshape(-1, size, size)[:] = np.stack(arrays)
    return out


__all__ = ["cache_dir_for", "clear_memo", "decode_image", "load_image", "load_pairs"]
