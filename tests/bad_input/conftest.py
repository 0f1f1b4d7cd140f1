"""The bad-input suite's machinery: a private copy of one tiny workspace per test, the CLI run
in-process through ``deftpipe.cli.main`` (exit code, stdout, stderr), and a snapshot of every file
under the test's folder taken before the command, which must be identical after it (nothing
created, changed or removed by a refused input)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from deftpipe.data import make_synthetic_workspace


@dataclass
class Result:
    code: int
    out: str
    err: str


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, mtime) and folder under ``root``."""
    return {str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


class Bad:
    """One test's sandbox: ``ws`` (a copy of the tiny workspace) inside ``root``."""

    def __init__(self, root: Path, ws: Path, capsys) -> None:
        self.root, self.ws, self._capsys = root, ws, capsys
        self.train = ws / "train" / "base" / "training_set.csv"
        self.val = ws / "train" / "base" / "validation_set.csv"
        self.spec = ws / "specs" / "baseline_spec.yaml"

    def cli(self, *argv: object) -> Result:
        from deftpipe.cli import main

        self._capsys.readouterr()
        old = sys.argv
        sys.argv = ["deftpipe", *(str(a) for a in argv)]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = old
        cap = self._capsys.readouterr()
        return Result(code, cap.out, cap.err)

    def refused(self, *argv: object, code: int = 1, match: str, one_line: bool = True) -> Result:
        """Run ``argv``; assert the exit code, the message and that no file under root changed."""
        before = snapshot(self.root)
        r = self.cli(*argv)
        after = snapshot(self.root)
        text = r.err + r.out
        assert r.code == code, f"exit {r.code}, expected {code}:\n{text[-3000:]}"
        assert "Traceback" not in text and "internal error" not in text, text[-3000:]
        assert re.search(match, text, re.S), f"{match!r} not in:\n{text[-3000:]}"
        if one_line:
            lines = [ln for ln in r.err.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), r.err
            assert len(lines[0]) < 1500, f"message of {len(lines[0])} characters"
        changed = {k for k in before.keys() | after.keys() if before.get(k, 0) != after.get(k, 0)}
        assert not changed, f"files created/changed/removed: {sorted(changed)[:10]}"
        return r


def _link_images(src: str, dst: str) -> None:
    """Images are hard links to the template's (fast); change one only through :func:`replace_file`."""
    if src.endswith(".png"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def replace_file(path: Path) -> Path:
    """Unlink ``path`` (a hard link to the template) so the test can write its own file there."""
    path.unlink()
    return path


@pytest.fixture(scope="session")
def template_ws(tmp_path_factory) -> Path:
    return make_synthetic_workspace(tmp_path_factory.mktemp("bad_input_tpl") / "ws", seed=0, size="tiny")


@pytest.fixture
def bad(template_ws, tmp_path, monkeypatch, capsys) -> Bad:
    monkeypatch.setenv("DEFTPIPE_CACHE_DIR", str(tmp_path.parent / f"{tmp_path.name}_cache"))
    monkeypatch.setenv("DEFTPIPE_NUM_THREADS", "1")
    root = tmp_path / "sandbox"
    ws = Path(shutil.copytree(template_ws, root / "ws", ignore=shutil.ignore_patterns(".deftpipe_cache"),
                              copy_function=_link_images))
    monkeypatch.chdir(root)
    return Bad(root, ws, capsys)


@pytest.fixture(scope="session")
def template_ckpt(template_ws, tmp_path_factory) -> Path:
    """A 1-epoch checkpoint trained on the template workspace."""
    from deftpipe.model import get_adapter
    from deftpipe.spec import load_spec

    spec = load_spec(template_ws / "specs" / "baseline_spec.yaml")
    spec.train.num_epochs, spec.train.num_threads = 1, 1
    spec.model.width, spec.model.depth = 8, 3
    run = tmp_path_factory.mktemp("bad_input_ckpt") / "run"
    return get_adapter(spec).train(spec, template_ws / "train" / "base" / "training_set.csv",
                                   template_ws / "train" / "base" / "validation_set.csv", run).best_checkpoint
