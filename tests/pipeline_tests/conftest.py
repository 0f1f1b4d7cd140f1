"""Pipeline fixtures: one tiny synthetic workspace per session, copied by tests that change it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deftpipe.data import make_synthetic_workspace


@pytest.fixture(scope="session")
def tiny_ws_master(tmp_path_factory) -> Path:
    return make_synthetic_workspace(tmp_path_factory.mktemp("pipeline_master") / "ws", size="tiny", seed=0)


@pytest.fixture
def tiny_ws(tiny_ws_master, tmp_path) -> Path:
    """A private copy of the tiny workspace (image cache included, so no re-decoding)."""
    dest = tmp_path / "ws"
    shutil.copytree(tiny_ws_master, dest, symlinks=True)
    return dest
