"""The training loop: checkpoints, selection, determinism, warm start, divergence, early stop."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from deftpipe.errors import CheckpointError, TrainingError
from deftpipe.metrics import compute_metrics
from deftpipe.model import get_adapter
from deftpipe.model._checkpoint import read_checkpoint, save_checkpoint
from deftpipe.model._data import class_names, load_pair_set
from deftpipe.model._network import NetConfig, SiameseChangeNet
from deftpipe.model._precision import resolve_precision
from deftpipe.model._train import later_epoch_replaces, predict


def test_run_writes_named_checkpoints_and_a_metrics_history(trained) -> None:
    assert re.fullmatch(r"model_epoch_\d{3}_step_\d{3}\.pth", trained.best_checkpoint.name)
    run = trained.best_checkpoint.parent
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "complete" and len(record["history"]) == 2
    assert record["best_checkpoint"] == trained.best_checkpoint.name
    assert trained.best_epoch in (1, 2) and record["best_epoch"] == trained.best_epoch
    for m in trained.history:
        assert {"far_pct", "val_loss", "auroc", "far_ci_low", "far_ci_high", "train_loss"} <= set(m)
    ckpt = torch.load(trained.best_checkpoint, weights_only=True)
    assert ckpt["epoch"] == trained.best_epoch and ckpt["spec"]["model"]["input_size"] == 32
    assert ckpt["metrics"]["far_pct"] == trained.metrics["far_pct"] and ckpt["version"] == 1
    assert not list(run.glob(".*.tmp*"))  # atomic writes leave no temp files


def test_a_later_epoch_replaces_the_one_in_hand_unless_that_one_is_better_beyond_the_noise() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40, bool), np.zeros(400, bool)]
    clean = np.where(y, rng.uniform(0.6, 1.0, y.size), rng.uniform(0.0, 0.4, y.size))  # FAR@100%R 0
    assert later_epoch_replaces(y, clean, None)  # the first epoch
    assert later_epoch_replaces(y, clean, clean)  # a tie (a saturated validation set): the later epoch
    noisy = clean.copy()
    noisy[~y] = rng.uniform(0.0, 0.9, (~y).sum())  # a quarter of the PASS rows above the lowest defects
    assert not later_epoch_replaces(y, noisy, clean)  # the one in hand is better beyond the noise: kept
    assert later_epoch_replaces(y, clean, noisy)
    one_off = clean.copy()
    one_off[np.flatnonzero(~y)[0]] = 0.95  # one PASS row above every defect: 0.25 % FAR, inside the noise
    assert later_epoch_replaces(y, one_off, clean)  # the old rule (lowest far_pct) kept the earlier one


def test_the_training_delivers_the_epoch_the_rule_keeps(tiny, tmp_path) -> None:
    spec = tiny.spec(num_epochs=2, keep_checkpoints=2)
    r = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run")
    val = load_pair_set(tiny.val_csv, spec, class_names(spec))
    scores = {}
    for ckpt in sorted((tmp_path / "run").glob("model_epoch_*.pth")):
        model = SiameseChangeNet(NetConfig.from_spec(spec))
        model.load_state_dict(read_checkpoint(ckpt)["state_dict"])
        model.to(memory_format=torch.channels_last)  # as training scores it
        precision = resolve_precision(spec.train.precision, torch.device("cpu"))
        scores[int(ckpt.name[12:15])] = predict(model, val, torch.device("cpu"), precision=precision, tta=False)[0]
    assert sorted(scores) == [1, 2]
    kept = 2 if later_epoch_replaces(val.is_defect, scores[2], scores[1], seed=spec.train.seed) else 1
    assert r.best_epoch == kept


def test_keep_checkpoints_prunes_all_but_best_and_last(tiny, tmp_path) -> None:
    spec = tiny.spec(num_epochs=3, keep_checkpoints=1)
    r = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run").glob("model_epoch_*.pth"))
    last = f"model_epoch_003_step_{r.history[-1]['step']:03d}.pth"
    assert set(names) == {last, r.best_checkpoint.name}


def test_training_beats_the_untrained_model(tiny, tmp_path) -> None:
    spec = tiny.spec(num_epochs=4, keep_checkpoints=4)
    spec.train.optim.lr = 3e-3
    spec.train.augment = {"flip": False, "rotate90": False, "shift_px": 0, "brightness": 0.0, "noise": 0.0}
    r = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run")
    data = load_pair_set(tiny.train_csv, spec, class_names(spec))
    torch.manual_seed(spec.train.seed)
    untrained = SiameseChangeNet(NetConfig.from_spec(spec))
    auroc0 = compute_metrics(data.is_defect, predict(untrained, data, torch.device("cpu"))[0])["auroc"]
    last = sorted((tmp_path / "run").glob("model_epoch_*.pth"))[-1]
    assert r.epochs_run == 4 and last.name.startswith("model_epoch_004")
    fit = get_adapter(spec).evaluate(last, tiny.train_csv)
    # a random siamese net already ranks clear pixel differences; training must still do better
    assert fit["auroc"] >= 0.95 and fit["auroc"] > auroc0, (auroc0, fit["auroc"])


def test_same_seed_same_weights_and_metrics(tiny, tmp_path) -> None:
    spec = tiny.spec()
    a = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "a")
    b = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "b")
    wa, wb = (read_checkpoint(r.best_checkpoint)["state_dict"] for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.metrics["far_pct"] == b.metrics["far_pct"] and a.metrics["val_loss"] == b.metrics["val_loss"]
    spec.train.seed += 1
    c = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "c")
    wc = read_checkpoint(c.best_checkpoint)["state_dict"]
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_warm_start_loads_the_weights(tiny, trained, tmp_path) -> None:
    spec = tiny.spec()
    spec.train.optim.lr = 1e-9  # barely moves: what comes out is what went in
    r = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "warm",
                                pretrained=trained.best_checkpoint)
    before = read_checkpoint(trained.best_checkpoint)["state_dict"]
    after = read_checkpoint(r.best_checkpoint)["state_dict"]
    convs = [k for k in before if k.endswith("weight") and before[k].dim() > 1]
    assert all(torch.allclose(before[k], after[k], atol=1e-5) for k in convs)
    spec.train.pretrained_model_path = None
    scratch = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "scratch")
    fresh = read_checkpoint(scratch.best_checkpoint)["state_dict"]
    assert not all(torch.allclose(before[k], fresh[k], atol=1e-5) for k in convs)


def test_warm_start_from_another_shape_is_a_checkpoint_error(tiny, trained, tmp_path) -> None:
    spec = tiny.spec()
    spec.model.width = 8
    spec.train.pretrained_model_path = str(trained.best_checkpoint)
    with pytest.raises(CheckpointError, match=r"does not fit this model \(shape .*\).*width/depth"):
        get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run")
    assert not list((tmp_path / "run").glob("*.pth"))


def test_diverging_loss_names_the_epoch_and_the_learning_rate(tiny, trained, tmp_path) -> None:
    # a warm start whose head is finite but huge: the logits overflow to inf on the first batch
    ckpt = read_checkpoint(trained.best_checkpoint)
    model = SiameseChangeNet(NetConfig.from_spec(tiny.spec()))
    model.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        model.head[-1].weight.fill_(3e38)
        model.head[-1].bias.fill_(3e38)
    from deftpipe.spec import spec_from_dict

    blown = save_checkpoint(tmp_path / "blown.pth", model, spec_from_dict(ckpt["spec"]), {}, epoch=1, step=1)
    spec = tiny.spec()
    lr = re.escape(f"(train.optim.lr={spec.train.optim.lr:g}")
    with pytest.raises(TrainingError, match=r"training diverged in epoch 1 .*learning rate is the likely cause " + lr):
        get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run", pretrained=blown)


def test_nan_weights_in_a_warm_start_are_refused(tiny, trained, tmp_path) -> None:
    ckpt = read_checkpoint(trained.best_checkpoint)
    ckpt["state_dict"]["head.1.bias"][0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pth")
    spec = tiny.spec()
    with pytest.raises(CheckpointError, match="holds NaN/inf weights"):
        get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run", pretrained=tmp_path / "nan.pth")


def test_epoch_callback_can_stop_the_run(tiny, tmp_path) -> None:
    seen = []
    spec = tiny.spec(num_epochs=3)
    r = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run",
                                epoch_callback=lambda e, m: seen.append((e, m["far_pct"])) or True)
    assert r.stopped_early and r.epochs_run == 1 and seen == [(1, r.metrics["far_pct"])]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "stopped_early"


def test_added_rows_weight_draws_the_loops_rows_that_much_more_often() -> None:
    import numpy as np
    import pandas as pd

    from deftpipe.model._data import PairSet
    from deftpipe.model._train import epoch_order

    n_base, n_added = 900, 100
    df = pd.DataFrame({"source": ["base_train"] * n_base + ["sdg"] * 50 + ["mining_pool"] * 50})
    targets = torch.zeros(len(df))
    data = PairSet(df, torch.zeros(len(df), 1), targets, np.zeros(len(df), bool), ["PASS"] * len(df))
    gen = torch.Generator().manual_seed(0)
    plain = epoch_order(data, "none", gen)
    assert sorted(plain.tolist()) == list(range(len(df)))  # weight 1: a plain permutation
    drawn = torch.cat([epoch_order(data, "none", gen, 5.0) for _ in range(20)])
    share = float((drawn >= n_base).float().mean())
    assert len(drawn) == 20 * len(df)  # the epoch keeps its length
    assert share == pytest.approx(5 * n_added / (n_base + 5 * n_added), abs=0.02)  # 0.357 vs 0.1 at weight 1
    no_source = PairSet(df.drop(columns="source"), data.images, targets, data.is_defect, data.labels)
    assert sorted(epoch_order(no_source, "none", gen, 5.0).tolist()) == list(range(len(df)))


def test_focal_loss_moves_the_weight_to_the_hard_rows():
    import torch.nn.functional as F

    from deftpipe.model._train import loss_fn

    logits = torch.tensor([4.0, -3.0, -4.0, 2.5])  # an easy defect, a missed defect, an easy PASS, a false alarm
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert torch.allclose(loss_fn(logits, targets, None), F.binary_cross_entropy_with_logits(logits, targets))
    plain = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    focal = 4 * loss_fn(logits, targets, None, focal_gamma=2.0)  # the mean of 4 rows
    hard = plain[[1, 3]] * (1 - torch.exp(-plain[[1, 3]])) ** 2
    easy = plain[[0, 2]] * (1 - torch.exp(-plain[[0, 2]])) ** 2
    assert torch.allclose(focal, hard.sum() + easy.sum())
    assert easy.sum() / hard.sum() < 1e-3 < plain[[0, 2]].sum() / plain[[1, 3]].sum()  # easy rows fade out
    # multi-class: the same factor on cross-entropy; 0 is the plain loss
    lc = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    tc = torch.tensor([0, 0])
    assert torch.allclose(loss_fn(lc, tc, None, 0.0), F.cross_entropy(lc, tc))
    assert loss_fn(lc, tc, None, 2.0) < loss_fn(lc, tc, None, 0.0)
