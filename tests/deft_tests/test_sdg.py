"""SDG: every PCB class and the generic fallback produce readable pairs inside the workspace."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deftpipe.data import ImageLayout, read_dataset
from deftpipe.deft._sdg import generate
from deftpipe.deft._sdg_draw import PCB_CLASSES, copper_is_dark, copper_mask, synthesize


def _targets(labels):
    return [{"target_id": f"t{i:02d}", "group_id": f"g{i}", "kind": "false_alarm" if lb == "PASS" else "escape",
             "label": lb} for i, lb in enumerate(labels, start=1)]


def test_each_class_and_generic_fallback_write_pairs(tiny_ws, tmp_path):
    layout = ImageLayout.create(tiny_ws / "images", ".png")
    out = tiny_ws / "results" / "sdg_test" / "iter1" / "sdg"
    labels = [*PCB_CLASSES, "scratch", "PASS"]
    res = generate(targets=_targets(labels), train=read_dataset(tiny_ws / "train/base/training_set.csv"),
                   layout=layout, out_dir=out, iter_label="iter1", count_per_target=3, hard_pass_per_target=2)
    rows = read_dataset(res.sdg_csv)
    assert res.n_rows == len(rows) >= 3 * len(PCB_CLASSES)
    assert set(rows["label"]) >= {*PCB_CLASSES, "scratch", "PASS"}
    assert rows["input_path"].str.startswith("../results/sdg_test/iter1/sdg/images/").all()
    for _, r in rows.iterrows():
        tests, goldens = layout.row_files(r)
        assert tests[0].is_file() and goldens[0].is_file() and not layout.escapes(tests[0])
    alloc = json.loads(res.allocation_json.read_text())
    gens = {t["label"]: t["generator"] for t in alloc["targets"]}
    assert gens["scratch"] == "generic" and gens["PASS"] == "hard_pass" and gens["short"] == "short"
    r = rows[rows["label"] == "open"].iloc[0]
    t, g = (np.asarray(Image.open(p[0])) for p in layout.row_files(r))
    assert t.shape == g.shape == (32, 32) and np.abs(t.astype(int) - g.astype(int)).mean() > 1.0


def test_target_class_with_no_golden_images_is_skipped_with_reason(tiny_ws, tmp_path):
    layout = ImageLayout.create(tiny_ws / "images", ".png")
    train = read_dataset(tiny_ws / "train/base/training_set.csv")
    only_defects = train[train["label"] != "PASS"]
    res = generate(targets=_targets(["short"]), train=only_defects, layout=layout,
                   out_dir=tiny_ws / "results" / "sdg_none" / "sdg", iter_label="iter1", count_per_target=3,
                   hard_pass_per_target=2)
    assert res.n_rows == 0
    assert res.skipped["t01"].startswith("no golden images for class 'short'")
    alloc = json.loads(res.allocation_json.read_text())
    assert alloc["targets"][0]["skipped_reason"].startswith("no golden images")


@pytest.mark.parametrize("dark_copper", [False, True])
def test_copper_is_the_minority_mode(dark_copper):
    img = np.full((32, 32), 40, np.uint8)
    img[10:14, :] = 200  # one bright trace
    if dark_copper:
        img = 255 - img
    assert copper_is_dark([img]) is dark_copper
    m = copper_mask(img)
    assert m[11, 5] and not m[2, 2]
    wide = img.copy()
    wide[:24] = wide[11, 5]  # a crop that is mostly copper keeps the data set's polarity
    assert copper_mask(wide, dark=dark_copper)[20, 5] and not copper_mask(wide, dark=dark_copper)[28, 5]


def test_synthesize_edits_the_copper():
    img = np.full((32, 32), 40, np.uint8)
    img[8:12, :] = 200
    img[20:24, :] = 200
    rng = np.random.default_rng(0)
    out = synthesize(rng, [img], "short", max_shift=0)
    assert out is not None and (out[0][13:19].astype(int) > 120).any()  # a bridge between the traces


def test_contrast_sets_how_far_the_edit_moves_towards_copper():
    img = np.full((64, 64), 40, np.uint8)
    img[:, 20:44] = 200  # a wide bright copper trace; a pin-hole punches laminate into it
    peaks = {}
    for a in (1.0, 0.5):
        rng = np.random.default_rng(3)
        out = synthesize(rng, [img], "pin-hole", max_shift=0, dark_copper=False, contrast=(a, a))
        assert out is not None
        # the darkest pixel inside the trace (the hole's centre), noise and brightness aside
        peaks[a] = float(out[0][8:56, 24:40].min())
    assert peaks[1.0] < 80  # a clean hole reaches the laminate grey (40)
    assert 90 < peaks[0.5] < 160  # half contrast: about halfway between copper (200) and laminate


@pytest.mark.parametrize("bad", [(0.0, 1.0), (0.8, 0.5), (0.5, 1.2)])
def test_sdg_contrast_outside_0_1_is_refused_with_the_field_named(tmp_path, bad):
    from deftpipe.config import load_config
    from deftpipe.errors import SpecError

    (tmp_path / "pipeline.yaml").write_text(f"deft:\n  sdg:\n    contrast: [{bad[0]}, {bad[1]}]\n")
    with pytest.raises(SpecError, match="contrast"):
        load_config(tmp_path)


def test_copper_share_is_remembered_only_for_images_nobody_can_change() -> None:
    from deftpipe.deft import _sdg_draw

    img = np.zeros((32, 32), np.uint8)
    img[:, :8] = 200  # a bright quarter: copper is bright
    assert copper_is_dark([img]) is False
    assert id(img) not in _sdg_draw._DARK_SHARE  # writable: may change, so not remembered
    img[:, :] = 200 - img  # now mostly bright: the answer must follow the pixels
    assert copper_is_dark([img]) is True
    frozen = img.copy()
    frozen.setflags(write=False)
    assert copper_is_dark([frozen]) is True and _sdg_draw._DARK_SHARE[id(frozen)][0] is frozen


@pytest.mark.parametrize("dark_copper", [True, False])
def test_a_short_can_be_a_band_across_a_crop_with_no_copper(dark_copper):
    """DeepPCB's hardest escapes include shorts as wide as the crop on plain substrate: SDG draws them."""
    sub = 230 if dark_copper else 30
    img = np.full((64, 64), sub, np.uint8)
    rng = np.random.default_rng(1)
    out = synthesize(rng, [img], "short", max_shift=0, dark_copper=dark_copper)
    assert out is not None
    changed = np.abs(out[0].astype(int) - sub) > 100  # copper painted where there was none
    ys, xs = np.nonzero(changed)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) >= 60  # from one side of the crop to the other
    assert synthesize(rng, [img], "open", max_shift=0, dark_copper=dark_copper) is None  # nothing to cut
    assert synthesize(rng, [img], "short", max_shift=0) is None  # polarity unknown: no guess


@pytest.mark.parametrize("label", PCB_CLASSES)
def test_with_context_the_defect_lies_in_the_full_resolution_window(label):
    """model.context 2: the crop is 128 px and the model sees only its central 64 px at full
    resolution, so every edit must be there (a band or a cut may cross the whole crop)."""
    img = np.full((128, 128), 200, np.uint8)  # bright laminate, dark copper (DeepPCB's polarity)
    for c in range(8, 128, 24):
        img[:, c:c + 6] = 30  # vertical traces across the whole crop
    img[60:70, 20:110] = 30  # and a pad row through the centre
    rng = np.random.default_rng(1)
    inside = np.zeros((128, 128), bool)
    inside[32:96, 32:96] = True
    for _ in range(20):
        out = synthesize(rng, [img], label, max_shift=0, dark_copper=True, context=2)
        if out is None:
            continue
        changed = np.abs(out[0].astype(int) - img.astype(int)) > 60
        assert changed.any()
        assert changed[inside].any(), label  # every defect touches the full-resolution window
        if label in ("mousebite", "spur", "copper", "pin-hole"):
            assert not changed[~inside].any(), label  # and small ones stay inside it
