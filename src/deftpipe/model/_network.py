"""The ChangeNet-style siamese change classifier: one file, a config plus modules.

A shared CNN encoder sees the golden and the test image (``num_input`` lighting channels each);
a fusion compares them; an MLP head turns the fused vector into a defect logit (binary) or class
logits (multi-class). Fusions (``model.fusion``):

* ``late_absdiff``: ``|a - b|`` of the globally pooled encodings (cheapest, loses location).
* ``late_concat``: ``[a, b]`` of the pooled encodings; the head learns the comparison.
* ``multiscale``: feature maps of every stage differenced (``|fa - fb|``), each pooled (mean and
  max) and concatenated, as ChangeNet compares features at several scales.
* ``multiscale_tolerant``: like ``multiscale`` but the difference forgives misregistration: a
  test feature counts as changed only where it lies outside the range the golden feature takes
  within ``shift_tolerance_px`` (and vice versa), computed with max-pooling at each stage's stride.
* ``multiscale_conv``: like ``multiscale`` but each stage's difference map goes through one more
  conv3x3-BN-ReLU before it is pooled, so the head can tell a compact change (a bite, a spur) from
  a thin line of change along every edge (misregistration, line width) instead of pooling both alike.
* ``early_diff``: one encoder over the stacked pixels ``(golden, test, |test - golden|)``.

Context (``model.context`` = k > 1): the image is k times the window the defect sits in; the
centre 1/k is compared at full resolution and the whole image, downsampled k times, by a second
encoder of the same shape; the head sees both fused vectors. A short or open larger than the
window, and the neighbourhood that tells a shift from a change, are then in view at twice the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

FUSIONS = ("late_absdiff", "late_concat", "multiscale", "multiscale_tolerant", "multiscale_conv", "early_diff")


@dataclass(frozen=True)
class NetConfig:
    """Architecture knobs, taken from the spec's ``model`` section."""

    num_input: int = 1  # lighting channels per image
    width: int = 16  # channels of the first stage; doubles per stage
    depth: int = 4  # conv stages, each halves the resolution
    fusion: str = "multiscale"
    input_size: int = 64
    num_classes: int = 2  # 2 = one defect logit; >2 = softmax over classes (PASS first)
    head_hidden: int = 64
    dropout: float = 0.1
    shift_tolerance_px: int = 8  # misregistration the tolerant fusion forgives, in input pixels
    context: int = 1  # k > 1: centre 1/k at full resolution + whole image downsampled k times
    flip_tta: bool = False  # inference scores: mean over the four flips (see SiameseChangeNet.tta_score)
    pool_first: bool = False  # each stage: conv, max-pool, BN, ReLU (a quarter of the BN/ReLU work)

    @classmethod
    def from_spec(cls, spec) -> NetConfig:  # spec: deftpipe.spec.Spec
        m = spec.model
        return cls(num_input=m.num_input, width=m.width, depth=m.depth, fusion=m.fusion,
                   input_size=m.input_size, num_classes=m.num_classes, head_hidden=m.head_hidden,
                   dropout=m.dropout, shift_tolerance_px=m.shift_tolerance_px, context=m.context,
                   flip_tta=m.flip_tta, pool_first=m.pool_first)

    @property
    def num_outputs(self) -> int:
        return 1 if self.num_classes == 2 else self.num_classes


