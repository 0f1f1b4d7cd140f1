"""validate_dataset: every bad input gives its message; several problems come in one error."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from deftpipe.data import (
    SPLIT_FILES,
    ImageLayout,
    read_dataset,
    resolve_layout,
    validate_dataset,
    write_dataset,
)
from deftpipe.errors import DataError

TRAIN = SPLIT_FILES["train"]


def _edit(ws: Path, fn, rel: str = TRAIN) -> Path:
    csv = ws / rel
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    fn(df).to_csv(csv, index=False)
    return csv


def test_clean_split_returns_normalised_frame(ws_copy):
    csv = _edit(ws_copy, lambda d: d.assign(label=d["label"].str.replace("PASS", " pass ")))
    df = validate_dataset(csv)
    assert set(df["label"]) >= {"PASS", "open"}


def test_missing_column(ws_copy):
    csv = _edit(ws_copy, lambda d: d.drop(columns=["golden_path"]))
    with pytest.raises(DataError, match=r"training_set.csv: missing column\(s\) golden_path"):
        validate_dataset(csv)


def test_empty_split(ws_copy):
    csv = _edit(ws_copy, lambda d: d.iloc[:0])
    with pytest.raises(DataError, match="has a header but no rows; an empty split cannot be used"):
        validate_dataset(csv)


def test_a_row_of_only_empty_cells_is_a_blank_line(tmp_path):
    # found by the property test: ",,," (a spreadsheet's blank row) was read as a row of empty cells
    csv = tmp_path / "y.csv"
    csv.write_text("input_path,golden_path,label,object_name\n,,,\n t , g ,PASS, 0 \n , , , \n")
    df = read_dataset(csv)
    assert list(df["object_name"]) == ["0"] and list(df.index) == [0]
    csv.write_text("input_path,golden_path,label,object_name\n,,,\n\n , ,,\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        read_dataset(csv)


def test_missing_image(ws_copy):
    df = read_dataset(ws_copy / TRAIN)
    row = df.iloc[4]
    (ws_copy / "images" / row["input_path"] / f"{row['object_name']}.png").unlink()
    with pytest.raises(DataError, match=rf"missing image \(1\): row 5 test .*{row['object_name']}.png"):
        validate_dataset(ws_copy / TRAIN)


def test_unreadable_image(ws_copy):
    row = read_dataset(ws_copy / TRAIN).iloc[2]
    (ws_copy / "images" / row["golden_path"] / f"{row['object_name']}.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"unreadable image \(1\): row 3 golden .* — replace the file"):
        validate_dataset(ws_copy / TRAIN)


def test_truncated_image(ws_copy):
    row = read_dataset(ws_copy / TRAIN).iloc[0]
    f = ws_copy / "images" / row["input_path"] / f"{row['object_name']}.png"
    f.write_bytes(f.read_bytes()[:60])
    with pytest.raises(DataError, match=r"unreadable image \(1\): row 1 test"):
        validate_dataset(ws_copy / TRAIN)


def test_an_image_broken_after_a_clean_check_is_caught_next_time(ws_copy):
    """The decode memo (DEFT re-validates its growing set every iteration) must not hide a change."""
    validate_dataset(ws_copy / TRAIN)  # every image decoded once and remembered
    row = read_dataset(ws_copy / TRAIN).iloc[1]
    f = ws_copy / "images" / row["input_path"] / f"{row['object_name']}.png"
    f.write_bytes(f.read_bytes()[:60])
    with pytest.raises(DataError, match=r"unreadable image \(1\): row 2 test"):
        validate_dataset(ws_copy / TRAIN)
    f.unlink()
    with pytest.raises(DataError, match=r"missing image \(1\): row 2 test"):
        validate_dataset(ws_copy / TRAIN)


def test_path_escaping_the_dataset_root(ws_copy, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(ws_copy / "images" / "train_board01", outside)

    def escape(d):
        d.loc[0, "input_path"] = "../../outside/test"
        d.loc[1, "golden_path"] = str(outside / "golden")  # absolute
        return d

    csv = _edit(ws_copy, escape)
    with pytest.raises(DataError, match=r"path escapes the dataset root \(2\): row 1 test .*row 2 golden"):
        validate_dataset(csv)


def test_paths_into_the_workspace_results_are_allowed(ws_copy):
    # generated images live under <ws>/results/..., reachable as ../results/... from images/
    gen = ws_copy / "results" / "run_1" / "iter1" / "sdg"
    shutil.copytree(ws_copy / "images" / "train_board01", gen)
    csv = _edit(ws_copy, lambda d: d.assign(
        input_path=d["input_path"].str.replace("train_board01/", "../results/run_1/iter1/sdg/"),
        golden_path=d["golden_path"].str.replace("train_board01/", "../results/run_1/iter1/sdg/")))
    assert len(validate_dataset(csv)) == 200


def test_unknown_label(ws_copy):
    csv = _edit(ws_copy, lambda d: d.assign(label=d["label"].where(d.index != 16, "scratchh")))
    with pytest.raises(DataError, match=r"unknown label \(1\): row 17 label 'scratchh' — known: .*open.*; fix the label"):
        validate_dataset(csv)
    assert len(validate_dataset(csv, known_labels=["PASS", "open", "short", "mousebite", "spur", "copper",
                                                   "pin-hole", "scratchh"])) == 200


def test_empty_class(ws_copy):
    csv = _edit(ws_copy, lambda d: d[d["label"] == "PASS"])
    with pytest.raises(DataError, match=r"empty class \(1\): no defect rows"):
        validate_dataset(csv)
    assert len(validate_dataset(csv, require_both_classes=False)) == 160


def test_duplicate_rows(ws_copy):
    csv = _edit(ws_copy, lambda d: pd.concat([d, d.iloc[[3, 7]]], ignore_index=True))
    with pytest.raises(DataError, match=r"duplicate row \(2\): row 201 .*; row 202 .* — remove the repeated rows"):
        validate_dataset(csv)


def test_overlap_with_validation_and_kpi(ws_copy):
    val = read_dataset(ws_copy / SPLIT_FILES["val"])
    csv = _edit(ws_copy, lambda d: pd.concat([d, val.iloc[:3].drop(columns=[])], ignore_index=True))
    with pytest.raises(DataError, match=r"overlap with validation \(3\).*a row may be in only one split"):
        validate_dataset(csv, others={"validation": ws_copy / SPLIT_FILES["val"],
                                      "kpi": ws_copy / SPLIT_FILES["kpi"]})


def test_every_problem_class_in_one_error_and_input_untouched(ws_copy):
    def break_all(d):
        d.loc[0, "label"] = "bogus"
        d.loc[1, "object_name"] = "no_such_object"
        d.loc[2, "input_path"] = "../../etc"
        return pd.concat([d, d.iloc[[5]]], ignore_index=True)

    csv = _edit(ws_copy, break_all)
    before = hashlib.sha1(csv.read_bytes()).hexdigest()
    with pytest.raises(DataError) as info:
        validate_dataset(csv)
    msg = str(info.value)
    for kind in ("unknown label", "missing image", "path escapes the dataset root", "duplicate row"):
        assert kind in msg
    assert msg.startswith(f"{csv}: 4 problem class(es)")
    assert hashlib.sha1(csv.read_bytes()).hexdigest() == before


def test_many_rows_of_one_problem_are_summarised(ws_copy):
    csv = _edit(ws_copy, lambda d: d.assign(object_name=d["object_name"] + "_x"))
    with pytest.raises(DataError, match=r"missing image \(400\): .* and 397 more"):
        validate_dataset(csv)


def test_images_dir_defaults_to_the_workspace(ws_copy, tmp_path):
    moved = tmp_path / "elsewhere.csv"
    shutil.copy(ws_copy / TRAIN, moved)
    with pytest.raises(DataError, match="not inside a deftpipe workspace .* pass --images-dir DIR"):
        validate_dataset(moved)
    assert len(validate_dataset(moved, images_dir=ws_copy / "images")) == 200
    with pytest.raises(DataError, match="images folder .*nope does not exist"):
        validate_dataset(moved, images_dir=tmp_path / "nope")


def test_lighting_suffix_and_extension_from_layout(ws_copy):
    df = read_dataset(ws_copy / TRAIN)
    df = pd.concat([df[df["label"] == "PASS"].iloc[:8], df[df["label"] != "PASS"].iloc[:2]])
    for _, r in df.iterrows():
        for folder in (r["input_path"], r["golden_path"]):
            src = ws_copy / "images" / folder / f"{r['object_name']}.png"
            src.rename(src.with_name(f"{r['object_name']}_top.png"))
    csv = ws_copy / "train" / "lit.csv"
    write_dataset(df, csv)
    layout = ImageLayout.create(ws_copy / "images", ".png", ("top",))
    assert len(validate_dataset(csv, layout=layout)) == 10
    with pytest.raises(DataError, match=r"missing image \(20\)"):
        validate_dataset(csv)  # the workspace spec has no input_map: no suffix expected
    assert resolve_layout(csv).lights == ()
