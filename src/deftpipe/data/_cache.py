"""Decode-once image cache.

Decoding PNG/JPEG every epoch wastes the CPU, so a dataset's images are decoded once and stored as
ONE uint8 ``.npy`` array per dataset, keyed by every row's image files (absolute path, file size,
mtime) plus the image size: a later run on the same CSV is a single file read, and a changed,
added or removed image gives a new key (so the entry is rebuilt). Per-file ``.npy`` entries were
measured no faster than decoding 64x64 PNGs (many small files + an fsync each; bench/results/data.json),
hence one file per dataset. Inside a process, decoded images are also memoised per file so a
combined CSV that shares rows with an earlier one decodes only its new images.
Training, inference and embedding all go through :func:`load_pairs`.

Cache folder: ``$DEFTPIPE_CACHE_DIR`` if set, else ``<dataset root>/.deftpipe_cache/`` (the
workspace, so the cache goes away with it), else ``~/.cache/deftpipe/`` when that is not writable
or when the images are outside any deftpipe workspace (deftpipe never writes into a folder it does
not own, e.g. a TAO workspace adopted by ``init --from-tao``).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from deftpipe._fs import atomic_path
from deftpipe.data import _file_memo
from deftpipe.data._csv import ImageLayout
from deftpipe.data._open import open_image
from deftpipe.data._pixels import gray8
from deftpipe.errors import DataError

_MEMO: dict[str, np.ndarray] = {}  # in-process memo: key -> decoded image
_MEMO_MAX = 200_000
#: Default decode threads. Decoding a small PNG is mostly Python-level work under the GIL, so
#: threads contend instead of overlapping: on 2 cores a cold load of 2,400 synthetic 64x64 pairs
#: took 0.67 s on 1 thread and 1.16 s on 2 (DeepPCB KPI set, 8.2k pairs: 1.78 s vs 3.70 s;
#: bench/bench_cache.py). ``load_pairs(num_threads=N)`` still fans out, for large images.
DECODE_THREADS = 1
#: Part of every cache key: bump it when decoding changes, so no entry written by the old decoder
#: is served (v2: 16-bit images scaled instead of clipped to white, see ``_pixels``).
DECODER_VERSION = "decode-v3"  # v3: EXIF orientation applied (_open)


def cache_dir_for(layout: ImageLayout) -> Path:
    env = os.environ.get("DEFTPIPE_CACHE_DIR")
    if env:
        return Path(env)
    root = Path(layout.root or layout.images_dir)
    d = root / ".deftpipe_cache"
    if not (root / "pipeline.yaml").is_file():  # images deftpipe does not own (an adopted TAO workspace)
        d = Path.home() / ".cache" / "deftpipe" / hashlib.sha1(str(root).encode()).hexdigest()[:16]
    try:
        d.mkdir(parents=True, exist_ok=True)
        return d
    except OSError:
        return Path.home() / ".cache" / "deftpipe"


def decode_image(path: Path, size: int | None = None, *, resize: bool = False) -> np.ndarray:
    """Decode one image to a 2-D uint8 array (grayscale: one channel per lighting file).

    Raises:
        DataError: unreadable file, a mode that cannot become 8-bit gray (``_pixels.gray8``), or a
            size other than ``size`` x ``size`` (unless ``resize``).
    """
    return _decode(path, path, size, resize)


def _decode(source: Path | io.BytesIO, path: Path, size: int | None, resize: bool) -> np.ndarray:
    try:
        with open_image(source, path) as im:
            arr = gray8(im, path)
        if size is not None and arr.shape != (size, size):
            if not resize:
                raise _wrong_size(path, (arr.shape[1], arr.shape[0]), size)
            arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR), dtype=np.uint8)
        return arr.copy()
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"image {path} cannot be decoded ({err}); replace or remove the file") from None


def _wrong_size(path: Path | str, wh: tuple[int, int], size: int) -> DataError:
    return DataError(f"image {path} is {wh[0]}x{wh[1]} but the spec expects {size}x{size} "
                     "(model.input_size); fix model.input_size or re-crop the images")


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None


def _file_key(path: str, st: os.stat_result, size: int, resize: bool) -> str:
    return f"{path}|{st.st_size}|{st.st_mtime_ns}|{size}|{int(resize)}"


def _memo_key(path: str, st: os.stat_result, size: int | None, resize: bool) -> str:
    """In-process memo key: without ``resize`` the decoded image does not depend on ``size``."""
    return _file_key(path, st, (size or 0) if resize else 0, resize)


def load_image(path: str | Path, size: int | None = None, *, resize: bool = False) -> np.ndarray:
    """One decoded image, memoised in-process by (path, file size, mtime[, resized size]).

    Without ``resize`` the memo entry does not depend on ``size`` (that only checks the shape),
    so a caller that does not know the model's input size still hits what training decoded."""
    return _load_real(os.path.realpath(path), size, resize)


