"""The speed levers keep the model's meaning: chunked halves, pool-first stages, bf16 autocast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deftpipe.model import _network, get_adapter
from deftpipe.model._network import NetConfig, SiameseChangeNet, _pool, max_pool_2x2, mean_pool
from deftpipe.model._precision import native_bf16, resolve_precision


def _sliced_multiscale(model: SiameseChangeNet, x: torch.Tensor) -> torch.Tensor:
    """The multiscale fusion as written before the chunk change: f[:b] and f[b:]."""
    x = (x - 0.5) / 0.5
    b = x.shape[0]
    feats = model.encoder(torch.cat([x[:, 0], x[:, 1]], dim=0))
    return model.logits(torch.cat([_pool((f[:b] - f[b:]).abs()) for f in feats], dim=1))


def test_chunked_halves_give_the_sliced_logits_and_gradients() -> None:
    torch.manual_seed(0)
    model = SiameseChangeNet(NetConfig(input_size=32, depth=3, width=4, dropout=0.0)).eval()
    x = torch.rand(3, 2, 1, 32, 32)
    a = model(x)
    ga = torch.autograd.grad(a.sum(), list(model.parameters()))
    b = _sliced_multiscale(model, x)
    gb = torch.autograd.grad(b.sum(), list(model.parameters()))
    assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(ga, gb, strict=True))


def test_pool_first_keeps_the_checkpoint_keys_and_changes_the_order() -> None:
    torch.manual_seed(0)
    plain = SiameseChangeNet(NetConfig(input_size=32, depth=3, width=4, context=2, dropout=0.0))
    first = SiameseChangeNet(NetConfig(input_size=32, depth=3, width=4, context=2, dropout=0.0, pool_first=True))
    assert plain.state_dict().keys() == first.state_dict().keys()
    first.load_state_dict(plain.state_dict())  # a warm start across the flag loads every weight
    x = torch.rand(4, 2, 1, 32, 32)
    # eval with BN's scale > 0: an increasing affine map commutes with max-pool, the same function
    plain.eval(), first.eval()
    assert torch.allclose(plain(x), first(x), atol=1e-6)
    # training: BN's batch statistics are taken over the pooled map, so the two orders differ
    plain.train(), first.train()
    assert not torch.allclose(plain(x), first(x))
    # pool-first: conv, max-pool, BN, ReLU — by hand for the first stage
    conv, bn, relu, pool = first.encoder.stages[0]
    ref = relu(bn(F.max_pool2d(conv(x[:, 0]), 2)))
    assert torch.equal(first.encoder.stages[0](x[:, 0]), ref)


def test_bf16_autocast_keeps_the_head_and_the_scores_in_fp32() -> None:
    torch.manual_seed(0)
    model = SiameseChangeNet(NetConfig(input_size=32, depth=3, width=4)).eval()
    x = torch.rand(4, 2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, logits = model.fuse(x), model(x)
    assert fused.dtype == torch.bfloat16 and logits.dtype == torch.float32
    assert torch.allclose(logits, model(x), atol=0.05)  # the same model, rounded convolutions


def test_auto_precision_is_bf16_only_where_the_device_has_it() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"


@pytest.mark.parametrize("precision", ["bf16", "auto"])
def test_training_records_the_precision_it_ran_in(tiny, tmp_path, precision: str) -> None:
    spec = tiny.spec(precision=precision)
    spec.model.pool_first = True
    r = get_adapter(spec).train(spec, tiny.train_csv, tiny.val_csv, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["precision"] == resolve_precision(precision, torch.device("cpu"))
    assert metrics["spec"]["model"]["pool_first"] is True and r.metrics["far_pct"] is not None


def test_mining_scores_with_flips_equal_inference_scores(tiny, trained, tmp_path) -> None:
    import pandas as pd

    from deftpipe.model._checkpoint import read_checkpoint
    from deftpipe.spec import spec_from_dict

    spec = spec_from_dict(read_checkpoint(trained.best_checkpoint)["spec"])
    spec.model.flip_tta = True
    ckpt = tmp_path / trained.best_checkpoint.name
    data = read_checkpoint(trained.best_checkpoint)
    data["spec"]["model"]["flip_tta"] = True
    torch.save(data, ckpt)
    adapter = get_adapter(spec)
    emb, scores = adapter.embed_and_score(ckpt, tiny.val_csv)
    inferred = pd.read_csv(adapter.infer(ckpt, tiny.val_csv, tmp_path / "scores.csv"))["score"].to_numpy()
    assert emb.shape[0] == len(inferred) and abs(scores - inferred).max() < 1e-6


def test_new_workspaces_start_with_the_speed_levers_and_old_specs_keep_their_meaning() -> None:
    from deftpipe.data._workspace import baseline_spec
    from deftpipe.spec import Spec

    new = baseline_spec(128)
    assert new.model.pool_first is True and new.train.precision == "auto"
    old = Spec.model_validate({"model": {"input_size": 128}})  # a spec file written before the levers
    assert old.model.pool_first is False and old.train.precision == "fp32"


def test_each_epoch_records_its_validation_time(trained) -> None:
    """metrics.json says where an epoch's time went: validation apart from the whole epoch."""
    history = json.loads((Path(trained.best_checkpoint).parent / "metrics.json").read_text())["history"]
    assert history and all(0.0 < h["val_seconds"] < h["epoch_seconds"] for h in history)


