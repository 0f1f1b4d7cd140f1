"""Mining: the pool is embedded whole and the eligible rows picked, row for row; the pool's hardest
rows (lowest-scored defects, highest-scored PASS) are mined as target ``hard``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deftpipe.data import identity_keys, write_dataset
from deftpipe.deft._mining import PoolEmbedding, eligible_mask, embed_pool, hardest_rows, mine, read_pool
from deftpipe.model import TorchAdapter


def test_eligible_rows_keep_their_own_embeddings(finished_run, tiny_ws, tmp_path) -> None:
    state = json.loads((finished_run / "deft_state.json").read_text())
    ckpt = Path(state["iterations"]["baseline"]["best_ckpt_path"])
    pool_csv = tiny_ws / "mining" / "mining_pool.csv"
    pool = read_pool(pool_csv)
    excluded = set(identity_keys(pool.iloc[::3]))  # every third row mined before / in training
    mask = eligible_mask(pool, exclude_keys=excluded)
    assert mask.sum() == len(pool) - len(excluded)
    emb = embed_pool(TorchAdapter(), checkpoint=ckpt, pool_csv=pool_csv, pool=pool, eligible=mask, out_dir=tmp_path)
    rows = read_pool(emb.rows_csv)
    assert emb.n_eligible == len(rows) == mask.sum() and not identity_keys(rows).isin(excluded).any()
    direct = TorchAdapter().embed(ckpt, write_dataset(pool[mask].reset_index(drop=True), tmp_path / "sub.csv"))
    np.testing.assert_allclose(np.load(emb.embeddings_npy), direct, rtol=1e-4, atol=1e-5)


def test_nothing_eligible_embeds_nothing(finished_run, tiny_ws, tmp_path) -> None:
    pool_csv = tiny_ws / "mining" / "mining_pool.csv"
    pool = read_pool(pool_csv)
    emb = embed_pool(TorchAdapter(), checkpoint=Path("unused.pth"), pool_csv=pool_csv, pool=pool,
                     eligible=np.zeros(len(pool), dtype=bool), out_dir=tmp_path)
    assert (emb.rows_csv, emb.embeddings_npy, emb.n_pool, emb.n_eligible) == (None, None, len(pool), 0)


def test_hardest_rows_pick_low_defects_and_high_pass_rows() -> None:
    labels = pd.Series(["PASS", "short", "PASS", "open", "PASS", "open", "pass"])
    scores = np.array([0.9, 0.2, 0.1, 0.05, 0.95, 0.6, 0.7])
    assert hardest_rows(labels, scores, taken=set(), n_defects=2, n_pass=2) == [3, 1, 4, 0]
    assert hardest_rows(labels, scores, taken={3, 4}, n_defects=1, n_pass=1) == [1, 0]
    assert hardest_rows(labels, scores, taken=set(), n_defects=0, n_pass=0) == []
    assert hardest_rows(labels, scores, taken=set(), n_defects=10, n_pass=0) == [3, 1, 5]  # all there is


def test_mine_adds_the_hard_rows_after_the_targets(tmp_path) -> None:
    rows = pd.DataFrame({"input_path": "b/test", "golden_path": "b/golden", "object_name": [f"o{i}" for i in range(6)],
                         "label": ["PASS", "short", "PASS", "open", "PASS", "open"], "boardname": "b"})
    rows_csv = write_dataset(rows, tmp_path / "pool_rows.csv")
    emb = np.eye(6, dtype=np.float32)
    np.save(tmp_path / "emb.npy", emb)
    np.save(tmp_path / "scores.npy", np.array([0.9, 0.2, 0.1, 0.05, 0.95, 0.6]))
    pool = PoolEmbedding(rows_csv, tmp_path / "emb.npy", 6, 6, tmp_path / "scores.npy")
    gaps = pd.DataFrame({"group_id": ["g1"]})
    target = {"target_id": "t01", "group_id": "g1"}
    res = mine(targets=[target], gaps=gaps, gap_emb=emb[[3]], pool=pool, top_k=1, min_similarity=0.9,
               out_dir=tmp_path, hard_defects=1, hard_pass=1)
    mined = pd.read_csv(res.mined_csv)
    # o3 is the target's neighbour, so the hardest defect left is o1 (0.2); the hardest PASS is o4
    assert mined[["object_name", "mining_target"]].values.tolist() == [["o3", "t01"], ["o1", "hard"], ["o4", "hard"]]
    assert res.per_target == {"t01": 1, "hard": 2}
    report = json.loads(res.report_json.read_text())
    assert report["targets"][-1]["target_id"] == "hard" and report["targets"][-1]["score_range"] == [0.2, 0.95]
    unscored = PoolEmbedding(rows_csv, tmp_path / "emb.npy", 6, 6)
    res = mine(targets=[], gaps=gaps, gap_emb=emb[:0], pool=unscored, top_k=1, min_similarity=0.9,
               out_dir=tmp_path / "b", hard_defects=5, hard_pass=5)
    assert res.n_rows == 0 and "hard" not in res.per_target  # no scores: no hard rows


@pytest.mark.parametrize("solved", [False, True])
def test_hard_rows_are_mined_once_validation_is_solved(run_copy, loop_run, solved) -> None:
    """Only when the previous RCA found no escape and no false alarm (just weak defects) does mining
    add the pool's lowest-scored defects and highest-scored PASS rows, scored by the routing pass."""
    from deftpipe.deft._steps import step_mining, step_routing, validation_solved

    run = loop_run(run_copy)
    gaps_csv = Path(run.it("baseline")["rca_gaps"])
    gaps = pd.read_csv(gaps_csv, dtype=str, keep_default_na=False)
    if solved:
        gaps["kind"] = "weak_defect"
        gaps.to_csv(gaps_csv, index=False)
    elif validation_solved(gaps):
        pytest.skip("the tiny baseline already separates validation")
    run.it("iter1")["routing_json"] = step_routing(run, "iter1").artefacts["routing_json"]
    outcome = step_mining(run, "iter1")
    routing = json.loads(Path(run.it("iter1")["routing_json"]).read_text())
    mined = pd.read_csv(outcome.artefacts["mined_csv"], dtype=str, keep_default_na=False)
    hard = mined[mined["mining_target"] == "hard"]
    if not solved:
        assert hard.empty and routing["pool"]["scores_npy"] is None
        return
    assert "of the pool's hardest rows" in outcome.summary
    rows = read_pool(Path(routing["pool"]["rows_csv"]))
    scores = pd.Series(np.load(routing["pool"]["scores_npy"]), index=rows["object_name"].to_numpy())
    free = rows[~rows["object_name"].isin(mined["object_name"])]  # eligible rows left in the pool
    hard_def, hard_ok = hard[hard["label"] != "PASS"], hard[hard["label"] == "PASS"]
    free_def, free_ok = free[free["label"] != "PASS"], free[free["label"] == "PASS"]
    mining = run.state["config"]["mining"]
    assert len(hard_def) == min(mining["hard_defects"], len(hard_def) + len(free_def)) > 0
    assert len(hard_ok) == min(mining["hard_pass"], len(hard_ok) + len(free_ok)) > 0
    # no defect left behind scores lower than a mined one; no PASS left behind scores higher
    if len(free_def):
        assert scores[hard_def["object_name"]].max() <= scores[free_def["object_name"]].min()
    if len(free_ok):
        assert scores[hard_ok["object_name"]].min() >= scores[free_ok["object_name"]].max()
