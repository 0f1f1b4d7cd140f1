"""CommandAdapter end to end, with the project's own CLI as the "external" trainer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deftpipe.errors import SpecError, TrainingError
from deftpipe.model import CommandAdapter, get_adapter
from deftpipe.spec import spec_to_dict

DEFTPIPE = ["{python}", "-m", "deftpipe", "model"]
TEMPLATES = {
    "train": [*DEFTPIPE, "train", "--spec", "{spec}", "--train", "{train_csv}", "--val", "{val_csv}",
              "--out", "{out_dir}", "--epochs", "{epochs}"],
    "evaluate": [*DEFTPIPE, "evaluate", "--checkpoint", "{checkpoint}", "--csv", "{csv}", "--json"],
    "infer": [*DEFTPIPE, "infer", "--checkpoint", "{checkpoint}", "--csv", "{csv}", "--out", "{out_csv}"],
    "embed": [*DEFTPIPE, "embed", "--checkpoint", "{checkpoint}", "--csv", "{csv}", "--out", "{out_npy}"],
}


def command_spec(tiny, **templates) -> dict:
    data = spec_to_dict(tiny.spec())
    data["adapter"] = {"kind": "command", **templates}
    return data


@pytest.fixture(scope="module")
def external_run(tiny, tmp_path_factory):
    spec = command_spec(tiny, **TEMPLATES)
    adapter = get_adapter(spec)
    assert isinstance(adapter, CommandAdapter)
    seen = []
    result = adapter.train(spec, tiny.train_csv, tiny.val_csv, tmp_path_factory.mktemp("cmd") / "run",
                           epoch_callback=lambda e, m: seen.append(e))
    return adapter, result, seen


def test_train_reads_the_external_checkpoint_and_metrics(external_run) -> None:
    _, result, seen = external_run
    assert result.best_checkpoint.is_file() and result.best_epoch == 1
    assert "far_pct" in result.metrics and seen == [1]
    assert (result.best_checkpoint.parent / "command_train.log").is_file()


def test_evaluate_infer_embed_match_the_builtin_adapter(external_run, tiny, tmp_path) -> None:
    adapter, result, _ = external_run
    ext = adapter.evaluate(result.best_checkpoint, tiny.val_csv)
    own = get_adapter().evaluate(result.best_checkpoint, tiny.val_csv)
    assert ext["far_pct"] == pytest.approx(own["far_pct"]) and ext["auroc"] == pytest.approx(own["auroc"])
    out = adapter.infer(result.best_checkpoint, tiny.val_csv, tmp_path / "scores.csv")
    assert {"score", "prediction"} <= set(pd.read_csv(out).columns)
    emb = adapter.embed(result.best_checkpoint, tiny.val_csv)
    assert emb.dtype == np.float32 and emb.shape[0] == len(pd.read_csv(tiny.val_csv))
    emb2, scores = adapter.embed_and_score(result.best_checkpoint, tiny.val_csv)  # the default: embed + infer
    np.testing.assert_allclose(emb2, emb)
    np.testing.assert_allclose(scores, pd.read_csv(out)["score"].to_numpy())


def test_evaluate_without_a_template_scores_through_infer(external_run, tiny) -> None:
    _, result, _ = external_run
    adapter = CommandAdapter(command_spec(tiny, infer=TEMPLATES["infer"]))
    m = adapter.evaluate(result.best_checkpoint, tiny.val_csv)
    own = get_adapter().evaluate(result.best_checkpoint, tiny.val_csv)
    assert m["far_pct"] == pytest.approx(own["far_pct"], abs=1e-6) and m["val_loss"] > 0


def test_a_failing_program_and_a_missing_template_are_clear(tiny, tmp_path) -> None:
    bad = command_spec(tiny, train=["{python}", "-c", "import sys; sys.exit('trainer exploded')"])
    with pytest.raises(TrainingError, match="adapter.train: .* exited with code 1: trainer exploded"):
        get_adapter(bad).train(bad, tiny.train_csv, tiny.val_csv, tmp_path / "run")
    with pytest.raises(SpecError, match="adapter.embed is not set in the spec"):
        CommandAdapter(bad).embed(tmp_path / "x.pth", tiny.val_csv)
    typo = command_spec(tiny, train=["trainer", "{trian_csv}"])
    with pytest.raises(SpecError, match="unknown placeholder 'trian_csv'"):
        get_adapter(typo).train(typo, tiny.train_csv, tiny.val_csv, tmp_path / "run2")