def test_the_epochs_validation_is_one_pass_and_flip_tta_stays_for_the_shipped_scores(tiny, tmp_path) -> None:
    """With flip TTA the epoch's validation figure is the unflipped pass alone (it chooses the epoch and
    ranks trials); inference keeps the four-flip mean, and RCA does not get the one-pass scores."""
    import pandas as pd

    from deftpipe.metrics import compute_metrics
    from deftpipe.model._torch_adapter import TorchAdapter
    from deftpipe.model._train import predict
    from deftpipe.model._val_scores import FILE

    spec = tiny.spec(num_epochs=1)
    spec.model.flip_tta = True
    adapter = get_adapter(spec)
    result = adapter.train(spec, tiny.val_csv, tiny.val_csv, tmp_path / "run")
    assert not (tmp_path / "run" / FILE).exists()  # not the scores inference gives: RCA scores again
    assert adapter.validation_scores(result.best_checkpoint, tiny.val_csv) is None
    truth = pd.read_csv(tiny.val_csv)["label"].ne("PASS").to_numpy()
    flips = pd.read_csv(adapter.infer(result.best_checkpoint, tiny.val_csv, tmp_path / "tta.csv"))["score"].to_numpy()
    model, _, _, data, device = TorchAdapter()._load(result.best_checkpoint, tiny.val_csv)
    single, _ = predict(model, data, device, precision=spec.train.precision, tta=False)
    assert abs(single - flips).max() > 1e-4  # the two scorings differ on this model
    assert result.metrics["far_pct"] == pytest.approx(compute_metrics(truth, single)["far_pct"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scoring_max_pool_is_the_pooling_kernel_bit_for_bit(dtype) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 8, 12, 10).to(dtype).contiguous(memory_format=torch.channels_last)
    x[0, 1, 2, 3] = float("nan")  # NaN propagates as the kernel's does
    out = max_pool_2x2(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref = F.max_pool2d(x, 2)
    assert torch.equal(out.nan_to_num(-1.0), ref.nan_to_num(-1.0))
    assert out[0, 1, 1, 1].isnan()
    for other in (x.contiguous(), x[..., :11, :]):  # not channels-last; an odd height: the kernel itself
        assert torch.equal(max_pool_2x2(other).nan_to_num(-1.0), F.max_pool2d(other, 2).nan_to_num(-1.0))


def test_scores_without_autograd_equal_those_with_it() -> None:
    """Stages pool by views when no gradient is taken (scoring) and with the kernel in training:
    the same eval-mode model gives the same logits either way, bit for bit."""
    torch.manual_seed(0)
    cfg = NetConfig(input_size=64, depth=3, width=8, context=2, dropout=0.0, pool_first=True)
    model = SiameseChangeNet(cfg).to(memory_format=torch.channels_last).eval()
    x = torch.rand(5, 2, 1, 64, 64)
    with torch.inference_mode():
        scored = model(x)
    trained_path = model(x)  # autograd on: nn.MaxPool2d
    assert trained_path.requires_grad and torch.equal(scored, trained_path.detach())


def test_spatial_pool_gives_the_mean_and_the_max_and_training_splits_ties() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8, 8).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    want = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
    with torch.inference_mode():  # scoring: adaptive_max_pool2d, the same values
        assert torch.equal(_pool(x), want)
    assert torch.equal(_pool(x), want)  # training: amax
    flat = torch.zeros(1, 1, 2, 2, requires_grad=True)  # four equal maxima (a flat board region)
    _pool(flat)[0, 1].backward()
    assert torch.equal(flat.grad, torch.full((1, 1, 2, 2), 0.25))  # amax's gradient, split between them


def _autograd_pool(x: torch.Tensor) -> torch.Tensor:
    """The spatial pool as autograd wrote it before :class:`_network._MeanMax`."""
    return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_pool_gives_autograds_values_and_gradient_bit_for_bit(dtype) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8, 8).round().clamp(-1, 1).to(dtype)  # three levels: maps full of equal maxima
    x[1, 2] = 0.5  # a flat channel: 64 equal maxima
    for layout in (torch.channels_last, torch.contiguous_format):
        a = x.contiguous(memory_format=layout).requires_grad_()
        b = x.contiguous(memory_format=layout).requires_grad_()
        g = torch.randn(4, 12).to(dtype)
        out_a, out_b = _pool(a), _autograd_pool(b)
        assert torch.equal(out_a, out_b)
        out_a.backward(g)
        out_b.backward(g)
        assert torch.equal(a.grad, b.grad)
        assert a.grad.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_context_view_is_the_average_pool_bit_for_bit(k) -> None:
    torch.manual_seed(0)
    x = (torch.rand(3, 2, 1, 12 * k, 12 * k) - 0.5) / 0.5
    x[0, 1, 0, 3, 5] = float("inf")
    want = F.avg_pool2d(x.flatten(1, 2), k).unflatten(1, x.shape[1:3])
    assert torch.equal(mean_pool(x, k), want)
    assert torch.equal(mean_pool(x.flip(-1), k), F.avg_pool2d(x.flip(-1).flatten(1, 2), k).unflatten(1, (2, 1)))
    half = x.to(torch.bfloat16)  # other dtypes: the kernel itself
    assert torch.equal(mean_pool(half, k), F.avg_pool2d(half.flatten(1, 2), k).unflatten(1, (2, 1)))


def test_training_steps_give_the_weights_autograd_gave(monkeypatch) -> None:
    """A few optimiser steps of the context-2 model under bf16 autocast: the same weights, bit for
    bit, as with the spatial pool and the context view written as autograd ops (ties included)."""
    cfg = NetConfig(input_size=64, depth=3, width=8, context=2, pool_first=True)
    x = (torch.rand(6, 2, 1, 64, 64) * 4).round() / 4  # few grey levels: equal maxima everywhere
    y = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])

    def train() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = SiameseChangeNet(cfg).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(logits, y).backward()
            opt.step()
        return model.state_dict()

    now = train()
    monkeypatch.setattr(_network, "_pool", _autograd_pool)
    monkeypatch.setattr(_network, "mean_pool", lambda t, k: F.avg_pool2d(t.flatten(1, 2), k).unflatten(1, t.shape[1:3]))
    before = train()
    assert all(torch.equal(now[key], before[key]) for key in now)