def _load_real(path: str, size: int | None, resize: bool, st: os.stat_result | None = None) -> np.ndarray:
    key = _memo_key(path, st or _stat(path), size, resize)
    hit = _MEMO.get(key)
    if hit is not None:
        if size is not None and not resize and hit.shape != (size, size):
            raise _wrong_size(path, (hit.shape[1], hit.shape[0]), size)
        return hit
    try:
        with open(path, "rb") as f:
            st, data = os.fstat(f.fileno()), f.read()
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except OSError as err:
        raise DataError(f"image {path} cannot be read ({err}); replace or remove the file") from None
    # the bytes are in hand: hash them now, so the leak check does not read the file again
    _file_memo.remember(_file_memo.SHA1, path, st.st_size, st.st_mtime_ns, hashlib.sha1(data).digest())
    arr = _decode(io.BytesIO(data), Path(path), size if resize else None, resize)
    arr.setflags(write=False)  # shared by every caller: nobody may draw on the memoised image
    if len(_MEMO) < _MEMO_MAX:
        _MEMO[key] = arr
    if size is not None and not resize and arr.shape != (size, size):
        raise _wrong_size(path, (arr.shape[1], arr.shape[0]), size)
    return arr


def clear_memo() -> None:
    """Forget in-process decoded images (the on-disk cache stays)."""
    _MEMO.clear()


def _row_files(df: pd.DataFrame, layout: ImageLayout) -> list[str]:
    """Real paths of every row's golden then test files (one per light), checked to stay inside
    the dataset root; folders are resolved once (``_csv._real_file``), not every file's path."""
    files: list[str] = []
    for inp, gold, obj in zip(df["input_path"], df["golden_path"], df["object_name"], strict=True):
        files += layout.inside_file_strs(gold, obj) + layout.inside_file_strs(inp, obj)
    return files


def load_pairs(df: pd.DataFrame, layout: ImageLayout, size: int, *, resize: bool = False,
               use_cache: bool = True, num_threads: int | None = None) -> np.ndarray:
    """Decoded golden/test pairs of every row.

    Args:
        df: dataset rows (``input_path``, ``golden_path``, ``object_name``).
        layout: where the images are and which lighting files make the channels.
        size: expected image side in pixels (``model.input_size``).
        resize: resize other sizes instead of raising.
        use_cache: False decodes every file (for benchmarks).
        num_threads: decode threads (default :data:`DECODE_THREADS`).
    Returns:
        uint8 array of shape ``(N, 2, L, size, size)``; axis 1 is (golden, test), L = number of lights.
    Raises:
        DataError: a missing/undecodable image, a path escaping the dataset root, or a wrong size.
    """
    n_light = max(1, len(layout.lights))
    shape = (len(df), 2, n_light, size, size)
    files = _row_files(df, layout)
    if not use_cache:
        arrays = _decode_all(files, size, resize, num_threads, memo=False)
        return _assemble(arrays, shape)
    stats = [_stat(p) for p in files]
    npy = _entry(files, stats, layout, size, resize)
    sha1_npy = npy.with_suffix(".sha1.npy")  # the files' SHA-1 digests, for the leak check
    if npy.is_file():
        try:
            arr = np.load(npy, allow_pickle=False)
            if arr.shape == shape and arr.dtype == np.uint8:
                _remember_digests(sha1_npy, files, stats)
                _remember_images(arr, files, stats, size, resize)
                return arr
        except (OSError, ValueError):
            pass  # a damaged entry is simply rebuilt
    out = _assemble(_decode_all(files, size, resize, num_threads, memo=True, stats=stats), shape)
    try:
        with atomic_path(npy) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, out, allow_pickle=False)
        _save_digests(sha1_npy, files, stats)
    except OSError:
        pass  # read-only cache folder: still correct, just slower next time
    return out


