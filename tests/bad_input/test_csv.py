"""Malformed dataset CSVs: each is refused by `deftpipe data validate` with the row and the fix,
exit 1, and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

HEADER = "input_path,golden_path,label,object_name,boardname\n"


def _rows(bad) -> pd.DataFrame:
    return pd.read_csv(bad.train, dtype=str, keep_default_na=False)


def _edit(bad, row: int, col: str, value: str) -> Path:
    df = _rows(bad)
    df.loc[row, col] = value
    df.to_csv(bad.train, index=False)
    return bad.train


def _write(bad, data: bytes) -> Path:
    bad.train.write_bytes(data)
    return bad.train


def _outside_link(bad) -> Path:
    """``images/escape`` links to a folder outside the workspace holding a copy of row 1's images."""
    src = _rows(bad).loc[0, "input_path"]
    shutil.copytree(bad.ws / "images" / src, bad.root / "outside" / src)
    (bad.ws / "images" / "escape").symlink_to(bad.root / "outside")
    return _edit(bad, 0, "input_path", f"escape/{src}")


CASES = {
    "missing_file": (lambda b: b.ws / "nope.csv", r"does not exist"),
    "folder_not_file": (lambda b: b.ws / "train", r"does not exist \(it is a folder\)"),
    "zero_bytes": (lambda b: _write(b, b""), r"is empty \(no header\)"),
    "header_only": (lambda b: _write(b, HEADER.encode()), r"header but no rows"),
    "missing_column": (lambda b: _write(b, b"input_path,golden_path,object_name\na,b,c\n"),
                       r"missing column\(s\) label"),
    "nul_byte": (lambda b: _write(b, b.train.read_bytes().replace(b"\n", b"\n\x00", 3)[:4000]),
                 r"NUL byte on line 2 \(row 1\).*UTF-8"),
    "latin1": (lambda b: _write(b, (HEADER + "a/test,a/golden,PASS,caf\xe9,b\n").encode("latin-1")),
               r"not UTF-8: byte 0xE9 on line 2 \(row 1\).*save the file as UTF-8"),
    "binary_garbage": (lambda b: _write(b, bytes(range(128, 256)) * 8), r"not UTF-8: byte 0x80 on line 1"),
    "unclosed_quote": (lambda b: _write(b, (HEADER + 'a/test,a/golden,"PASS,x,b\n').encode()), r"cannot be parsed"),
    "too_many_fields": (lambda b: _write(b, (HEADER + "a,b,PASS,x,b,1,2,3\nc,d,PASS,y,b\n").encode()),
                        r"cannot be parsed"),
    "unknown_label": (lambda b: _edit(b, 2, "label", "scratch"), r"unknown label \(1\): row 3 label 'scratch'"),
    "empty_label": (lambda b: _edit(b, 4, "label", ""), r"empty label \(1\): row 5"),
    "empty_object_name": (lambda b: _edit(b, 0, "object_name", ""), r"empty object_name"),
    "duplicate_row": (lambda b: _write(b, b.train.read_bytes() + b.train.read_bytes().splitlines(True)[1]),
                      r"duplicate row"),
    "dotdot_path": (lambda b: _edit(b, 1, "input_path", "../../../../etc"), r"path escapes the dataset root.*row 2"),
    "absolute_path": (lambda b: _edit(b, 1, "golden_path", "/etc"), r"path escapes the dataset root.*row 2 golden"),
    "symlink_out_of_root": (_outside_link, r"path escapes the dataset root.*row 1 test"),
    "missing_image": (lambda b: _edit(b, 3, "object_name", "no_such_board"), r"missing image \(2\): row 4 test"),
    "no_pass_rows": (lambda b: _write(b, b"".join(ln for ln in b.train.read_bytes().splitlines(True)
                                                  if b",PASS," not in ln)), r"no PASS rows"),
    "no_defect_rows": (lambda b: _write(b, b"".join(ln for i, ln in enumerate(b.train.read_bytes().splitlines(True))
                                                    if i == 0 or b",PASS," in ln)), r"no defect rows"),
    "two_label_columns": (lambda b: _write(b, b.train.read_bytes().replace(b"boardname", b"label", 1)),
                          r"column\(s\) label twice in its header"),
    "two_label_columns_spaced": (lambda b: _write(b, (HEADER.replace("boardname", " label ") + "a,b,PASS,x,open\n")
                                                  .encode()), r"label twice"),
    "two_input_path_columns": (lambda b: _write(b, (HEADER.strip() + ",input_path\na,b,PASS,x,b,c\n").encode()),
                               r"input_path twice"),
    "megabyte_cell": (lambda b: _edit(b, 0, "label", "x" * 1_000_000), r"unknown label.*more characters"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_csv_is_refused_by_validate(bad, case):
    make, match = CASES[case]
    csv = make(bad)
    r = bad.refused("data", "validate", csv, match=match, one_line=False)
    assert len(r.err) < 3000  # no value is echoed in full
    assert r.err.startswith("error: ")


def test_bad_csv_is_refused_by_training_too(bad):
    """The same reader guards every command: a Latin-1 training CSV stops `model train` before anything is written."""
    _write(bad, (HEADER + "a/test,a/golden,PASS,caf\xe9,b\n").encode("latin-1"))
    bad.refused("model", "train", "--spec", bad.spec, "--train", bad.train, "--val", bad.val, "--out",
                bad.root / "out", match=r"not UTF-8.*row 1")
