"""Near-duplicates across splits and the pool (issue 25): the same board picture with one pixel
changed, or re-encoded, is found from the decoded pixels and reported per pair — by `data leakage`
(exit 1) and by the pre-flight (a blocker when the holdout is involved: the audit's "boards no split
has touched" would be false; a warning between other splits)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image


def _csv(bad, split: str):
    return {"kpi": bad.ws / "kpi" / "testing_set.csv", "holdout": bad.ws / "holdout" / "holdout_set.csv",
            "pool": bad.ws / "mining" / "mining_pool.csv", "train": bad.train, "val": bad.val}[split]


def _copy_row(bad, src: str, dst: str, *, change: str = "pixel", row: int = 0) -> None:
    """Append to ``dst`` a copy of ``src``'s row ``row`` under new names, its test image altered."""
    df = pd.read_csv(_csv(bad, src), dtype=str, keep_default_na=False)
    r = df.iloc[row].to_dict()
    for kind, col in (("test", "input_path"), ("golden", "golden_path")):
        img = np.asarray(Image.open(bad.ws / "images" / r[col] / f"{r['object_name']}.png").convert("L")).copy()
        if kind == "test" and change == "pixel":
            img[3, 5] = 255 - img[3, 5]
        out = bad.ws / "images" / f"copy_{dst}" / kind / "near_copy.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(out, format="PNG", compress_level=9 if change == "reencode" else 1)
    new = {**r, "input_path": f"copy_{dst}/test", "golden_path": f"copy_{dst}/golden", "object_name": "near_copy",
           "boardname": "copied_board"}
    d = pd.read_csv(_csv(bad, dst), dtype=str, keep_default_na=False)
    pd.concat([d, pd.DataFrame([new])], ignore_index=True).to_csv(_csv(bad, dst), index=False)


def test_clean_splits_have_no_near_duplicates(bad):
    r = bad.cli("data", "leakage", *(_csv(bad, s) for s in ("train", "val", "kpi", "pool", "holdout")))
    assert r.code == 0, r.out + r.err
    assert r.out.strip().splitlines()[-2:] == ["0 near-duplicate rows", "0 overlapping rows"]


@pytest.mark.parametrize("change", ["pixel", "reencode"])
def test_a_near_copy_of_a_kpi_image_in_the_holdout_is_reported_per_pair(bad, change):
    _copy_row(bad, "kpi", "holdout", change=change)
    r = bad.refused("data", "leakage", _csv(bad, "kpi"), _csv(bad, "holdout"), one_line=False,
                    match=r"testing_set.csv <-> .*holdout_set.csv: 1 near-duplicate rows.*holdout_set.csv row \d+ "
                          r"\(near_copy\) ≈ .*testing_set.csv row 1")
    assert r.out.strip().splitlines()[-2:] == ["1 near-duplicate rows", "0 overlapping rows"]


def test_near_duplicates_are_in_the_json_report(bad):
    _copy_row(bad, "kpi", "holdout")
    r = bad.cli("data", "leakage", _csv(bad, "kpi"), _csv(bad, "holdout"), "--json")
    assert r.code == 1
    rep = json.loads(r.out)
    assert rep["n_near_duplicates"] == 1 and rep["n_overlapping"] == 0
    assert rep["pairs"][0]["near"] == 1 and "near_copy" in rep["pairs"][0]["near_examples"][0]


def test_a_near_copy_in_the_holdout_is_a_preflight_blocker(bad):
    _copy_row(bad, "kpi", "holdout")
    r = bad.refused("preflight", bad.ws, "--no-dry-run", "--json", one_line=False, match=r"near-duplicates")
    blockers = json.loads(r.out)["blockers"]
    assert any("holdout_set.csv are near-duplicates of rows of" in b and "testing_set.csv" in b for b in blockers)


def test_a_near_copy_between_train_and_pool_is_a_preflight_warning(bad):
    _copy_row(bad, "train", "pool")
    r = bad.cli("preflight", bad.ws, "--no-dry-run", "--json")
    rep = json.loads(r.out)
    assert any("mining_pool.csv are near-duplicates" in w for w in rep["warnings"]), rep["warnings"]
    assert not any("near-duplicates" in b for b in rep["blockers"])
    ds = next(s for s in rep["sections"] if s["name"] == "datasets")
    assert ds["leakage"]["n_near_duplicates"] == 1


def test_a_different_picture_is_not_a_near_duplicate(bad):
    _copy_row(bad, "kpi", "holdout")
    img_path = bad.ws / "images" / "copy_holdout" / "test" / "near_copy.png"
    img = np.asarray(Image.open(img_path).convert("L")).copy()
    img[:, : img.shape[1] // 3] = 255 - img[:, : img.shape[1] // 3]  # a third of the picture differs
    Image.fromarray(img).save(img_path)
    r = bad.cli("data", "leakage", _csv(bad, "kpi"), _csv(bad, "holdout"))
    assert r.code == 0 and r.out.strip().splitlines()[-2:] == ["0 near-duplicate rows", "0 overlapping rows"]
