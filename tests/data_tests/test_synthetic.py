"""The built-in synthetic workspace: layout, class plan, determinism, leak-free splits, real defects."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deftpipe.config import load_config
from deftpipe.data import (
    DEFECT_CLASSES,
    PASS,
    SPLIT_FILES,
    _draw,
    dataset_stats,
    find_leaks,
    make_synthetic_workspace,
    read_dataset,
    validate_dataset,
)
from deftpipe.data._synthetic import SIZES, class_plan
from deftpipe.errors import DataError
from deftpipe.spec import load_spec


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_workspace_layout_and_configs(tiny_ws):
    for rel in SPLIT_FILES.values():
        assert (tiny_ws / rel).is_file()
    cfg = load_config(tiny_ws)
    spec = load_spec(tiny_ws / cfg.data.spec)
    assert spec.model.input_size == 32
    assert spec.dataset.classify.image_ext == ".png"
    assert Path(spec.dataset.classify.images_dir) == (tiny_ws / "images").resolve()
    assert spec.dataset.classify.test_csv is None  # the KPI set is not handed to training
    df = read_dataset(tiny_ws / SPLIT_FILES["train"])
    row = df.iloc[0]
    golden = tiny_ws / "images" / row["golden_path"] / f"{row['object_name']}.png"
    test = tiny_ws / "images" / row["input_path"] / f"{row['object_name']}.png"
    assert golden != test
    for f in (golden, test):
        with Image.open(f) as im:
            assert im.size == (32, 32) and im.mode == "L"


def test_split_sizes_ratio_and_rare_classes(tiny_ws):
    stats = {name: dataset_stats(tiny_ws / rel) for name, rel in SPLIT_FILES.items()}
    for name, s in stats.items():
        assert s["rows"] == SIZES["tiny"].rows[name]
        assert 3.5 <= s["pass_fail_ratio"] <= 4.5
    train = stats["train"]["labels"]
    for rare in ("short", "pin-hole"):
        assert 1 <= train[rare] <= 3  # genuinely rare in base training ...
        assert train[rare] * 3 <= train["open"]
        for held_out in ("kpi", "pool"):  # ... but present where the loop can find and measure them
            assert stats[held_out]["labels"][rare] >= 3
    for s in stats.values():
        assert set(s["labels"]) == {PASS, *DEFECT_CLASSES}


def test_splits_use_disjoint_boards_and_never_leak(tiny_ws):
    boards = {name: set(read_dataset(tiny_ws / rel)["boardname"]) for name, rel in SPLIT_FILES.items()}
    names = list(boards)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not boards[a] & boards[b]
    assert len(boards["train"]) >= 2
    report = find_leaks([tiny_ws / rel for rel in SPLIT_FILES.values()])
    assert report.n_overlapping == 0 and len(report.pairs) == 10  # 5 splits, the holdout included
    assert all(v == 0 for v in report.unhashed.values())


def test_every_split_validates(tiny_ws):
    for rel in SPLIT_FILES.values():
        assert len(validate_dataset(tiny_ws / rel)) > 0


def test_progress_counts_every_row_up_to_the_total(tmp_path):
    calls = []
    ws = make_synthetic_workspace(tmp_path / "p", seed=5, size="tiny", progress=lambda d, t: calls.append((d, t)))
    n_rows = sum(len(read_dataset(ws / rel)) for rel in SPLIT_FILES.values())
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(calls) > 3
    assert calls[-1] == (n_rows, n_rows)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_synthetic_workspace(tmp_path / "a", seed=5, size="tiny")
    b = make_synthetic_workspace(tmp_path / "b", seed=5, size="tiny")
    c = make_synthetic_workspace(tmp_path / "c", seed=6, size="tiny")
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert da == db
    assert da.keys() == dc.keys() and da != dc


def test_fail_pairs_differ_more_than_pass_pairs(tiny_ws):
    df = read_dataset(tiny_ws / SPLIT_FILES["pool"])

    def max_blob(row) -> float:  # largest local difference, robust to the global nuisances
        g = np.asarray(Image.open(tiny_ws / "images" / row["golden_path"] / f"{row['object_name']}.png"), float)
        t = np.asarray(Image.open(tiny_ws / "images" / row["input_path"] / f"{row['object_name']}.png"), float)
        return float(np.abs(t - g).mean())

    fail = np.mean([max_blob(r) for _, r in df[df["label"] != PASS].iterrows()])
    ok = np.mean([max_blob(r) for _, r in df[df["label"] == PASS].iterrows()])
    assert fail > ok


def test_defects_are_blobs_of_several_px_and_pass_nuisances_never_are(tiny_ws):
    """Every common-class defect changes a >= 2x2 px block by >= 110 grey levels (rare classes, drawn
    at 60-80 % contrast: >= 80); the nuisances of a PASS pair (<= 1 px misregistration, noise,
    brightness, surface marks) never change even a 3x3 block by 110."""
    from scipy import ndimage

    df = read_dataset(tiny_ws / SPLIT_FILES["pool"])

    def strongest_block(row, k: int) -> float:
        g, t = (np.asarray(Image.open(tiny_ws / "images" / row[c] / f"{row['object_name']}.png"), float)
                for c in ("golden_path", "input_path"))
        return float(ndimage.minimum_filter(np.abs(t - g), k).max())

    fail = df[df["label"] != PASS]
    rare = fail["label"].isin(["short", "pin-hole"])
    assert min(strongest_block(r, 2) for _, r in fail[~rare].iterrows()) >= 110
    assert min(strongest_block(r, 2) for _, r in fail[rare].iterrows()) >= 80
    assert max(strongest_block(r, 3) for _, r in df[df["label"] == PASS].iterrows()) < 110
    wide = fail[~fail["label"].isin(["short", "mousebite", "pin-hole"])]  # thin, faint or edge defects aside,
    assert min(strongest_block(r, 3) for _, r in wide.iterrows()) >= 110  # defects are 3+ px wide


def test_misregistration_is_at_most_one_pixel():
    rng = np.random.default_rng(0)
    shifts = np.array([_draw.draw_shift(rng) for _ in range(2000)])
    assert np.abs(shifts).max() <= _draw.SS  # mask pixels: 1 output pixel
    assert (np.abs(shifts).max(axis=1) <= 1).mean() > 0.6  # mostly sub-pixel


def test_workspace_spec_is_tuned_to_learn_the_data(tmp_path):
    from deftpipe.data._synthetic import synthetic_spec

    for size in SIZES:
        spec = synthetic_spec(size)
        assert spec.model.input_size == SIZES[size].image_size
        assert spec.train.num_epochs == 2 and spec.train.augment.shift_px == 0
    assert synthetic_spec("tiny").model.fusion == "multiscale"  # the model tests' reference net
    assert synthetic_spec("small").model.fusion == "early_diff" and synthetic_spec("small").model.width == 8


@pytest.mark.parametrize("label", DEFECT_CLASSES)
def test_each_defect_class_is_what_it_says(label):
    rng = np.random.default_rng(1)
    style = _draw.draw_style(rng, 512)
    board = _draw.draw_board(rng, style, 512)
    from scipy import ndimage

    from deftpipe.data._synthetic import _window

    done = 0
    for _ in range(60):
        m = _window(rng, board, 64)
        out = _draw.add_defect(rng, m, label)
        if out is None:
            continue
        changed = out != m
        assert changed[_draw.MARGIN:-_draw.MARGIN, _draw.MARGIN:-_draw.MARGIN].sum() >= _draw.MIN_CHANGED
        added, removed = (out & ~m).sum(), (m & ~out).sum()
        n_before, n_after = ndimage.label(m)[1], ndimage.label(out)[1]
        if label in ("open", "mousebite", "pin-hole"):
            assert added == 0 and removed > 0
        else:
            assert removed == 0 and added > 0
        if label == "open":
            assert n_after > n_before
        if label == "short":
            assert n_after < n_before
        if label == "pin-hole":  # a hole inside copper: the copper stays one piece
            assert n_after == n_before
        done += 1
    assert done >= 5


def test_class_plan_is_pass_dominant():
    labels = class_plan("train", 800)
    assert labels.count(PASS) == 640
    assert labels.count("short") == labels.count("pin-hole") == 4


def test_existing_non_empty_folder_is_refused(tiny_ws):
    before = _tree_digest(tiny_ws)
    with pytest.raises(DataError, match="already exists and is not empty"):
        make_synthetic_workspace(tiny_ws, size="tiny")
    assert _tree_digest(tiny_ws) == before


def test_unknown_size(tmp_path):
    with pytest.raises(DataError, match="unknown synthetic size 'huge'"):
        make_synthetic_workspace(tmp_path / "ws", size="huge")
    assert not (tmp_path / "ws").exists()


def test_empty_folder_is_accepted_and_no_temp_left(tmp_path):
    (tmp_path / "ws").mkdir()
    make_synthetic_workspace(tmp_path / "ws", size="tiny")
    assert [p.name for p in tmp_path.iterdir()] == ["ws"]


def test_workspace_ships_a_search_space_that_suits_the_data(tiny_ws):
    from deftpipe.automl import load_search_space

    cfg = load_config(tiny_ws)
    assert cfg.automl.phase1.search_space == cfg.automl.phase3.search_space == "specs/search_space.yaml"
    space = load_search_space(tiny_ws / cfg.automl.phase1.search_space)
    shift = next(p for p in space.params if p.name == "train.augment.shift_px")
    assert (shift.low, shift.high) == (0, 1)  # the pairs already carry their own misregistration
