"""Training-time augmentation: what each knob may and may not change in a pair."""

from __future__ import annotations

import pytest
import torch

from deftpipe.model._data import NoiseBank, augment, edge_jitter
from deftpipe.spec import AugmentSection


def _pair_with_a_trace(s: int = 32) -> torch.Tensor:
    """(1, 2, 1, s, s): a vertical trace 8 px wide on both images, and a 4x4 bite out of the test's."""
    x = torch.zeros(1, 2, 1, s, s)
    x[..., :, 12:20] = 1.0
    x[0, 1, 0, 14:18, 12:16] = 0.0
    return x


def test_edge_jitter_moves_only_edge_pixels_by_one_pixel() -> None:
    x = _pair_with_a_trace()
    out = edge_jitter(x, 0.5, torch.Generator().manual_seed(0))
    changed = out != x
    assert changed.any()  # it did something along the edges
    hi = torch.nn.functional.max_pool2d(x.reshape(2, 1, 32, 32), 3, 1, 1).reshape(x.shape)
    lo = -torch.nn.functional.max_pool2d(-x.reshape(2, 1, 32, 32), 3, 1, 1).reshape(x.shape)
    assert not changed[hi == lo].any()  # flat regions (all copper or all background) never change
    assert ((out == hi) | (out == lo)).all()  # every pixel is a neighbour's value
    # golden and test are jittered independently: a clean pair comes out different
    clean = torch.zeros(1, 2, 1, 32, 32)
    clean[..., :, 12:20] = 1.0
    j = edge_jitter(clean, 0.5, torch.Generator().manual_seed(0))
    assert not torch.equal(j[:, 0], j[:, 1])


def test_edge_jitter_keeps_a_bite_deeper_than_one_pixel() -> None:
    x = _pair_with_a_trace()
    for seed in range(5):
        out = edge_jitter(x, 1.0, torch.Generator().manual_seed(seed))
        assert (out[0, 1, 0, 15:17, 12:14] == 0).all()  # the bite's core is still background
        assert (out[0, 0, 0, 15:17, 13:15] == 1).all()  # and copper on the template


def test_edge_jitter_off_by_default_draws_nothing() -> None:
    aug = AugmentSection(flip=False, rotate90=False, brightness=0.0, noise=0.0)
    assert aug.edge_jitter == 0.0
    x = _pair_with_a_trace()
    g = torch.Generator().manual_seed(3)
    assert torch.equal(augment(x.clone(), aug, g), x)
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=torch.Generator().manual_seed(3)))
    on = augment(x.clone(), aug.model_copy(update={"edge_jitter": 0.3}), torch.Generator().manual_seed(3))
    again = augment(x.clone(), aug.model_copy(update={"edge_jitter": 0.3}), torch.Generator().manual_seed(3))
    assert not torch.equal(on, x) and torch.equal(on, again)  # seeded: reproducible


def _augment_before(x, aug, gen):
    """The augmentation as written before the speed work (batch-wide where, masked rotations)."""
    import torch.nn.functional as F

    b, s = x.shape[0], x.shape[-1]

    def coin():
        return (torch.rand(b, generator=gen) < 0.5).view(b, 1, 1, 1, 1)

    if aug.flip:
        x = torch.where(coin(), x.flip(-1), x)
        x = torch.where(coin(), x.flip(-2), x)
    if aug.rotate90:
        k = torch.randint(0, 4, (b,), generator=gen)
        x = x.clone()
        for kk in (1, 2, 3):
            sel = k == kk
            if sel.any():
                x[sel] = torch.rot90(x[sel], kk, dims=(-2, -1))
    if aug.edge_jitter > 0:
        x = edge_jitter(x, aug.edge_jitter, gen)
    golden, test = x[:, 0], x[:, 1]
    p = aug.shift_px
    if p > 0:
        padded = F.pad(test, (p, p, p, p), mode="replicate")
        dy, dx = torch.randint(-p, p + 1, (2, b), generator=gen)
        ar = torch.arange(s)
        rows = (ar[None, :] + p + dy[:, None])[:, :, None]
        cols = (ar[None, :] + p + dx[:, None])[:, None, :]
        test = padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if aug.brightness > 0:
        gain = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * aug.brightness
        test = test * gain
    x = torch.stack([golden, test], dim=1)
    if aug.noise > 0:
        x = x + torch.randn(x.shape, generator=gen) * aug.noise
    return x.clamp_(0.0, 1.0)


@pytest.mark.parametrize("update", [{}, {"shift_px": 3}, {"edge_jitter": 0.2}, {"flip": False},
                                    {"rotate90": False, "brightness": 0.0}, {"noise": 0.0, "shift_px": 2}])
def test_the_fast_augmentation_draws_the_same_batch_as_before_and_leaves_its_input(update) -> None:
    aug = AugmentSection().model_copy(update=update)
    x = torch.rand(9, 2, 2, 16, 16)
    kept = x.clone()
    for seed in range(3):
        fast = augment(x, aug, torch.Generator().manual_seed(seed))
        ref = _augment_before(x.clone(), aug, torch.Generator().manual_seed(seed))
        assert torch.equal(fast, ref), (update, seed)
    assert torch.equal(x, kept)


@pytest.mark.parametrize("update", [{}, {"shift_px": 3, "edge_jitter": 0.2}, {"flip": False, "rotate90": False}])
def test_a_uint8_batch_is_augmented_exactly_as_its_float_copy(update) -> None:
    aug = AugmentSection().model_copy(update=update)
    images = torch.randint(0, 256, (9, 2, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    kept = images.clone()
    for seed in range(3):
        from_u8 = augment(images, aug, torch.Generator().manual_seed(seed))
        from_float = augment(images.float().div_(255.0), aug, torch.Generator().manual_seed(seed))
        assert from_u8.dtype == torch.float32 and torch.equal(from_u8, from_float), (update, seed)
    assert torch.equal(images, kept)


def test_the_noise_bank_serves_gaussian_windows_that_differ_per_batch_and_repeat_per_seed() -> None:
    aug = AugmentSection(flip=False, rotate90=False, brightness=0.0, noise=0.1)
    x = torch.full((4, 2, 1, 32, 32), 0.5)

    def batches(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        bank = NoiseBank(g, x.numel())
        return [augment(x, aug, g, bank) for _ in range(3)]

    a, again, other = batches(0), batches(0), batches(1)
    assert all(torch.equal(p, q) for p, q in zip(a, again, strict=True))  # a seed gives the same batches
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], other[0])  # a new window, a new seed
    noise = (a[0] - 0.5) / 0.1
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1.0) < 0.05
    g = torch.Generator().manual_seed(0)
    big = NoiseBank(g, 10, windows=1).take(torch.Size([5, 5]), g)  # larger than the bank: a fresh draw
    assert big.shape == (5, 5)
