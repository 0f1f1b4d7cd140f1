"""Files and folders deftpipe makes follow the user's umask (a team reads each other's results),
except a file that holds a secret (0600) — issue 25: under umask 022, init made the workspace 0700
and its CSVs, specs and run outputs 0600."""

from __future__ import annotations

import os
import stat

import pytest

from deftpipe._fs import atomic_dir, atomic_path, atomic_write_json, atomic_write_text, file_mode
from deftpipe.data import make_synthetic_workspace


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask,file_m,dir_m", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o077, 0o600, 0o700)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, file_m, dir_m):
    umask(mask)
    assert atomic_write_text(tmp_path / "a.txt", "x") and _mode(tmp_path / "a.txt") == file_m
    with atomic_path(tmp_path / "b.npy") as tmp:
        tmp.write_bytes(b"x")
    assert _mode(tmp_path / "b.npy") == file_m
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("x")
    assert _mode(tmp_path / "d") == dir_m


def test_a_secret_file_is_0600_whatever_the_umask(tmp_path, umask):
    umask(0o002)
    atomic_write_json(tmp_path / "cred.json", {"k": "v"}, secret=True)
    assert _mode(tmp_path / "cred.json") == 0o600 and file_mode(secret=True, folder=True) == 0o700


def test_init_under_umask_022_makes_a_readable_workspace(tmp_path, umask):
    umask(0o022)
    ws = make_synthetic_workspace(tmp_path / "ws", seed=0, size="tiny")
    assert _mode(ws) == 0o755
    for rel in ("pipeline.yaml", "kpi/testing_set.csv", "specs/baseline_spec.yaml", "train/base/training_set.csv"):
        assert _mode(ws / rel) == 0o644, rel
