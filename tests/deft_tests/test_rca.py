"""RCA: failures at the operating point, and the same analysis whether the validation scores come
from training's sidecar or from a fresh inference pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deftpipe.deft._rca import find_failures, run_rca
from deftpipe.model import TorchAdapter


def test_escapes_and_false_alarms_follow_the_two_thresholds() -> None:
    df = pd.DataFrame({"label": ["open", "short", "PASS", "PASS", "PASS", "PASS"]})
    scores = np.array([0.9, 0.3, 0.1, 0.2, 0.5, 0.35])
    failed, t100, t_op = find_failures(df, scores, far_target_pct=25.0)
    assert t100 == 0.3  # the lowest defect score
    assert t_op == 0.5  # 75th percentile of the PASS scores [.1 .2 .35 .5], rounded up to a sample
    kinds = dict(zip(failed.index, failed["kind"], strict=True))
    assert kinds == {1: "escape", 4: "false_alarm", 5: "false_alarm"}  # short below t_op; PASS >= t100


class CountingAdapter(TorchAdapter):
    def __init__(self, *, keep: bool):
        super().__init__()
        self.keep, self.infer_calls = keep, 0

    def validation_scores(self, checkpoint, csv):
        return super().validation_scores(checkpoint, csv) if self.keep else None

    def infer(self, *args, **kwargs):
        self.infer_calls += 1
        return super().infer(*args, **kwargs)


def test_rca_reuses_the_validation_scores_training_kept(finished_run, tiny_ws, tmp_path) -> None:
    state = json.loads((finished_run / "deft_state.json").read_text())
    ckpt = Path(state["iterations"]["baseline"]["best_ckpt_path"])
    val_csv = tiny_ws / "train" / "base" / "validation_set.csv"
    kept, fresh = CountingAdapter(keep=True), CountingAdapter(keep=False)
    a = run_rca(kept, checkpoint=ckpt, val_csv=val_csv, out_dir=tmp_path / "kept", far_target_pct=5.0)
    b = run_rca(fresh, checkpoint=ckpt, val_csv=val_csv, out_dir=tmp_path / "fresh", far_target_pct=5.0)
    assert (kept.infer_calls, fresh.infer_calls) == (0, 1)
    assert (a.n_escapes, a.n_false_alarms, a.n_groups) == (b.n_escapes, b.n_false_alarms, b.n_groups)
    assert a.operating_threshold == pytest.approx(b.operating_threshold, abs=1e-6)
    ga, gb = pd.read_csv(a.gaps_csv), pd.read_csv(b.gaps_csv)
    assert ga[["group_id", "object_name"]].equals(gb[["group_id", "object_name"]])
    sa, sb = pd.read_csv(tmp_path / "kept" / "val_scores.csv"), pd.read_csv(tmp_path / "fresh" / "val_scores.csv")
    np.testing.assert_allclose(sa["score"], sb["score"], rtol=1e-5, atol=1e-6)


def test_groups_rank_by_what_they_do_to_far_at_full_recall() -> None:
    """Nothing escapes the operating point: the lowest-scored defects (those that set FAR@100%R) are
    analysed, and the two shorts that force ~58 % FAR outrank both the false-alarm clusters (a share
    of the PASS each) and the easy opens (0 FAR forced), however many members those have."""
    from deftpipe.deft._rca import WEAK_DEFECTS, group_failures

    rng = np.random.default_rng(0)
    pass_scores = np.linspace(0.0, 0.5, 100)
    labels = ["short", "short"] + ["open"] * 30 + ["PASS"] * 100
    scores = np.concatenate([[0.21, 0.3], np.linspace(0.9, 1.0, 30), pass_scores])
    df = pd.DataFrame({"label": labels})
    failed, t100, t_op = find_failures(df, scores, far_target_pct=60.0)
    weak = failed[failed["kind"] == "weak_defect"]
    assert len(weak) == WEAK_DEFECTS and set(weak["score"].round(2)) >= {0.21, 0.3}  # not a share of all 32
    assert weak["far_cost"].max() == pytest.approx(58.0)  # PASS scored >= 0.21
    fa = failed[failed["kind"] == "false_alarm"]
    assert len(fa) == 58 and fa["far_cost"].iloc[0] == pytest.approx(1.0)
    emb = rng.normal(size=(len(failed), 8)).astype(np.float32)
    grouped = group_failures(failed, emb, seed=0)
    first = grouped[grouped["rank"] == 1]
    assert set(first["label"]) == {"short"} and first["impact"].iloc[0] == pytest.approx(58.0)
    opens = grouped[grouped["label"] == "open"]
    assert (opens["impact"] == 0).all() and opens["rank"].min() > grouped[grouped["kind"] == "false_alarm"]["rank"].max()
