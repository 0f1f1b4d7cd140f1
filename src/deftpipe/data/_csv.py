"""The dataset CSV contract (docs/contracts.md §3): read, normalise, write, and locate images.

A dataset is a pandas DataFrame of strings with at least ``input_path, golden_path, label,
object_name``; ``boardname`` and ``source`` are optional and every extra column is kept.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from deftpipe._fs import atomic_path
from deftpipe.config import find_workspace
from deftpipe.errors import DataError, clip

REQUIRED_COLUMNS = ("input_path", "golden_path", "label", "object_name")
OPTIONAL_COLUMNS = ("boardname", "source")
IDENTITY_COLUMNS = ("input_path", "golden_path", "label", "object_name", "boardname")
PASS = "PASS"
DEFECT_CLASSES = ("open", "short", "mousebite", "spur", "copper", "pin-hole")


def normalize_label(label: str) -> str:
    """``PASS`` upper-case, defect classes lower-case, whitespace stripped."""
    s = str(label).strip()
    return PASS if s.upper() == PASS else s.lower()


def is_defect(labels: pd.Series) -> pd.Series:
    """Boolean Series: True for every non-PASS row (binary tasks collapse defects to FAIL)."""
    return labels.map(normalize_label) != PASS


def _csv_text(csv_path: Path) -> str:
    """The file as text; a NUL byte or bytes that are not UTF-8 (e.g. Latin-1 from a spreadsheet)
    are refused with the row (1-based, header excluded) and line they are on."""
    try:
        raw = csv_path.read_bytes()
    except OSError as err:
        raise DataError(f"dataset CSV {csv_path} cannot be read: {err.strerror}") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw[:nul].count(b"\n") + 1
        raise DataError(f"dataset CSV {csv_path} has a NUL byte on line {line} (row {line - 1}): it is not a text "
                        "CSV; re-export it as plain UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"dataset CSV {csv_path} is not UTF-8: byte 0x{raw[err.start]:02X} on line {line} "
                        f"(row {line - 1}) (Latin-1/Windows-1252?); save the file as UTF-8") from None


def _long_row(text: str) -> str:
    """"row N (line L)" of the first record with more fields than the header."""
    reader = csv.reader(io.StringIO(text))
    width = len(next(reader, []))
    for row in reader:
        if len(row) > width:
            return f"row {reader.line_num - 1} (line {reader.line_num})"
    return "a row"


def read_dataset(csv_path: str | Path, *, require_rows: bool = True) -> pd.DataFrame:
    """Read a ChangeNet-style CSV as strings with normalised labels.

    Raises:
        DataError: file missing/unreadable, a required column missing, or no rows.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"dataset CSV {csv_path} does not exist" + (" (it is a folder)" if csv_path.is_dir() else ""))
    text = _csv_text(csv_path)
    try:
        with warnings.catch_warnings():
            # index_col=False: a first row with extra fields must not silently become the index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False, index_col=False)
    except pd.errors.ParserWarning:
        raise DataError(f"dataset CSV {csv_path} cannot be parsed: {_long_row(text)} has more fields than the "
                        "header; fix the quoting or the number of commas on that line") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"dataset CSV {csv_path} is empty (no header); expected columns "
                        f"{','.join(REQUIRED_COLUMNS)}") from None
    except pd.errors.ParserError as err:
        raise DataError(f"dataset CSV {csv_path} cannot be parsed: {clip(' '.join(str(err).split()))}; "
                        "fix the quoting or the number of commas on that line") from None
    header = [c.strip() for c in next(csv.reader(io.StringIO(text)), [])]
    twice = sorted({c for c in header if c and header.count(c) > 1})
    if twice:  # pandas would read the second as "label.1" and ignore it silently
        raise DataError(f"dataset CSV {csv_path} has the column(s) {clip(', '.join(twice))} twice in its header; "
                        "keep one of each (delete or rename the other)")
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{csv_path.name}: missing column(s) {', '.join(missing)}; expected at least "
            f"{','.join(REQUIRED_COLUMNS)} (found {clip(','.join(df.columns))})"
        )
    for c in df.columns:
        df[c] = df[c].astype(str).str.strip()
    # a row of only empty cells is a blank line (spreadsheets save one as ",,,"): skipped like one
    df = df[(df != "").any(axis=1)]
    if require_rows and len(df) == 0:
        raise DataError(f"{csv_path.name} has a header but no rows; an empty split cannot be used")
    df["label"] = df["label"].map(normalize_label)
    if "boardname" not in df.columns:
        df["boardname"] = ""
    return df.reset_index(drop=True)


