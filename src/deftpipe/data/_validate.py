"""Dataset validation at the boundary (docs/contracts.md §3): one DataError listing every problem class.

Checked: required columns, empty cells, known labels, both PASS and defect rows present, duplicate
rows, image files present / inside the dataset root / decodable to 8-bit gray (``_pixels``) / of one
size per row and of the spec's ``input_size``, and overlap with other splits
(train↔validation, train↔KPI). Input files are only read, never modified.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from PIL import UnidentifiedImageError

from deftpipe.data._cache import DECODE_THREADS
from deftpipe.data._csv import (
    DEFECT_CLASSES,
    PASS,
    REQUIRED_COLUMNS,
    ImageLayout,
    identity_keys,
    read_dataset,
)
from deftpipe.data._file_memo import map_files
from deftpipe.data._layout import resolve_layout
from deftpipe.data._open import open_image
from deftpipe.data._pixels import gray8
from deftpipe.errors import DataError, clip

MAX_EXAMPLES = 3  # rows quoted per problem class


class _Problems:
    """Collects problems by class, keeping the count and the first few examples of each."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[int, list[str], str]] = {}

    def add(self, kind: str, example: str, fix: str) -> None:
        n, ex, _ = self.items.get(kind, (0, [], fix))
        if len(ex) < MAX_EXAMPLES:
            ex.append(clip(example, 300))
        self.items[kind] = (n + 1, ex, fix)

    def message(self, csv: Path) -> str:
        lines = [f"{csv}: {len(self.items)} problem class(es) found (rows are 1-based, header excluded):"]
        for kind, (n, ex, fix) in self.items.items():
            more = f" and {n - len(ex)} more" if n > len(ex) else ""
            lines.append(f"  - {kind} ({n}): {'; '.join(ex)}{more} — {fix}")
        return "\n".join(lines)


def _decode(path: str) -> tuple[str | None, tuple[int, int] | None]:
    """(None, (width, height)) if ``path`` decodes to 8-bit gray as training would, else (why not, None)."""
    try:
        with open_image(path) as im:
            h, w = gray8(im, path).shape
    except DataError as e:
        return str(e).replace(f"image {path} ", "", 1), None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"unreadable ({type(e).__name__})", None
    return None, (w, h)


def _exists(path: str) -> tuple[str | None, None]:
    """(None, None) if ``path`` is a file, else "missing" (for rows whose images are not decoded)."""
    return (None if os.path.isfile(path) else "missing"), None


def _check_images(df: pd.DataFrame, layout: ImageLayout, problems: _Problems,
                  decode_rows: set[int] | None = None, input_size: int | None = None) -> None:
    per_row = []
    for i, (test_dir, golden_dir, name) in enumerate(zip(df["input_path"].tolist(), df["golden_path"].tolist(),
                                                        df["object_name"].tolist(), strict=True)):
        per_row.append((i, [("test", p) for p in layout.file_strs(test_dir, name)]
                        + [("golden", p) for p in layout.file_strs(golden_dir, name)]))
    inside = {f for _, fs in per_row for _, f in fs if not layout.escapes(f)}
    to_decode = inside if decode_rows is None else {f for i, fs in per_row if i in decode_rows for _, f in fs} & inside
    # a file that decoded once is not decoded again while its size and mtime stay the same
    # one thread: small-image decoding is GIL-bound (DeepPCB KPI set: 2.3 s on 1 thread, 3.2-3.6 s on 4)
    checked = map_files("pixels", to_decode, _decode, keep=lambda r: r[0] is None, missing=("missing", None),
                        workers=DECODE_THREADS)
    checked.update({f: _exists(f) for f in inside - checked.keys()})  # rows not decoded: the file exists
    for i, fs in per_row:
        _check_sizes(i, fs, checked, input_size, problems)
        for kind, f in fs:
            if f not in checked:
                problems.add("path escapes the dataset root",
                             f"row {i + 1} {kind} {f} (root {layout.root or layout.images_dir})",
                             "use paths relative to the images folder without '..' or absolute parts")
            elif checked[f][0] == "missing":
                problems.add("missing image", f"row {i + 1} {kind} {f}",
                             "add the file or fix input_path/golden_path/object_name (or --images-dir)")
            elif checked[f][0]:
                problems.add("unreadable image", f"row {i + 1} {kind} {f} {checked[f][0]}",
                             "replace the file with an 8/16-bit grayscale PNG or JPEG")


