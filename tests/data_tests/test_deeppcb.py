"""DeepPCB importer: annotation parsing, group split, crop rules, leak-free workspace, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deftpipe.data import (
    DEFECT_CLASSES,
    PASS,
    SPLIT_FILES,
    dataset_stats,
    find_leaks,
    import_deeppcb,
    read_dataset,
)
from deftpipe.data._deeppcb_scan import assign_groups, discover_pairs, parse_annotation
from deftpipe.errors import DataError
from deftpipe.spec import load_spec

# ---------------------------------------------------------------- annotations

def test_annotation_without_final_newline_comma_or_space_separated(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("10 20 30 40 1\n\n  5,6,15,16,6\r\n100\t100 110 112 3")
    boxes = parse_annotation(f)
    assert [(b.x1, b.y1, b.x2, b.y2, b.label) for b in boxes] == [
        (10, 20, 30, 40, "open"), (5, 6, 15, 16, "pin-hole"), (100, 100, 110, 112, "mousebite")]


def test_annotation_boxes_are_clipped_to_the_image(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("630 -5 700 10 2\n")
    (b,) = parse_annotation(f, 640, 640)
    assert (b.x1, b.y1, b.x2, b.y2, b.label) == (630, 0, 640, 10, "short")


@pytest.mark.parametrize("line,match", [
    ("10 20 30 1", r"a.txt line 2: expected 'x1 y1 x2 y2 type' \(5 integers\), got '10 20 30 1'"),
    ("10 20 30 40 9", r"a.txt line 2: defect type 9 is not one of 1..6"),
    ("a b c d e", r"a.txt line 2: expected 'x1 y1 x2 y2 type'"),
])
def test_bad_annotation_line(tmp_path, line, match):
    f = tmp_path / "a.txt"
    f.write_text(f"1 1 5 5 1\n{line}\n")
    with pytest.raises(DataError, match=match):
        parse_annotation(f)


# ---------------------------------------------------------------- discovery and split

def test_groups_are_discovered(fake_deeppcb):
    groups = discover_pairs(fake_deeppcb)
    assert list(groups) == ["10000", "20000", "30000", "40000", "50000"]
    assert [len(v) for v in groups.values()] == [4, 3, 3, 2, 2]
    assert discover_pairs(fake_deeppcb / "PCBData").keys() == groups.keys()


def test_missing_annotation_is_named(fake_deeppcb, tmp_path):
    (fake_deeppcb / "PCBData" / "group20000" / "20000_not" / "20000001.txt").unlink()
    with pytest.raises(DataError, match=r"incomplete: missing annotation .*20000_not/20000001.txt "
                                        r"\(for 20000001_test.jpg\); restore the files"):
        discover_pairs(fake_deeppcb)
    with pytest.raises(DataError, match="missing annotation"):
        import_deeppcb(fake_deeppcb, tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


def test_not_a_deeppcb_folder(tmp_path):
    with pytest.raises(DataError, match=r"is not a DeepPCB checkout: expected .*/PCBData/group\*/"):
        discover_pairs(tmp_path)


def test_default_assignment_is_seeded_and_holds_out_kpi_groups(fake_deeppcb):
    groups = discover_pairs(fake_deeppcb)
    a = assign_groups(groups, seed=0)
    assert a == assign_groups(groups, seed=0)
    assert a["kpi"] and a["train"]
    assert "10000" in a["train"]  # the biggest group always trains
    assert sorted(g for v in a.values() for g in v) == sorted(groups)


def test_user_assignment_and_its_errors(fake_deeppcb):
    groups = discover_pairs(fake_deeppcb)
    a = assign_groups(groups, kpi=["group40000"], val=["30000"], pool=["50000"])
    assert a == {"train": ["10000", "20000"], "val": ["30000"], "kpi": ["40000"], "pool": ["50000"]}
    with pytest.raises(DataError, match="--kpi-groups: board group '99999' not found; groups in this "
                                        "checkout: 10000, 20000, 30000, 40000, 50000"):
        assign_groups(groups, kpi=["99999"])
    with pytest.raises(DataError, match="'30000' is given to both --kpi-groups and --val-groups"):
        assign_groups(groups, kpi=["30000"], val=["30000"])
    with pytest.raises(DataError, match="no board group is left for training"):
        assign_groups(groups, kpi=["10000", "20000"], val=["30000"], pool=["40000", "50000"])
    with pytest.raises(DataError, match="'40000' is given to both --kpi-groups and --holdout-groups"):
        assign_groups(groups, kpi=["40000"], holdout=["40000"])


def test_holdout_groups_are_used_by_no_other_split(fake_deeppcb):
    groups = discover_pairs(fake_deeppcb)
    a = assign_groups(groups, seed=3, holdout=["group30000"])
    assert a["holdout"] == ["30000"]
    assert all("30000" not in v for s, v in a.items() if s != "holdout")
    # the other splits are what they would be on a checkout without that group
    assert {s: v for s, v in a.items() if s != "holdout"} == assign_groups(
        {g: p for g, p in groups.items() if g != "30000"}, seed=3)


def test_import_with_holdout_groups_writes_a_leak_free_holdout(fake_deeppcb, tmp_path):
    ws = import_deeppcb(fake_deeppcb, tmp_path / "ws", crop_size=32, seed=1, pass_ratio=2.0,
                        kpi_groups=["20000"], holdout_groups=["50000"], workers=1)
    holdout = read_dataset(ws / SPLIT_FILES["holdout"])
    assert set(holdout["boardname"]) == {"50000"} and (holdout["label"] != PASS).any()
    others = [ws / rel for s, rel in SPLIT_FILES.items() if s != "holdout"]
    assert all("50000" not in set(read_dataset(c)["boardname"]) for c in others)
    assert find_leaks([*others, ws / SPLIT_FILES["holdout"]]).n_overlapping == 0


# ---------------------------------------------------------------- the import

@pytest.fixture
def fake_ws(fake_deeppcb, tmp_path):
    lines: list[str] = []
    ws = import_deeppcb(fake_deeppcb, tmp_path / "ws", crop_size=32, seed=1, pass_ratio=2.0,
                        kpi_groups=["20000"], workers=1, log=lines.append, context=1)
    return ws, lines


def test_default_import_stores_the_window_with_its_neighbourhood(fake_deeppcb, tmp_path):
    ws = import_deeppcb(fake_deeppcb, tmp_path / "ws", crop_size=32, seed=1, kpi_groups=["20000"], workers=1)
    spec = load_spec(ws / "specs" / "baseline_spec.yaml")
    assert (spec.model.context, spec.model.input_size, spec.model.flip_tta) == (2, 64, True)
    row = read_dataset(ws / SPLIT_FILES["kpi"]).iloc[0]
    with Image.open(ws / "images" / row["input_path"] / f"{row['object_name']}.png") as im:
        assert im.size == (64, 64)


def test_import_writes_a_valid_leak_free_workspace(fake_ws):
    ws, lines = fake_ws
    assert any("--kpi-groups 20000" in line for line in lines)  # the assignment is printed
    assert not (ws / SPLIT_FILES["holdout"]).exists()  # no --holdout-groups, no holdout
    frames = {s: read_dataset(ws / rel) for s, rel in SPLIT_FILES.items() if s != "holdout"}
    assert set(frames["kpi"]["boardname"]) == {"20000"}
    assert "20000" not in set(frames["train"]["boardname"])
    report = find_leaks([ws / SPLIT_FILES[s] for s in frames])
    assert report.n_overlapping == 0
    for df in frames.values():
        n_fail = int((df["label"] != PASS).sum())
        assert n_fail > 0 and 0 < (df["label"] == PASS).sum() <= 2 * n_fail
    with Image.open(ws / "images" / "20000" / "test" / f"{frames['kpi'].iloc[0]['object_name']}.png") as im:
        assert im.size == (32, 32)


def test_fail_crops_hold_their_box_and_pass_crops_touch_none(fake_deeppcb, fake_ws):
    ws, _ = fake_ws
    df = read_dataset(ws / SPLIT_FILES["train"])
    for _, r in df.iterrows():
        src = fake_deeppcb / "PCBData" / (r["source_image"].rsplit("/", 1)[0])
        stem = r["source_image"].rsplit("/", 1)[1]
        boxes = parse_annotation(src.with_name(src.name + "_not") / f"{stem}.txt", 160, 160)
        x, y = int(r["crop_x"]), int(r["crop_y"])
        if r["label"] == PASS:
            assert r["defect_box"] == ""
            assert not any(x < b.x2 + 2 and b.x1 - 2 < x + 32 and y < b.y2 + 2 and b.y1 - 2 < y + 32 for b in boxes)
            golden = np.asarray(Image.open(ws / "images" / r["golden_path"] / f"{r['object_name']}.png"))
            assert 0.08 <= (golden < 128).mean() <= 0.92  # never featureless
        else:
            x1, y1, x2, y2 = map(int, r["defect_box"].split())
            assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32
            assert any(b.label == r["label"] and (b.x1 - x, b.y1 - y, b.x2 - x, b.y2 - y) == (x1, y1, x2, y2)
                       for b in boxes)  # the whole box is inside the crop


def test_oversized_box_is_centred_on_the_changed_pixels(tmp_path):
    src = tmp_path / "dp"
    for g in ("1", "2", "3", "4"):
        d = src / "PCBData" / f"group{g}"
        (d / g).mkdir(parents=True)
        (d / f"{g}_not").mkdir()
        temp = np.full((160, 160), 255, np.uint8)
        temp[:, 40:44] = 0
        temp[100:104, :] = 0
        test = temp.copy()
        test[50:56, 120:126] = 0  # the real change sits at the right end of a 110 px wide box
        Image.fromarray(temp).save(d / g / f"{g}000_temp.jpg")
        Image.fromarray(test).save(d / g / f"{g}000_test.jpg")
        (d / f"{g}_not" / f"{g}000.txt").write_text("20 45 130 60 2")
    ws = import_deeppcb(src, tmp_path / "ws", crop_size=64, context=1, kpi_groups=["2"], val_groups=["3"],
                        pool_groups=["4"], workers=1, pass_ratio=1.0)
    df = read_dataset(ws / SPLIT_FILES["kpi"])
    (fail,) = [r for _, r in df.iterrows() if r["label"] == "short"]
    x, y = int(fail["crop_x"]), int(fail["crop_y"])
    assert x <= 120 and 126 <= x + 64  # the changed pixels are inside the crop
    assert abs(x - 91) <= 2  # centred on their centroid (x = 122.5; JPEG noise moves it a little)
    assert y <= 45 and 60 <= y + 64  # the box fits vertically: fully inside
    x1, _, x2, _ = map(int, fail["defect_box"].split())
    assert (x1, x2) == (0, 130 - x)  # the part of the box inside the crop


def test_same_seed_same_workspace(fake_deeppcb, tmp_path):
    a = import_deeppcb(fake_deeppcb, tmp_path / "a", crop_size=32, seed=3, workers=2)
    b = import_deeppcb(fake_deeppcb, tmp_path / "b", crop_size=32, seed=3, workers=1)
    for rel in SPLIT_FILES.values():
        if rel.startswith("holdout"):  # no --holdout-groups: neither has one
            assert not (a / rel).exists() and not (b / rel).exists()
            continue
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_pass_ratio_must_be_positive(fake_deeppcb, tmp_path):
    with pytest.raises(DataError, match=r"--pass-ratio must be > 0 \(got 0.0\)"):
        import_deeppcb(fake_deeppcb, tmp_path / "ws", pass_ratio=0.0)
    assert not (tmp_path / "ws").exists()


def test_crop_larger_than_the_image_is_refused_without_partial_output(fake_deeppcb, tmp_path):
    with pytest.raises(DataError, match=r"at least 200x200 \(--crop-size\)"):
        import_deeppcb(fake_deeppcb, tmp_path / "ws", crop_size=200, workers=1)
    assert list(tmp_path.iterdir()) == [fake_deeppcb]


# ---------------------------------------------------------------- real DeepPCB (skipped when absent)

@pytest.mark.deeppcb
def test_real_deeppcb_subset_import_is_leak_free_with_every_class(deeppcb_subset, tmp_path):
    lines: list[str] = []
    ws = import_deeppcb(deeppcb_subset, tmp_path / "ws", log=lines.append)
    assert any(line.startswith("split by board group: --kpi-groups") for line in lines)
    splits = {s: rel for s, rel in SPLIT_FILES.items() if s != "holdout"}  # no --holdout-groups: no holdout
    assert not (ws / SPLIT_FILES["holdout"]).exists()
    csvs = [ws / rel for rel in splits.values()]
    report = find_leaks(csvs)
    assert len(report.pairs) == 6
    assert all(p.n_rows == 0 for p in report.pairs), report.lines()
    train, kpi = (dataset_stats(ws / SPLIT_FILES[s]) for s in ("train", "kpi"))
    for s in (train, kpi):
        assert s["n_fail"] > 0 and 3.0 <= s["pass_fail_ratio"] <= 4.0
    assert all(train["labels"].get(c, 0) > 0 for c in DEFECT_CLASSES)
    boards = {s: set(pd.read_csv(ws / rel, dtype=str)["boardname"]) for s, rel in splits.items()}
    assert not boards["kpi"] & boards["train"]


def test_context_and_alignment_cut_centred_aligned_crops(tmp_path, make_fake_deeppcb):
    """A test image 2 px down and 3 px left of its template: with --align the stored PASS crops
    match their templates; with --context 2 they are twice the crop, centred on the window."""
    src = make_fake_deeppcb(tmp_path / "dp", {"10000": 3, "20000": 2, "30000": 2, "40000": 2}, size=200)
    for test in (src / "PCBData").glob("group*/*/*_test.jpg"):
        img = np.asarray(Image.open(test))
        Image.fromarray(np.roll(img, (2, -3), (0, 1))).save(test, quality=95)
        ann = test.parent.with_name(test.parent.name + "_not") / test.name.replace("_test.jpg", ".txt")
        boxes = [list(map(int, line.split())) for line in ann.read_text().splitlines()]
        ann.write_text("\n".join(f"{x1 - 6} {y1 - 6} {x2 + 6} {y2 + 6} {t}" for x1, y1, x2, y2, t in boxes))

    def pass_mismatch(ws, centre=slice(None)):  # in the PASS window (the context may hold defects)
        df = read_dataset(ws / SPLIT_FILES["train"])
        out = []
        for _, r in df[df["label"] == PASS].iterrows():
            g = np.asarray(Image.open(ws / "images" / r["golden_path"] / f"{r['object_name']}.png")) < 128
            t = np.asarray(Image.open(ws / "images" / r["input_path"] / f"{r['object_name']}.png")) < 128
            out.append((g[centre, centre] != t[centre, centre]).mean())
        return np.array(out), df

    kw = dict(crop_size=32, kpi_groups=["20000"], val_groups=["30000"], pool_groups=["40000"], workers=1)
    plain, _ = pass_mismatch(import_deeppcb(src, tmp_path / "plain", context=1, **kw))
    aligned, _ = pass_mismatch(import_deeppcb(src, tmp_path / "aligned", align=True, context=1, **kw))
    assert plain.mean() > 0.02 and aligned.max() < 0.01
    ws = import_deeppcb(src, tmp_path / "ctx", align=True, context=2, **kw)
    ctx, df = pass_mismatch(ws, slice(16, 48))
    assert ctx.max() < 0.01
    spec = (ws / "specs" / "baseline_spec.yaml").read_text()
    assert "input_size: 64" in spec and "context: 2" in spec and "flip_tta: true" in spec
    fail = df[df["label"] != PASS].iloc[0]
    x1, y1, x2, y2 = map(int, fail["defect_box"].split())
    assert 16 <= x1 < x2 <= 48 and 16 <= y1 < y2 <= 48  # the box lies in the centre window
    with pytest.raises(DataError, match="--context must be 1-4"):
        import_deeppcb(src, tmp_path / "bad", context=5, **kw)