def write_dataset(df: pd.DataFrame, csv_path: str | Path) -> Path:
    """Write a dataset CSV atomically, required columns first, extra columns kept."""
    cols = [c for c in REQUIRED_COLUMNS if c in df.columns]
    cols += [c for c in OPTIONAL_COLUMNS if c in df.columns]
    cols += [c for c in df.columns if c not in cols]
    with atomic_path(csv_path) as tmp:
        df[cols].to_csv(tmp, index=False)
    return Path(csv_path)


def identity_keys(df: pd.DataFrame) -> pd.Series:
    """One hashable identity per row: (input_path, golden_path, label, object_name, boardname)."""
    cols = [c for c in IDENTITY_COLUMNS if c in df.columns]
    if not cols or df.empty:
        return pd.Series([""] * len(df), index=df.index, dtype=object)
    key = df[cols[0]].astype(str)
    for c in cols[1:]:  # vectorised concatenation: ~50x faster than a row-wise agg on 20k rows
        key = key + "\x1f" + df[c].astype(str)
    return key


@dataclass(frozen=True)
class ImageLayout:
    """Where a row's images are: ``{images_dir}/{input_path}/{object_name}[_{light}]{image_ext}``.

    ``root`` is the folder no image path may escape: the workspace (folder of ``pipeline.yaml``)
    when ``images_dir`` lies inside one — so the loop's generated images under ``results/`` are
    reachable — else ``images_dir`` itself.
    """

    images_dir: Path
    image_ext: str = ".png"
    lights: tuple[str, ...] = ()
    root: Path | None = None

    @classmethod
    def from_spec(cls, spec) -> ImageLayout:  # spec: deftpipe.spec.Spec
        return cls.create(spec.images_dir, spec.dataset.classify.image_ext, spec.lights)

    @classmethod
    def create(cls, images_dir: str | Path, image_ext: str = ".png", lights=()) -> ImageLayout:
        images_dir = Path(images_dir).resolve()
        ws = find_workspace(images_dir) if images_dir.exists() else None
        ext = image_ext if image_ext.startswith(".") else "." + image_ext
        return cls(images_dir, ext, tuple(lights), ws or images_dir)

    def files(self, folder: str, object_name: str) -> list[Path]:
        return [Path(p) for p in self.file_strs(folder, object_name)]

    def file_strs(self, folder: str, object_name: str) -> list[str]:
        """:meth:`files` as plain strings (fast path for checking tens of thousands of rows)."""
        base = os.path.join(str(self.images_dir), folder)
        names = [f"{object_name}_{light}{self.image_ext}" for light in self.lights] or [
            f"{object_name}{self.image_ext}"
        ]
        return [os.path.join(base, n) for n in names]

    def row_files(self, row) -> tuple[list[Path], list[Path]]:
        """(test image files, golden image files) of one row (one file per light), each resolved inside
        the root (:meth:`inside_file_strs`)."""
        return ([Path(p) for p in self.inside_file_strs(row["input_path"], row["object_name"])],
                [Path(p) for p in self.inside_file_strs(row["golden_path"], row["object_name"])])

    def inside_file_strs(self, folder: str, object_name: str) -> list[str]:
        """:meth:`file_strs` as real paths, each checked to stay inside the root: the one rule every
        reader of a CSV row's images goes through.

        Raises:
            DataError: a path escapes the root (``..``, an absolute part, a symlink out).
        """
        out = []
        for p in self.file_strs(folder, object_name):
            real = self.resolve_inside(p)
            if real is None:
                raise DataError(f"image path {clip(p, 300)} escapes the dataset root {self.root or self.images_dir}; "
                                "CSV paths must stay inside the workspace/images folder")
            out.append(real)
        return out

    def escapes(self, path: str | Path) -> bool:
        """True when ``path`` resolves outside the dataset root (``..``, absolute paths, symlinks)."""
        return self.resolve_inside(path) is None

    def resolve_inside(self, path: str | Path) -> str | None:
        """The real path of ``path``, or None when it resolves outside the dataset root."""
        root = _real_dir(str(self.root or self.images_dir))
        real = _real_file(str(path))
        return real if real == root or real.startswith(root.rstrip(os.sep) + os.sep) else None


@functools.lru_cache(maxsize=8192)
def _real_dir(path: str) -> str:
    return os.path.realpath(path)


def _real_file(path: str) -> str:
    """``realpath`` with the parent folder's resolution cached: one lstat per file, not one per
    path component (validating DeepPCB's 45k files went from 7 s to well under 1 s)."""
    if os.path.islink(path):
        return os.path.realpath(path)
    head, name = os.path.split(path)
    return os.path.join(_real_dir(head), name)


__all__ = [
    "DEFECT_CLASSES",
    "IDENTITY_COLUMNS",
    "ImageLayout",
    "OPTIONAL_COLUMNS",
    "PASS",
    "REQUIRED_COLUMNS",
    "identity_keys",
    "is_defect",
    "normalize_label",
    "read_dataset",
    "write_dataset",
]
