"""Fixtures of the data tests: one tiny synthetic workspace, fake and real DeepPCB folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deftpipe.data import make_synthetic_workspace


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory) -> Path:
    """A read-only tiny synthetic workspace (copy it before modifying anything)."""
    return make_synthetic_workspace(tmp_path_factory.mktemp("syn") / "ws", seed=0, size="tiny")


@pytest.fixture
def ws_copy(tiny_ws, tmp_path) -> Path:
    """A private copy of the tiny workspace that a test may modify."""
    return Path(shutil.copytree(tiny_ws, tmp_path / "ws"))


def write_fake_deeppcb(dest: Path, groups: dict[str, int], *, size: int = 160, seed: int = 0) -> Path:
    """A DeepPCB-shaped folder: binary board images, each test image with 2 drawn defects."""
    rng = np.random.default_rng(seed)
    for g, n in groups.items():
        img_dir, ann_dir = dest / "PCBData" / f"group{g}" / g, dest / "PCBData" / f"group{g}" / f"{g}_not"
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        for i in range(n):
            temp = np.full((size, size), 255, np.uint8)
            for _ in range(12):  # dark traces on bright laminate
                y, x = rng.integers(0, size - 8, size=2)
                if rng.random() < 0.5:
                    temp[y:y + 4, x:x + int(rng.integers(20, 80))] = 0
                else:
                    temp[y:y + int(rng.integers(20, 80)), x:x + 4] = 0
            test = temp.copy()
            lines = []
            for k in range(2):
                y, x = rng.integers(10, size - 20, size=2)
                test[y:y + 6, x:x + 6] = 255 - test[y:y + 6, x:x + 6]
                lines.append(f"{x - 2} {y - 2} {x + 8} {y + 8} {k % 6 + 1}")
            stem = f"{g}{i:03d}"
            Image.fromarray(temp).save(img_dir / f"{stem}_temp.jpg", quality=95)
            Image.fromarray(test).save(img_dir / f"{stem}_test.jpg", quality=95)
            (ann_dir / f"{stem}.txt").write_text("\n".join(lines))  # no final newline, as in DeepPCB
    return dest


@pytest.fixture
def make_fake_deeppcb():
    """:func:`write_fake_deeppcb`, for a test that needs its own groups or image size."""
    return write_fake_deeppcb


@pytest.fixture
def fake_deeppcb(tmp_path) -> Path:
    return write_fake_deeppcb(tmp_path / "deeppcb", {"10000": 4, "20000": 3, "30000": 3, "40000": 2, "50000": 2})


@pytest.fixture(scope="session")
def deeppcb_subset(deeppcb_path, tmp_path_factory) -> Path:
    """The first images of every real DeepPCB group, linked (not copied) into a temp folder."""
    dest = tmp_path_factory.mktemp("deeppcb_subset")
    for gdir in sorted((deeppcb_path / "PCBData").glob("group*")):
        for sub in gdir.iterdir():
            if not sub.is_dir() or sub.name.endswith("_not"):
                continue
            (dest / "PCBData" / gdir.name / sub.name).mkdir(parents=True)
            (dest / "PCBData" / gdir.name / f"{sub.name}_not").mkdir(parents=True)
            for test in sorted(sub.glob("*_test.jpg"))[:6]:
                stem = test.name.removesuffix("_test.jpg")
                for f in (test, sub / f"{stem}_temp.jpg"):
                    (dest / "PCBData" / gdir.name / sub.name / f.name).symlink_to(f)
                ann = gdir / f"{sub.name}_not" / f"{stem}.txt"
                (dest / "PCBData" / gdir.name / f"{sub.name}_not" / ann.name).symlink_to(ann)
    return dest
