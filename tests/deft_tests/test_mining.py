"""Mining: the pool is embedded whole and the eligible rows picked, row for row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deftpipe.data import identity_keys, write_dataset
from deftpipe.deft._mining import eligible_mask, embed_pool, read_pool
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
