"""Leakage between splits: rows shared by identity key or by image content, and near-duplicates.

A row's content hash is the SHA-1 of its golden then its test image file bytes (every light), so
a copied image pair under a new name or folder is still found. Rows whose images are missing get
no content hash (identity is still compared) and are counted in ``unhashed``. With ``near=True``
the decoded pixels are compared too (:mod:`deftpipe.data._near_dup`): the same picture with a few
pixels changed or re-encoded is reported per pair as a near-duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deftpipe.data import _digest_store, _near_dup
from deftpipe.data._cache import cache_dir_for
from deftpipe.data._csv import ImageLayout, _real_file, identity_keys, read_dataset
from deftpipe.data._file_memo import SHA1, map_files
from deftpipe.data._layout import resolve_layout

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class PairLeak:
    a: str
    b: str
    by_identity: int  # rows of b whose identity key is in a
    by_content: int  # rows of b whose image content hash is in a
    n_rows: int  # rows of b overlapping a by either
    examples: list[str] = field(default_factory=list)
    near: int = 0  # other rows of b that are near-duplicates of a row of a (a few pixels changed)
    near_examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LeakReport:
    n_overlapping: int  # sum of PairLeak.n_rows over every pair
    pairs: list[PairLeak]
    unhashed: dict[str, int]  # CSV -> rows without a content hash (missing images)

    @property
    def n_near(self) -> int:
        return sum(p.near for p in self.pairs)

    def to_dict(self) -> dict:
        return {"n_overlapping": self.n_overlapping, "n_near_duplicates": self.n_near, "unhashed": self.unhashed,
                "pairs": [p.__dict__ for p in self.pairs]}

    def lines(self) -> list[str]:
        out = []
        for p in self.pairs:
            out.append(f"{p.a} <-> {p.b}: {p.n_rows} overlapping rows "
                       f"({p.by_identity} by identity, {p.by_content} by image content)")
            out += [f"    e.g. {e}" for e in p.examples]
            if p.near:
                out.append(f"{p.a} <-> {p.b}: {p.near} near-duplicate rows (the same picture with a few pixels "
                           "changed or re-encoded)")
                out += [f"    e.g. {e}" for e in p.near_examples]
        out += [f"warning: {n} rows of {c} have missing images and were compared by identity only"
                for c, n in self.unhashed.items() if n]
        return out


def _sha1(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha1(f.read()).digest()
    except OSError:
        return None


def _dataset_root(layout: ImageLayout) -> str:
    return _real_file(str(layout.root or layout.images_dir))


def _store_path(layout: ImageLayout) -> Path | None:
    try:
        return _digest_store.store_path(cache_dir_for(layout), _dataset_root(layout))
    except OSError:
        return None


def content_hashes(df: pd.DataFrame, layout: ImageLayout, *, workers: int = 8) -> pd.Series:
    """SHA-1 hex of (golden files, test files) bytes per row; None where an image is missing.

    File digests are memoised per (real path, size, mtime), so re-checking an unchanged set is
    cheap, and the image cache records the digest of every file it decodes (a set that was just
    trained on or scored is not read again). Across processes they are kept in the dataset's
    cache folder (``_digest_store``)."""
    per_row = [(layout.inside_file_strs(g, n), layout.inside_file_strs(t, n))
               for t, g, n in zip(df["input_path"].tolist(), df["golden_path"].tolist(),
                                  df["object_name"].tolist(), strict=True)]
    store = _store_path(layout)
    if store is not None:
        _digest_store.load(store)
    hashed: list[str] = []  # the files not served from the memo

    def sha1(path: str) -> bytes | None:
        hashed.append(path)
        return _sha1(path)

    digests = map_files(SHA1, (f for golden, test in per_row for f in (*golden, *test)), sha1,
                        keep=lambda d: d is not None, missing=None, workers=workers)
    if store is not None and len(hashed) >= _digest_store.MIN_NEW_TO_SAVE:
        _digest_store.save(store, _dataset_root(layout))
    out = []
    for golden, test in per_row:
        parts = [digests[f] for f in (*golden, *test)]
        out.append(None if any(p is None for p in parts) else hashlib.sha1(b"".join(parts)).hexdigest())
    return pd.Series(out, index=df.index, dtype=object)


def find_leaks(
    csvs: Sequence[str | Path],
    layouts: Sequence[ImageLayout | None] | None = None,
    *,
    images_dir: str | Path | None = None,
    hash_images: bool = True,
    first_only: bool = False,
    near: bool = False,
) -> LeakReport:
    """Compare every pair of CSVs by identity key and by image content hash.

    Args:
        csvs: dataset CSVs (or any mix of paths); each pair (a, b) with a before b is compared.
        layouts: one :class:`ImageLayout` per CSV (None entries: resolved like ``images_dir``).
        images_dir: image root for every CSV without a layout; default: each CSV's workspace.
        hash_images: also compare image content (off: identity keys only).
        first_only: compare the first CSV with each of the others, not the others among
            themselves (the DEFT merge checks only the rows it adds against validation and KPI).
        near: also find near-duplicates from the decoded pixels (pre-flight, ``data leakage``).

    Raises:
        DataError: unreadable CSV, or no images folder can be found for a CSV.
    """
    layouts = list(layouts) if layouts is not None else [None] * len(csvs)
    names, ids, hashes, unhashed, prints = [], [], [], {}, []
    for csv, layout in zip(csvs, layouts, strict=True):
        df = read_dataset(csv, require_rows=False)
        names.append(str(csv))
        ids.append(identity_keys(df))
        layout = layout or (resolve_layout(csv, images_dir) if hash_images or near else None)
        prints.append(_near_dup.fingerprints(df, layout) if near else None)
        if hash_images:
            h = content_hashes(df, layout)
            unhashed[str(csv)] = int(h.isna().sum())
        else:
            h = pd.Series([None] * len(df), index=df.index, dtype=object)
        hashes.append((h, df["object_name"]))
    pairs = []
    for i in range(1 if first_only else len(names)):
        for j in range(i + 1, len(names)):
            by_id = ids[j].isin(set(ids[i]))
            hj, objs = hashes[j]
            known = set(hashes[i][0].dropna())
            by_hash = hj.notna() & hj.isin(known)
            both = by_id | by_hash
            ex = [f"{names[j]} row {k + 1} ({objs[k]})" for k in both[both].index[:MAX_EXAMPLES]]
            close = (_near_dup.near_pairs(prints[i], prints[j], skip=set(np.flatnonzero(both.to_numpy())))
                     if near else [])
            near_ex = [f"{names[j]} row {b + 1} ({objs[b]}) ≈ {names[i]} row {a + 1} ({hashes[i][1][a]})"
                       for a, b in close[:MAX_EXAMPLES]]
            pairs.append(PairLeak(names[i], names[j], int(by_id.sum()), int(by_hash.sum()), int(both.sum()), ex,
                                  len(close), near_ex))
    return LeakReport(sum(p.n_rows for p in pairs), pairs, unhashed)


__all__ = ["LeakReport", "PairLeak", "content_hashes", "find_leaks"]