def _entry(files: list[str], stats: list[os.stat_result], layout: ImageLayout, size: int, resize: bool) -> Path:
    keys = [_file_key(p, st, size, resize) for p, st in zip(files, stats, strict=True)]
    digest = hashlib.sha1("\n".join([DECODER_VERSION, *keys]).encode()).hexdigest()
    return cache_dir_for(layout) / "pairs" / f"{digest}.npy"


def is_cached(df: pd.DataFrame, layout: ImageLayout, size: int, *, resize: bool = False) -> bool:
    """True when :func:`load_pairs` would read these rows from a cache entry instead of decoding."""
    files = _row_files(df, layout)
    return _entry(files, [_stat(p) for p in files], layout, size, resize).is_file()


def _remember_images(arr: np.ndarray, files: list[str], stats: list[os.stat_result], size: int,
                     resize: bool) -> None:
    """Memoise a cache entry's images, so a later set that shares rows with this one (DEFT's
    growing training set, SDG's golden sources) decodes only its new files. The memo gets views of
    one read-only copy (one memcpy), so a caller writing into the returned array cannot alter it."""
    if len(_MEMO) + len(files) > _MEMO_MAX:
        return
    flat = arr.reshape(-1, arr.shape[-2], arr.shape[-1]).copy()
    flat.setflags(write=False)
    for i, (p, st) in enumerate(zip(files, stats, strict=True)):
        _MEMO.setdefault(_memo_key(p, st, size, resize), flat[i])


def _save_digests(path: Path, files: list[str], stats: list[os.stat_result]) -> None:
    digests = [_file_memo.recall(_file_memo.SHA1, p, st.st_size, st.st_mtime_ns)
               for p, st in zip(files, stats, strict=True)]
    if files and all(isinstance(d, bytes) and len(d) == 20 for d in digests):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.frombuffer(b"".join(digests), np.uint8).reshape(len(files), 20), allow_pickle=False)


def _remember_digests(path: Path, files: list[str], stats: list[os.stat_result]) -> None:
    """Re-remember the digests kept beside a cache entry (its key already pins every file's
    size and mtime); a missing or damaged sidecar only means the leak check reads the files."""
    try:
        d = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return
    if d.shape != (len(files), 20) or d.dtype != np.uint8:
        return
    for p, st, row in zip(files, stats, d, strict=True):
        _file_memo.remember(_file_memo.SHA1, p, st.st_size, st.st_mtime_ns, row.tobytes())


def _decode_all(files: list[str], size: int, resize: bool, num_threads: int | None, *, memo: bool,
                stats: list[os.stat_result] | None = None):
    """Decoded images of ``files``; with ``memo``, through the in-process memo (``stats``: the
    files' stat results when the caller already has them)."""
    todo = list(zip(files, stats or [None] * len(files), strict=True))

    def one(item: tuple[str, os.stat_result | None]) -> np.ndarray:
        p, st = item
        return _load_real(p, size, resize, st) if memo else decode_image(Path(p), size, resize=resize)

    threads = num_threads or DECODE_THREADS
    if len(todo) <= 64:  # only on request: small PNGs decode faster on one thread
        threads = 1
    # chunks, not one future per file: memo hits are microseconds, a future costs more
    return _file_memo.map_chunked(one, todo, threads=threads, step=max(16, -(-len(todo) // (threads * 8))))


def _assemble(arrays: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(shape, dtype=np.uint8)
    if arrays:
        out.reshape(-1, shape[-2], shape[-1])[:] = np.stack(arrays)
    return out


__all__ = ["cache_dir_for", "clear_memo", "decode_image", "load_image", "load_pairs"]
