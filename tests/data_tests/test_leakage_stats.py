"""find_leaks (identity and image content) and dataset_stats."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from deftpipe.data import SPLIT_FILES, dataset_stats, find_leaks, read_dataset, stats_table, write_dataset
from deftpipe.errors import DataError


def test_clean_workspace_has_no_leaks(tiny_ws):
    report = find_leaks([tiny_ws / SPLIT_FILES["train"], tiny_ws / SPLIT_FILES["kpi"]])
    assert report.n_overlapping == 0
    assert report.lines()[0].endswith("0 overlapping rows (0 by identity, 0 by image content)")


def test_identity_overlap_is_found(ws_copy):
    train, kpi = read_dataset(ws_copy / SPLIT_FILES["train"]), read_dataset(ws_copy / SPLIT_FILES["kpi"])
    write_dataset(pd.concat([kpi, train.iloc[:2]], ignore_index=True), ws_copy / SPLIT_FILES["kpi"])
    report = find_leaks([ws_copy / SPLIT_FILES["train"], ws_copy / SPLIT_FILES["kpi"]])
    assert report.n_overlapping == 2
    (pair,) = report.pairs
    assert (pair.by_identity, pair.by_content, pair.n_rows) == (2, 2, 2)
    assert "row 101" in pair.examples[0]


def test_copied_image_under_a_new_name_is_a_leak(ws_copy):
    train = read_dataset(ws_copy / SPLIT_FILES["train"])
    row = train.iloc[0]
    for kind, folder in (("test", row["input_path"]), ("golden", row["golden_path"])):
        dst = ws_copy / "images" / "kpi_board01" / kind / "renamed_copy.png"
        shutil.copy(ws_copy / "images" / folder / f"{row['object_name']}.png", dst)
    kpi = read_dataset(ws_copy / SPLIT_FILES["kpi"])
    copy = {"input_path": "kpi_board01/test", "golden_path": "kpi_board01/golden", "label": row["label"],
            "object_name": "renamed_copy", "boardname": "kpi_board01"}
    write_dataset(pd.concat([kpi, pd.DataFrame([copy])], ignore_index=True), ws_copy / SPLIT_FILES["kpi"])
    report = find_leaks([ws_copy / SPLIT_FILES[s] for s in ("train", "val", "kpi")])
    assert report.n_overlapping == 1
    leak = [p for p in report.pairs if p.n_rows][0]
    assert leak.b.endswith("testing_set.csv") and (leak.by_identity, leak.by_content) == (0, 1)
    assert not find_leaks([ws_copy / SPLIT_FILES["train"], ws_copy / SPLIT_FILES["kpi"]],
                          hash_images=False).n_overlapping


def test_an_image_rewritten_after_hashing_is_hashed_again(ws_copy):
    """The hash memo is keyed by size and mtime: overwrite a KPI image with a train image's bytes
    after a clean check and the leak must appear."""
    csvs = [ws_copy / SPLIT_FILES[s] for s in ("train", "kpi")]
    assert find_leaks(csvs).n_overlapping == 0  # every image hashed once and remembered
    t, k = read_dataset(csvs[0]).iloc[0], read_dataset(csvs[1]).iloc[0]
    for col in ("input_path", "golden_path"):
        src = ws_copy / "images" / t[col] / f"{t['object_name']}.png"
        (ws_copy / "images" / k[col] / f"{k['object_name']}.png").write_bytes(src.read_bytes())
    report = find_leaks(csvs)
    assert report.n_overlapping == 1 and report.pairs[0].by_content == 1


def test_missing_images_are_counted_not_fatal(ws_copy):
    row = read_dataset(ws_copy / SPLIT_FILES["val"]).iloc[0]
    (ws_copy / "images" / row["input_path"] / f"{row['object_name']}.png").unlink()
    report = find_leaks([ws_copy / SPLIT_FILES["train"], ws_copy / SPLIT_FILES["val"]])
    assert report.n_overlapping == 0
    assert report.unhashed[str(ws_copy / SPLIT_FILES["val"])] == 1
    assert "compared by identity only" in report.lines()[-1]


def test_csv_outside_a_workspace_needs_images_dir(tiny_ws, tmp_path):
    a = shutil.copy(tiny_ws / SPLIT_FILES["train"], tmp_path / "a.csv")
    with pytest.raises(DataError, match="pass --images-dir DIR"):
        find_leaks([a, tiny_ws / SPLIT_FILES["kpi"]])
    assert find_leaks([a, tiny_ws / SPLIT_FILES["kpi"]], images_dir=tiny_ws / "images").n_overlapping == 0


def test_stats_counts(tiny_ws):
    s = dataset_stats(tiny_ws / SPLIT_FILES["train"])
    assert s["rows"] == 200 and s["n_pass"] == 160 and s["n_fail"] == 40
    assert s["pass_fail_ratio"] == 4.0
    assert list(s["labels"])[:3] == ["PASS", "open", "short"]
    assert sum(s["labels"].values()) == 200
    assert sum(s["boards"].values()) == 200 and len(s["boards"]) == 3
    assert s["boards_by_label"]["train_board01"]["PASS"] > 0
    assert stats_table(s).row_count == len(s["labels"]) + len(s["boards"])


def test_stats_without_defects(tmp_path):
    csv = tmp_path / "x.csv"
    write_dataset(pd.DataFrame({"input_path": ["a"], "golden_path": ["b"], "label": ["pass"],
                                "object_name": ["o"]}), csv)
    s = dataset_stats(csv)
    assert s["labels"] == {"PASS": 1} and s["pass_fail_ratio"] is None and s["boards"] == {"(none)": 1}


def test_digests_are_kept_between_processes(ws_copy, monkeypatch):
    """A new process (memo cleared) reads no file whose digest the store holds; a rewritten file
    is hashed again; a damaged store only costs the reads."""
    import os
    import time

    from deftpipe.data import _digest_store, _file_memo, _leakage
    from deftpipe.data._layout import resolve_layout

    monkeypatch.setattr(_digest_store, "MIN_NEW_TO_SAVE", 1)
    csv = ws_copy / SPLIT_FILES["train"]
    df, layout = read_dataset(csv), resolve_layout(csv, None)
    reads: list[str] = []
    real_sha1 = _leakage._sha1
    monkeypatch.setattr(_leakage, "_sha1", lambda p: reads.append(p) or real_sha1(p))

    def new_process_hashes() -> list:
        _file_memo.clear()
        _digest_store.forget_loaded()
        reads.clear()
        return _leakage.content_hashes(df, layout).tolist()

    first = new_process_hashes()
    assert len(reads) == 2 * len(df)  # nothing stored yet: every file read
    (store,) = (ws_copy / ".deftpipe_cache").glob("sha1_digests_*.npz")  # one per dataset root
    assert new_process_hashes() == first and reads == []
    row = df.iloc[3]
    img = ws_copy / "images" / row["input_path"] / f"{row['object_name']}.png"
    shutil.copy(ws_copy / "images" / row["golden_path"] / f"{row['object_name']}.png", img)
    os.utime(img, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    again = new_process_hashes()
    assert reads == [str(img.resolve())] and again[3] != first[3] and again[:3] == first[:3]
    store.write_bytes(b"not an npz")
    assert new_process_hashes() == again and len(reads) == 2 * len(df)


def test_file_facts_come_back_for_the_right_file_whatever_the_thread_chunking(tmp_path) -> None:
    from deftpipe.data import _file_memo

    paths = []
    for i in range(23):  # not a multiple of any worker count below
        p = tmp_path / f"f{i:02d}.bin"
        p.write_bytes(b"x" * i)
        paths.append(str(p))
    paths.append(str(tmp_path / "missing.bin"))
    for workers in (1, 2, 3, 8, 64):
        _file_memo.clear()
        out = _file_memo.map_files("size-test", paths, lambda p: os.path.getsize(p), keep=lambda v: True,
                                   missing=-1, workers=workers)
        assert [out[p] for p in paths] == [*range(23), -1]
