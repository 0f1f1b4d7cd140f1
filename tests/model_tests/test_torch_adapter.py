"""TorchAdapter: evaluate / infer / embed outputs, and bad input refused before anything is written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deftpipe.errors import DataError, SpecError
from deftpipe.model import TorchAdapter, get_adapter
from deftpipe.spec import spec_to_dict


def test_evaluate_reports_the_metric_contract(trained, tiny) -> None:
    m = get_adapter().evaluate(trained.best_checkpoint, tiny.kpi_csv)
    for key in ("far_pct", "threshold", "recall", "auroc", "n_defects", "n_pass", "far_pct_at_99",
                "far_ci_low", "far_ci_high", "pred_counts", "escapes", "val_loss"):
        assert key in m
    assert m["n_defects"] + m["n_pass"] == len(pd.read_csv(tiny.kpi_csv))
    assert m["operating_threshold"] == pytest.approx(trained.metrics["threshold"])  # the validation one
    again = get_adapter().evaluate(trained.best_checkpoint, tiny.val_csv)
    assert again["far_pct"] == pytest.approx(trained.metrics["far_pct"])  # same weights, same numbers


def test_infer_adds_score_and_prediction(trained, tiny, tmp_path) -> None:
    out = get_adapter().infer(trained.best_checkpoint, tiny.kpi_csv, tmp_path / "inf" / "scores.csv",
                              threshold=0.5)
    src, df = pd.read_csv(tiny.kpi_csv), pd.read_csv(out)
    assert list(df.columns) == [*src.columns, "score", "prediction"] and len(df) == len(src)
    assert df["score"].between(0, 1).all()
    assert ((df["score"] >= 0.5) == (df["prediction"] == "FAIL")).all()


def test_embed_is_float32_one_row_per_sample(trained, tiny) -> None:
    emb = get_adapter().embed(trained.best_checkpoint, tiny.val_csv)
    assert emb.dtype == np.float32 and emb.shape == (len(pd.read_csv(tiny.val_csv)), 480)
    assert np.isfinite(emb).all()


def test_embed_and_score_is_embed_plus_infer_in_one_pass(trained, tiny, tmp_path) -> None:
    adapter = get_adapter()
    emb, scores = adapter.embed_and_score(trained.best_checkpoint, tiny.val_csv)
    np.testing.assert_allclose(emb, adapter.embed(trained.best_checkpoint, tiny.val_csv), rtol=1e-5, atol=1e-6)
    inferred = pd.read_csv(adapter.infer(trained.best_checkpoint, tiny.val_csv, tmp_path / "s.csv"))["score"]
    np.testing.assert_allclose(scores, inferred.to_numpy(), rtol=1e-6, atol=1e-9)


def test_empty_csv_is_refused_and_nothing_written(tiny, tmp_path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("input_path,golden_path,label,object_name\n")
    spec = tiny.spec()
    with pytest.raises(DataError, match="has a header but no rows"):
        TorchAdapter().train(spec, empty, tiny.val_csv, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_wrong_image_size_is_refused(trained, tiny, tmp_path) -> None:
    spec = tiny.spec()
    spec.model.input_size = 64  # the tiny workspace has 32x32 images
    with pytest.raises(DataError, match=r"is 32x32 but the spec expects 64x64 \(model.input_size\)"):
        TorchAdapter().train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_wrong_channel_count_is_refused(tiny, tmp_path) -> None:
    spec = tiny.spec()
    spec.model.num_input = 2
    with pytest.raises(DataError, match="model.num_input is 2 but dataset.classify.input_map lists 1 light"):
        TorchAdapter().train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run")


def test_validation_without_defects_cannot_select_a_checkpoint(tiny, tmp_path) -> None:
    df = pd.read_csv(tiny.val_csv)
    df[df["label"] == "PASS"].to_csv(tmp_path / "pass_only.csv", index=False)
    with pytest.raises(DataError, match="needs both PASS and defect rows"):
        TorchAdapter().train(tiny.spec(), tiny.train_csv, tmp_path / "pass_only.csv", tmp_path / "run")


@pytest.mark.parametrize(("patch", "message"), [
    ({"train": {"optim": {"lrr": 0.1}}}, "unknown key 'train.optim.lrr'"),
    ({"model": {"width": 0}}, "'model.width': Input should be greater than or equal to 4"),
])
def test_bad_spec_values_are_spec_errors(tiny, tmp_path, patch, message) -> None:
    from deftpipe.spec import deep_merge

    data = deep_merge(spec_to_dict(tiny.spec()), patch)
    with pytest.raises(SpecError, match=message):
        TorchAdapter().train(data, tiny.train_csv, tiny.val_csv, tmp_path / "run")


def test_multiclass_model_trains_and_predicts_classes(tiny, tmp_path) -> None:
    spec = tiny.spec()
    spec.model.num_classes = 7
    spec.model.classes = ["PASS", "open", "short", "mousebite", "spur", "copper", "pin-hole"]
    r = TorchAdapter().train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run")
    assert set(r.metrics["pred_counts"]) <= set(spec.model.classes)
    out = TorchAdapter().infer(r.best_checkpoint, tiny.val_csv, tmp_path / "inf.csv")
    assert set(pd.read_csv(out)["prediction"]) <= set(spec.model.classes)
    spec.model.classes = ["open", "PASS"]
    with pytest.raises(SpecError, match="list 7 class names with PASS first"):
        TorchAdapter().train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run2")


def test_colour_images_are_refused_as_a_wrong_channel_count(tiny, tmp_path) -> None:
    import shutil

    from PIL import Image

    df = pd.read_csv(tiny.val_csv).head(4)
    images = tmp_path / "images"
    for folder in set(df["input_path"]) | set(df["golden_path"]):
        shutil.copytree(tiny.ws / "images" / folder, images / folder)
    row = df.iloc[0]
    png = images / row["input_path"] / f"{row['object_name']}.png"
    grey = np.asarray(Image.open(png).convert("L"))
    Image.fromarray(np.stack([grey, 255 - grey, grey], axis=-1)).save(png)  # a real colour image
    df.to_csv(tmp_path / "rows.csv", index=False)
    spec = tiny.spec()
    spec.dataset.classify.images_dir = str(images)
    with pytest.raises(DataError, match="has 3 colour channels; expected 1 grayscale channel"):
        TorchAdapter().train(spec, tmp_path / "rows.csv", tmp_path / "rows.csv", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_training_keeps_the_best_checkpoints_validation_scores(trained, tiny, tmp_path) -> None:
    adapter = get_adapter()
    kept = adapter.validation_scores(trained.best_checkpoint, tiny.val_csv)
    fresh = pd.read_csv(adapter.infer(trained.best_checkpoint, tiny.val_csv, tmp_path / "v.csv"))["score"]
    assert kept is not None and len(kept) == len(fresh)
    np.testing.assert_allclose(kept, fresh.to_numpy(), rtol=1e-5, atol=1e-6)  # exactly what infer gives
    # another CSV, or the same rows with one byte changed, or another checkpoint: not these scores
    assert adapter.validation_scores(trained.best_checkpoint, tiny.kpi_csv) is None
    changed = tmp_path / "val_copy.csv"
    changed.write_text(tiny.val_csv.read_text().replace("PASS", "PASS ", 1))
    assert adapter.validation_scores(trained.best_checkpoint, changed) is None
    other = tmp_path / trained.best_checkpoint.name
    other.write_bytes(trained.best_checkpoint.read_bytes())
    assert adapter.validation_scores(other, tiny.val_csv) is None
