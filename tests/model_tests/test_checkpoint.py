"""Damaged or foreign checkpoints give one clear CheckpointError."""

from __future__ import annotations

import pytest
import torch

from deftpipe.errors import CheckpointError
from deftpipe.model import get_adapter
from deftpipe.model._checkpoint import read_checkpoint


def test_truncated_checkpoint(trained, tiny, tmp_path) -> None:
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(trained.best_checkpoint.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"truncated.pth cannot be read .*truncated or corrupt"):
        get_adapter().evaluate(bad, tiny.val_csv)


def test_garbage_and_missing_files(tiny, tmp_path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot be read"):
        get_adapter().evaluate(tmp_path / "junk.pth", tiny.val_csv)
    with pytest.raises(CheckpointError, match="does not exist"):
        get_adapter().infer(tmp_path / "nope.pth", tiny.val_csv, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_foreign_checkpoint_and_missing_keys(trained, tiny, tmp_path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="is not a deftpipe model checkpoint"):
        get_adapter().evaluate(tmp_path / "foreign.pth", tiny.val_csv)
    ckpt = read_checkpoint(trained.best_checkpoint)
    del ckpt["spec"]
    torch.save(ckpt, tmp_path / "nospec.pth")
    with pytest.raises(CheckpointError, match="lacks spec"):
        get_adapter().evaluate(tmp_path / "nospec.pth", tiny.val_csv)


def test_weights_of_another_shape(trained, tiny, tmp_path) -> None:
    ckpt = read_checkpoint(trained.best_checkpoint)
    ckpt["spec"]["model"]["width"] = 8  # the stored weights are for width 16
    torch.save(ckpt, tmp_path / "reshaped.pth")
    with pytest.raises(CheckpointError, match=r"does not fit this model \(shape \(checkpoint vs model\) "
                                              r"encoder.stages.0.0.weight \(16, 1, 3, 3\) vs \(8, 1, 3, 3\)"):
        get_adapter().embed(tmp_path / "reshaped.pth", tiny.val_csv)