def scoring() -> bool:
    """No gradient is taken (``inference_mode`` / ``no_grad``): a layer may then take a faster route
    to the same values (:func:`max_pool_2x2`, ``_pool``'s spatial max) whose gradient would differ
    from, or cost more than, the one training uses."""
    return not torch.is_grad_enabled()


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)``, bit for bit, for scoring: on a channels-last map of even size, two
    element-wise maxima over views of the (N, H, W, C) memory: branch-free, where the pooling kernel's
    branches are as unpredictable as the map. With ``_pool``'s scoring max, flip-TTA scoring on real
    DeepPCB crops went from 429-476 to 474-624 pairs/s (bench/results/speed.json ``step/s17c``,
    ``real4``-``real6``). Through autograd it made a training step 3x as long, so training keeps
    ``nn.MaxPool2d``. Any other map, and any map on a GPU, goes to the kernel."""
    n, c, h, w = x.shape
    if h % 2 or w % 2 or x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last):
        return F.max_pool2d(x, 2)
    rows = x.permute(0, 2, 3, 1).reshape(n * h // 2, 2, w // 2, 2 * c)  # a row pair; a column pair per cell
    cols = torch.maximum(rows[:, 0], rows[:, 1]).view(n * h // 2, w // 2, 2, c)
    return torch.maximum(cols[:, :, 0], cols[:, :, 1]).view(n, h // 2, w // 2, c).permute(0, 3, 1, 2)


class Stage(nn.Sequential):
    """conv3x3-BN-ReLU-maxpool2, or with ``pool_first`` conv3x3-maxpool2-BN-ReLU.

    The modules (and so the checkpoint keys ``stages.i.0`` conv, ``stages.i.1`` BN) are the same in
    both orders; only the order of the calls differs. Pooling first normalises a quarter of the
    values: on CPU the BN and ReLU passes over the full-resolution map cost more than the conv.
    """

    def __init__(self, in_ch: int, out_ch: int, pool_first: bool = False):
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.pool_first = pool_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, relu, pool = self
        if scoring():
            pool = max_pool_2x2
        if self.pool_first:
            return relu(bn(pool(conv(x))))
        return pool(relu(bn(conv(x))))


class Encoder(nn.Module):
    """``depth`` stages (:class:`Stage`), each halving the resolution; returns every stage's map."""

    def __init__(self, in_ch: int, width: int, depth: int, pool_first: bool = False):
        super().__init__()
        chans = [width * 2**i for i in range(depth)]
        self.stages = nn.ModuleList()
        for out_ch in chans:
            self.stages.append(Stage(in_ch, out_ch, pool_first))
            in_ch = out_ch
        self.channels = chans

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class DiffConvs(nn.Module):
    """One conv3x3-BN-ReLU per stage, applied to that stage's difference map (``multiscale_conv``)."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                                 nn.ReLU(inplace=True)) for c in channels)

    def forward(self, diffs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(d) for conv, d in zip(self.convs, diffs, strict=True)]


def _mean_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cat([mean, max])`` over space (B, 2C), and the max as (B, C, 1, 1)."""
    peak = F.adaptive_max_pool2d(x, 1)
    return torch.cat([x.mean(dim=(2, 3)), peak.flatten(1)], dim=1), peak


class _MeanMax(torch.autograd.Function):
    """Training's spatial pool: the values of ``cat([x.mean((2, 3)), x.amax((2, 3))])`` and the
    gradient autograd gives them, bit for bit (tests), in one node.

    The max comes from ``adaptive_max_pool2d`` (``amax`` reduces a channels-last bf16 map across its
    strided spatial axes about 7x slower). The backward is ``amax``'s own formula, each maximum taking
    ``grad / count`` of equal maxima (``scale_grad_by_count``), plus the mean's ``grad / (H·W)``, in one
    ``addcmul`` with both as broadcasts: autograd added the two as full maps of different layouts
    (channels-last and not), and converted a boolean mask twice. The count is cast to the map's dtype
    before the division, as autograd's integer count is.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        pooled, peak = _mean_max(x)
        ctx.save_for_backward(x, peak)
        return pooled

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, peak = ctx.saved_tensors
        c, h, w = x.shape[1:]
        hit = torch.eq(x, peak, out=torch.empty_like(x))  # 1 at each maximum, in the map's dtype and layout
        count = hit.sum(dim=(2, 3), keepdim=True, dtype=torch.float32).to(x.dtype)
        # mean's gradient + hit * max's: the products are exact, so one rounding, as autograd's mul-then-add
        return torch.addcmul(grad[:, :c, None, None] / (h * w), hit, grad[:, c:, None, None] / count)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Mean and max over space: (B, C, H, W) -> (B, 2C).

    The max's gradient in training is ``amax``'s (:class:`_MeanMax`): split between equal maxima,
    which bf16 maps of flat board regions are full of. A pool that gives it all to the first trained
    fold f1 worse on all three seeds tried (docs/benchmarks.md, "Speed, seventeenth session")."""
    return _mean_max(x)[0] if scoring() else _MeanMax.apply(x)


