"""The siamese network: every fusion builds, runs and embeds; the tolerant difference forgives shifts."""

from __future__ import annotations

import pytest
import torch

from deftpipe.model._network import FUSIONS, NetConfig, SiameseChangeNet, tolerant_diff


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("num_classes", [2, 4])
def test_every_fusion_gives_logits_and_an_embedding(fusion: str, num_classes: int) -> None:
    cfg = NetConfig(num_input=2, width=4, depth=3, fusion=fusion, input_size=32, num_classes=num_classes)
    net = SiameseChangeNet(cfg).eval()
    x = torch.rand(3, 2, 2, 32, 32)
    logits = net(x)
    assert logits.shape == ((3,) if num_classes == 2 else (3, num_classes))
    assert net.fuse(x).shape == (3, net.embed_dim)
    score = net.defect_score(logits)
    assert score.shape == (3,) and bool(((score >= 0) & (score <= 1)).all())


def test_swapping_nothing_but_identical_images_gives_zero_difference_features() -> None:
    net = SiameseChangeNet(NetConfig(width=4, depth=3, fusion="multiscale", input_size=32)).eval()
    img = torch.rand(2, 1, 1, 32, 32)
    assert torch.allclose(net.fuse(torch.cat([img, img], dim=1)), torch.zeros(1))


def test_tolerant_diff_ignores_a_shift_but_not_a_new_pattern() -> None:
    a = torch.zeros(1, 1, 16, 16)
    a[..., 6:9, 6:9] = 1.0
    shifted = torch.roll(a, shifts=(1, 1), dims=(2, 3))
    assert tolerant_diff(a, shifted, radius=1).abs().sum() == 0
    assert (a - shifted).abs().sum() > 0  # the plain difference does see it
    new = shifted.clone()
    new[..., 0, 0] = 1.0  # an extra blob far from anything in `a`
    assert tolerant_diff(a, new, radius=1)[..., 0, 0].item() > 0


def test_too_small_input_for_the_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="input_size 8 is too small for depth 4"):
        SiameseChangeNet(NetConfig(input_size=8, depth=4))


def test_context_view_sees_beyond_the_window_at_one_extra_encoder() -> None:
    cfg = NetConfig(width=4, depth=3, input_size=64, context=2)
    net = SiameseChangeNet(cfg).eval()
    assert net.embed_dim == 2 * SiameseChangeNet(NetConfig(width=4, depth=3, input_size=32)).embed_dim
    x = torch.rand(2, 2, 1, 64, 64)
    outside = x.clone()
    outside[:, 1, :, :8, :8] = 1 - outside[:, 1, :, :8, :8]  # a change outside the centre 32 px window
    fine = net.embed_dim // 2
    a, b = net.fuse(x), net.fuse(outside)
    assert torch.equal(a[:, :fine], b[:, :fine])  # the full-resolution view is the centre only
    assert not torch.allclose(a[:, fine:], b[:, fine:])  # the context view sees it
    assert net(x).shape == (2,)


@pytest.mark.parametrize("size,context", [(66, 4), (32, 4)])
def test_context_must_divide_the_input_into_a_window_deep_enough(size: int, context: int) -> None:
    with pytest.raises(ValueError, match="does not fit context"):
        SiameseChangeNet(NetConfig(width=4, depth=4, input_size=size, context=context))


def test_flip_tta_scores_the_mean_over_the_four_flips_of_the_pair() -> None:
    torch.manual_seed(0)
    net = SiameseChangeNet(NetConfig(width=4, depth=3, input_size=32, flip_tta=True)).eval()
    x = torch.rand(3, 2, 1, 32, 32)
    with torch.no_grad():
        got = net.tta_score(x, net(x))
        want = torch.stack([net.defect_score(net(x.flip(f) if f else x))
                            for f in [(), (-1,), (-2,), (-1, -2)]]).mean(0)
        assert torch.allclose(got, want)
        assert not torch.allclose(got, net.defect_score(net(x)))  # the flips do change the score


def test_multiscale_conv_convolves_each_view_s_difference_maps_with_its_own_weights() -> None:
    net = SiameseChangeNet(NetConfig(width=4, depth=3, input_size=64, context=2, fusion="multiscale_conv")).eval()
    assert net.embed_dim == SiameseChangeNet(NetConfig(width=4, depth=3, input_size=64, context=2)).embed_dim
    assert net.diff_convs is not net.context_diff_convs and len(net.diff_convs.convs) == 3
    x = torch.rand(2, 2, 1, 64, 64)
    with torch.no_grad():
        before = net.fuse(x)
        net.context_diff_convs.convs[0][0].weight.mul_(2.0)  # only the context view's convs
        after = net.fuse(x)
    fine = net.embed_dim // 2
    assert torch.equal(before[:, :fine], after[:, :fine]) and not torch.allclose(before[:, fine:], after[:, fine:])