def _check_sizes(i: int, fs: list[tuple[str, str]], checked: dict, input_size: int | None,
                 problems: _Problems) -> None:
    """Golden and test (every light) of row ``i`` share one size, and it is the spec's ``input_size``."""
    sizes = {(kind, f): checked[f][1] for kind, f in fs if f in checked and checked[f][1] is not None}
    if len(set(sizes.values())) > 1:
        problems.add("golden and test of different sizes",
                     f"row {i + 1} " + ", ".join(f"{k} {w}x{h}" for (k, _), (w, h) in sizes.items()),
                     "re-crop the pair to one size")
    elif sizes and input_size is not None:
        w, h = next(iter(sizes.values()))
        if (w, h) != (input_size, input_size):
            problems.add("size the spec cannot take", f"row {i + 1} {w}x{h}",
                         f"the spec's model.input_size is {input_size}: re-crop the images or change it")


def _overlap(df: pd.DataFrame, name: str, other: str | Path | pd.DataFrame, problems: _Problems) -> None:
    odf = other if isinstance(other, pd.DataFrame) else read_dataset(other, require_rows=False)
    shared = identity_keys(df).isin(set(identity_keys(odf)))
    for i in shared[shared].index:
        problems.add(f"overlap with {name}", f"row {i + 1} {df.at[i, 'object_name']}",
                     f"a row may be in only one split; remove it from this CSV or from {name}")


def validate_dataset(
    csv: str | Path,
    *,
    images_dir: str | Path | None = None,
    layout: ImageLayout | None = None,
    known_labels: Iterable[str] | None = None,
    others: Mapping[str, str | Path | pd.DataFrame] | None = None,
    require_both_classes: bool = True,
    check_images: bool = True,
    decode_rows: Iterable[int] | None = None,
    input_size: int | None = None,
) -> pd.DataFrame:
    """Validate one dataset CSV and return it as a clean DataFrame.

    Args:
        csv: the CSV to check (never modified).
        images_dir: image root; default: the enclosing workspace's (``pipeline.yaml`` ``data.images_dir``).
        layout: full image layout (overrides ``images_dir``).
        known_labels: allowed labels (default PASS + the six DeepPCB classes).
        others: ``{name: csv-or-DataFrame}`` splits this one must not share a row with.
        require_both_classes: a split without PASS rows or without defect rows is an error.
        check_images: check that every image exists, stays in the root and decodes.
        decode_rows: 0-based rows whose images are decoded; the other rows' images are only
            checked to exist and stay in the root (None: decode every row). The DEFT merge
            decodes only the rows it adds: the rows it carries over were decoded before.
        input_size: the side (px) every decoded image must have (``model.input_size``); None: any,
            as long as golden and test of a row agree.

    Raises:
        DataError: listing every problem class found, with examples (file, row) and the fix.
    """
    csv = Path(csv)
    df = read_dataset(csv)  # missing file/columns/rows: nothing else can be checked
    problems = _Problems()
    known = {PASS, *DEFECT_CLASSES} if known_labels is None else {str(k).strip() for k in known_labels}
    for col in REQUIRED_COLUMNS:
        for i in df.index[df[col] == ""]:
            problems.add(f"empty {col}", f"row {i + 1}", f"fill in {col} for every row")
    bad = df.index[~df["label"].isin(known) & (df["label"] != "")]
    for i in bad:
        problems.add("unknown label", f"row {i + 1} label '{clip(df.at[i, 'label'], 60)}'",
                     f"known: {', '.join(sorted(known))}; fix the label or add the class to the spec")
    if require_both_classes:
        if not (df["label"] == PASS).any():
            problems.add("empty class", "no PASS rows", "every split needs PASS rows for FAR @ 100% recall")
        if not ((df["label"] != PASS) & (df["label"] != "")).any():
            problems.add("empty class", "no defect rows", "every split needs defect rows for FAR @ 100% recall")
    dup = identity_keys(df).duplicated()
    for i in dup[dup].index:
        problems.add("duplicate row", f"row {i + 1} {df.at[i, 'object_name']}", "remove the repeated rows")
    for name, other in (others or {}).items():
        _overlap(df, name, other, problems)
    if check_images:
        _check_images(df, layout or resolve_layout(csv, images_dir), problems,
                      None if decode_rows is None else set(decode_rows), input_size)
    if problems.items:
        raise DataError(problems.message(csv))
    return df


__all__ = ["validate_dataset"]
