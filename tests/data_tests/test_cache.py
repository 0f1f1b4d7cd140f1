"""The decode-once image cache behind training, inference and embedding."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deftpipe.data import ImageLayout, clear_memo, load_pairs
from deftpipe.data._cache import cache_dir_for
from deftpipe.errors import DataError


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture()
def ws(tmp_path, monkeypatch):
    monkeypatch.delenv("DEFTPIPE_CACHE_DIR", raising=False)
    (tmp_path / "pipeline.yaml").write_text("{}\n")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        g = rng.integers(0, 255, (16, 16), dtype=np.uint8)
        t = g.copy()
        t[i, i] = 255 - t[i, i]
        _write(tmp_path / "images" / "golden" / f"o{i}.png", g)
        _write(tmp_path / "images" / "test" / f"o{i}.png", t)
        rows.append({"input_path": "test", "golden_path": "golden", "label": "PASS", "object_name": f"o{i}"})
    clear_memo()
    return tmp_path, pd.DataFrame(rows)


def test_pairs_shape_order_and_cache_files(ws):
    root, df = ws
    layout = ImageLayout.create(root / "images", ".png")
    arr = load_pairs(df, layout, 16)
    assert arr.shape == (3, 2, 1, 16, 16) and arr.dtype == np.uint8
    golden = np.asarray(Image.open(root / "images" / "golden" / "o1.png"))
    test = np.asarray(Image.open(root / "images" / "test" / "o1.png"))
    assert np.array_equal(arr[1, 0, 0], golden) and np.array_equal(arr[1, 1, 0], test)
    entries = sorted(f.name for f in cache_dir_for(layout).rglob("*.npy"))
    assert len(entries) == 2 and entries[1].endswith(".sha1.npy")  # one array per dataset + its digests
    clear_memo()
    assert np.array_equal(load_pairs(df, layout, 16), arr)  # served from the .npy files


def test_decoded_files_need_no_second_read_for_the_leak_check(ws, monkeypatch):
    """The cache hashes the bytes it decodes (and keeps the digests beside its entry), so the
    leak check of a set just trained on reads no file; the digests are the files' real SHA-1."""
    from deftpipe.data import _file_memo, _leakage

    root, df = ws
    layout = ImageLayout.create(root / "images", ".png")
    expected = _leakage.content_hashes(df, layout)  # reads the files
    reads: list[str] = []
    real_sha1 = _leakage._sha1
    monkeypatch.setattr(_leakage, "_sha1", lambda p: reads.append(p) or real_sha1(p))
    for fresh_process in (False, True):
        _file_memo.clear()
        clear_memo()
        if fresh_process:  # the cache entry exists now: its digests come from the sidecar
            assert len(list(cache_dir_for(layout).rglob("*.sha1.npy"))) == 1
        load_pairs(df, layout, 16)
        reads.clear()
        assert _leakage.content_hashes(df, layout).tolist() == expected.tolist()
        assert reads == []
    p = root / "images" / "test" / "o2.png"  # a rewritten file is hashed again, never served stale
    _write(p, np.full((16, 16), 7, np.uint8))
    os.utime(p, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert _leakage.content_hashes(df, layout).tolist()[2] != expected.tolist()[2]
    assert len(reads) == 1


def test_load_image_memo_is_shared_read_only_and_still_checks_the_size(ws):
    from deftpipe.data import load_image

    root, _ = ws
    path = root / "images" / "golden" / "o0.png"
    a = load_image(path)  # no size known (e.g. SDG reading goldens)
    assert load_image(path, 16) is a  # training's call hits the same entry
    with pytest.raises(DataError, match="16x16 but the spec expects 32x32"):
        load_image(path, 32)  # a memo hit still checks the size
    with pytest.raises(ValueError):
        a[0, 0] = 1  # nobody may draw on an image other callers share
    assert load_image(path, 32, resize=True).shape == (32, 32)


def test_disk_cache_hit_fills_the_in_process_memo(ws, monkeypatch):
    from deftpipe.data import _cache, load_image

    root, df = ws
    layout = ImageLayout.create(root / "images", ".png")
    arr = load_pairs(df, layout, 16)
    clear_memo()  # a new process: only the on-disk entry is left
    served = load_pairs(df, layout, 16)
    served[2, 1, 0] = 0  # a caller writing into its array does not alter the memo

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(_cache, "_decode", no_decode)
    assert arr[2, 1, 0].any() and np.array_equal(load_image(root / "images" / "test" / "o2.png"), arr[2, 1, 0])
    assert np.array_equal(load_image(root / "images" / "golden" / "o1.png", 16), arr[1, 0, 0])


def test_changed_file_invalidates_entry(ws):
    root, df = ws
    layout = ImageLayout.create(root / "images", ".png")
    before = load_pairs(df, layout, 16)
    p = root / "images" / "test" / "o0.png"
    _write(p, np.zeros((16, 16), np.uint8))
    os.utime(p, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    after = load_pairs(df, layout, 16)
    assert after[0, 1, 0].sum() == 0 and before[0, 1, 0].sum() > 0


def test_wrong_size_missing_and_escape_are_clear_errors(ws):
    root, df = ws
    layout = ImageLayout.create(root / "images", ".png")
    with pytest.raises(DataError, match=r"is 16x16 but the spec expects 32x32"):
        load_pairs(df, layout, 32)
    assert load_pairs(df, layout, 32, resize=True).shape[-1] == 32
    bad = df.copy()
    bad.loc[0, "object_name"] = "nope"
    with pytest.raises(DataError, match="does not exist"):
        load_pairs(bad, layout, 16)
    esc = df.copy()
    esc.loc[0, "input_path"] = "../../../etc"
    with pytest.raises(DataError, match="escapes the dataset root"):
        load_pairs(esc, layout, 16)


def test_colour_image_is_refused(ws):
    root, df = ws
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    _write(root / "images" / "test" / "o2.png", rgb)
    layout = ImageLayout.create(root / "images", ".png")
    with pytest.raises(DataError, match="3 colour channels"):
        load_pairs(df, layout, 16)