def mean_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """``F.avg_pool2d`` with a k x k window and stride k over the last two axes of a float32 CPU
    tensor, bit for bit (test): the window's values summed in the kernel's order (row by row) over
    strided views, then divided by k·k. The kernel's loop over a map that is not channels-last is
    scalar; with :class:`_MeanMax`, a training step on real DeepPCB crops is 13-16 % shorter and
    flip-TTA scoring 7 % faster (bench/results/speed.json ``pool_ab/s19``). Other dtypes and devices
    go to the kernel."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return F.avg_pool2d(x.flatten(0, -3), k).unflatten(0, x.shape[:-2])
    cells = x.unflatten(-1, (x.shape[-1] // k, k)).unflatten(-3, (x.shape[-2] // k, k))  # (..., H/k, k, W/k, k)
    total = cells[..., 0, :, 0]
    for i in range(k):
        for j in range(k):
            if i or j:
                total = total + cells[..., i, :, j]
    return total / (k * k)


def tolerant_diff(fa: torch.Tensor, fb: torch.Tensor, radius: int) -> torch.Tensor:
    """How far each feature of one map lies outside the other's range within ``radius`` cells.

    Zero where ``fb`` at x lies within [min, max] of ``fa`` over the (2r+1)^2 neighbourhood of x,
    and vice versa: a shifted copy of the same pattern gives no difference, a new or missing
    pattern does. Max-pooling makes this one cheap op per direction (no loop over shifts).
    """
    if radius <= 0:
        return (fa - fb).abs()
    k = 2 * radius + 1

    def nb_max(t: torch.Tensor) -> torch.Tensor:
        # separable (k x 1 then 1 x k): the same square-window max at O(2k) instead of O(k^2)
        t = F.max_pool2d(t, (k, 1), stride=1, padding=(radius, 0))
        return F.max_pool2d(t, (1, k), stride=1, padding=(0, radius))

    def outside(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return F.relu(t - nb_max(ref)) + F.relu(-nb_max(-ref) - t)

    return outside(fb, fa) + outside(fa, fb)


class SiameseChangeNet(nn.Module):
    """Golden/test pair classifier. Input (B, 2, L, S, S) float in [0, 1]; axis 1 = (golden, test)."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        if cfg.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {cfg.fusion!r}; expected one of {', '.join(FUSIONS)}")
        if cfg.input_size < 2**cfg.depth:
            raise ValueError(f"input_size {cfg.input_size} is too small for depth {cfg.depth} "
                             f"(each stage halves it; need >= {2**cfg.depth})")
        view = cfg.input_size // cfg.context
        if view < 2**cfg.depth or view * cfg.context != cfg.input_size:
            raise ValueError(f"input_size {cfg.input_size} does not fit context {cfg.context} and depth "
                             f"{cfg.depth} (input_size / context must be a whole number >= {2**cfg.depth})")
        self.cfg = cfg
        in_ch = 3 * cfg.num_input if cfg.fusion == "early_diff" else cfg.num_input
        self.encoder = Encoder(in_ch, cfg.width, cfg.depth, cfg.pool_first)
        self.context_encoder = Encoder(in_ch, cfg.width, cfg.depth, cfg.pool_first) if cfg.context > 1 else None
        conv = cfg.fusion == "multiscale_conv"  # one DiffConvs per view; None otherwise (no weights)
        self.diff_convs = DiffConvs(self.encoder.channels) if conv else None
        self.context_diff_convs = DiffConvs(self.encoder.channels) if conv and cfg.context > 1 else None
        self.embed_dim = self._fused_dim() * (2 if cfg.context > 1 else 1)
        self.head = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(self.embed_dim, cfg.head_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.head_hidden, cfg.num_outputs),
        )

    def _fused_dim(self) -> int:
        ch = self.encoder.channels
        if self.cfg.fusion in ("multiscale", "multiscale_tolerant", "multiscale_conv"):
            return 2 * sum(ch)
        if self.cfg.fusion == "late_concat":
            return 4 * ch[-1]
        return 2 * ch[-1]  # late_absdiff, early_diff

    def _radius(self, stage: int) -> int:
        # feature cell of stage i covers 2^(i+1) input pixels
        return math.ceil(self.cfg.shift_tolerance_px / 2 ** (stage + 1))

    def fuse(self, x: torch.Tensor) -> torch.Tensor:
        """The fused comparison vector (B, embed_dim): what the head sees, and the embedding."""
        x = (x - 0.5) / 0.5
        k = self.cfg.context
        if k == 1:
            return self._compare(x, self.encoder, self.diff_convs)
        s = x.shape[-1]
        o = (s - s // k) // 2
        fine = x[..., o:o + s // k, o:o + s // k]
        coarse = mean_pool(x, k)
        return torch.cat([self._compare(fine, self.encoder, self.diff_convs),
                          self._compare(coarse, self.context_encoder, self.context_diff_convs)], dim=1)

    def _compare(self, x: torch.Tensor, encoder: Encoder, diff_convs: DiffConvs | None = None) -> torch.Tensor:
        golden, test = x[:, 0], x[:, 1]
        fusion = self.cfg.fusion
        if fusion == "early_diff":
            return _pool(encoder(torch.cat([golden, test, (test - golden).abs()], dim=1))[-1])
        # one encoder pass over golden and test together: shared weights, one big batch. Each map is
        # cut in two with chunk (its gradient is one cat), not with f[:b] / f[b:] (each slice's
        # gradient is a zero-filled full-size map plus a copy: 22 % of a training step on CPU)
        pairs = [f.chunk(2) for f in encoder(torch.cat([golden, test], dim=0))]
        if fusion == "late_absdiff":
            fa, fb = pairs[-1]
            return (_pool(fa) - _pool(fb)).abs()
        if fusion == "late_concat":
            fa, fb = pairs[-1]
            return torch.cat([_pool(fa), _pool(fb)], dim=1)
        if fusion == "multiscale":
            return torch.cat([_pool((fa - fb).abs()) for fa, fb in pairs], dim=1)
        if fusion == "multiscale_conv":
            return torch.cat([_pool(d) for d in diff_convs([(fa - fb).abs() for fa, fb in pairs])], dim=1)
        return torch.cat([_pool(tolerant_diff(fa, fb, self._radius(i))) for i, (fa, fb) in enumerate(pairs)],
                         dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: (B,) for binary, (B, num_classes) for multi-class."""
        return self.logits(self.fuse(x))

    def logits(self, fused: torch.Tensor) -> torch.Tensor:
        """The head on a fused vector, always in fp32 (under a bf16 autocast too): bf16 logits would
        round the scores to ~3 digits and tie rows at the FAR@100%R threshold."""
        with torch.autocast(fused.device.type, enabled=False):
            out = self.head(fused.float())
        return out.squeeze(1) if self.cfg.num_outputs == 1 else out

    FLIPS = ((), (-1,), (-2,), (-1, -2))  # identity, horizontal, vertical, both (same on golden and test)

    def tta_score(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """P(defect) averaged over the four flips of the pair; ``logits`` are those of ``x`` itself."""
        scores = [self.defect_score(logits)] + [self.defect_score(self(x.flip(f))) for f in self.FLIPS[1:]]
        return torch.stack(scores).mean(0)

    @staticmethod
    def defect_score(logits: torch.Tensor) -> torch.Tensor:
        """P(defect): sigmoid of the binary logit, or 1 - P(PASS) (class 0) for multi-class."""
        if logits.dim() == 1:
            return torch.sigmoid(logits)
        return 1.0 - torch.softmax(logits, dim=1)[:, 0]


__all__ = ["FUSIONS", "NetConfig", "SiameseChangeNet", "Stage", "max_pool_2x2", "mean_pool", "tolerant_diff"]
