"""TAO-backend fixtures: a plain TAO workspace per session, and TAO jobs kept in a per-test job store."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._tao_ws import make_tao_workspace


@pytest.fixture(scope="session")
def tao_src(tmp_path_factory) -> tuple[Path, Path]:
    """(TAO dataset folder, experiment YAML) shared by the session; tests must not change it."""
    return make_tao_workspace(tmp_path_factory.mktemp("tao"))


@pytest.fixture
def tao_spec(tao_src, tmp_path):
    """The session's TAO spec as a deftpipe Spec, its job store in this test's folder, 1 torch thread."""
    from deftpipe.spec import load_spec

    spec = load_spec(tao_src[1])
    spec.adapter.tao.state_dir = str(tmp_path / "tao_state")
    spec.adapter.tao.poll_s = 0.1
    return spec
