"""Dataset CSV -> in-memory tensors, and the pair-consistent augmentation.

The decoded images of a split (``deftpipe.data.load_pairs``: the on-disk image cache) are held in
memory as one uint8 tensor, so an epoch never touches the disk and a batch is one index operation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from deftpipe.config import find_workspace
from deftpipe.data import PASS, ImageLayout, is_defect, layout_for, load_pairs, read_dataset
from deftpipe.errors import DataError, SpecError


@dataclass
class PairSet:
    """One split in memory."""

    df: pd.DataFrame  # the CSV rows (strings), in file order
    images: torch.Tensor  # uint8 (N, 2, L, S, S); axis 1 = (golden, test)
    targets: torch.Tensor  # float 0/1 (binary) or long class index (multi-class)
    is_defect: np.ndarray  # bool (N,)
    labels: list[str]  # true class names

    def __len__(self) -> int:
        return len(self.df)


def class_names(spec) -> list[str]:
    """Output classes: ``[PASS, FAIL]`` for binary, else ``model.classes`` (PASS first)."""
    m = spec.model
    if m.num_classes == 2:
        return [PASS, "FAIL"]
    if not m.classes or len(m.classes) != m.num_classes or m.classes[0] != PASS:
        raise SpecError(
            f"model.num_classes is {m.num_classes} but model.classes is {m.classes!r}; list "
            f"{m.num_classes} class names with PASS first, e.g. [PASS, open, short, ...]"
        )
    return list(m.classes)


def resolve_layout(spec, csv: Path, images_dir: str | Path | None = None) -> ImageLayout:
    """Where ``csv``'s images are: ``images_dir`` when given; else, for a CSV inside a workspace, that
    workspace's ``data.images_dir`` (:func:`deftpipe.data._layout.layout_for`, the rule every command
    uses); else the spec's. A spec stored in a checkpoint never decides where another workspace's CSV
    reads its images from."""
    ext, lights = spec.dataset.classify.image_ext, spec.lights
    if images_dir is not None:
        if not Path(images_dir).is_dir():
            raise DataError(f"images folder {images_dir} (--images-dir) does not exist; pass the folder the "
                            f"paths in {csv} are relative to")
        return ImageLayout.create(images_dir, ext, lights)
    layout = layout_for(spec, csv.resolve().parent)
    ws = find_workspace(csv.resolve().parent)
    if ws is not None:
        if not layout.images_dir.is_dir():
            raise DataError(f"images folder {layout.images_dir} of the workspace holding {csv} does not exist; fix "
                            f"data.images_dir in {ws / 'pipeline.yaml'} or pass the image folder with --images-dir")
        return layout
    if layout.images_dir.is_dir():
        return layout
    raise DataError(f"images folder {layout.images_dir} (dataset.classify.images_dir) does not exist; "
                    f"fix the spec, or pass the folder the paths in {csv} are relative to with --images-dir")


def load_pair_set(csv: str | Path, spec, classes: list[str], images_dir: str | Path | None = None) -> PairSet:
    """Read ``csv`` and decode its image pairs at ``model.input_size`` (images: :func:`resolve_layout`).

    Raises:
        DataError: empty/malformed CSV, missing or wrongly sized images, a label unknown to a
            multi-class spec, or a lighting count other than ``model.num_input``.
    """
    csv = Path(csv)
    df = read_dataset(csv)
    n_light = max(1, len(spec.lights))
    if n_light != spec.model.num_input:
        raise DataError(
            f"model.num_input is {spec.model.num_input} but dataset.classify.input_map lists {n_light} "
            f"light(s) ({', '.join(spec.lights) or 'none = one image per side'}); make them agree"
        )
    labels = df["label"].tolist()
    defect = is_defect(df["label"]).to_numpy()
    if len(classes) == 2:
        targets = torch.from_numpy(defect.astype(np.float32))
    else:
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({lab for lab in labels if lab not in index})
        if unknown:
            raise DataError(f"{csv.name}: label(s) {', '.join(unknown)} are not in model.classes "
                            f"({', '.join(classes)}); add them to the spec or fix the CSV")
        targets = torch.tensor([index[lab] for lab in labels], dtype=torch.long)
    images = load_pairs(df, resolve_layout(spec, csv, images_dir), spec.model.input_size)
    return PairSet(df, torch.from_numpy(images), targets, defect, labels)


class NoiseBank:
    """The augmentation's Gaussian pixel noise, drawn once (an epoch) and served as random windows.

    ``torch.randn`` on the CPU generator is serial: a fresh draw for every pixel of a DeepPCB batch
    (32 pairs of two 128 px images, 1M values) took 4 ms of a 65 ms training step. A bank of
    ``windows`` batches' worth, drawn from the same seeded generator, serves each batch a window at
    a random offset: the values are still N(0, 1), and a seed still gives the same batches.
    """

    def __init__(self, gen: torch.Generator, batch_numel: int, windows: int = 8):
        self.values = torch.randn(max(1, batch_numel) * windows, generator=gen)

    def take(self, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
        n = math.prod(shape)
        if n > self.values.numel():
            return torch.randn(shape, generator=gen)
        start = int(torch.randint(0, self.values.numel() - n + 1, (1,), generator=gen))
        return self.values[start:start + n].view(shape)


def augment(x: torch.Tensor, aug, gen: torch.Generator, noise: NoiseBank | None = None) -> torch.Tensor:
    """Random pair-consistent augmentation of a batch (B, 2, L, S, S): uint8 as stored, or float in
    [0, 1]; the result is float in [0, 1]. A uint8 batch is flipped and turned before it is converted,
    which copies a quarter of the bytes (the result is the same: both are exact).

    Flips and 90-degree rotations are applied identically to golden and test (a defect must stay
    where it is relative to its template); the shift, brightness and noise are independent, to
    mimic misregistration and exposure differences between the two captures.

    The random draws come in a fixed order from ``gen`` (horizontal flips, vertical flips, rotations,
    edge jitter, shift, brightness, noise), so a seed gives the same batch. Each pair gets its one
    flip-and-rotation in a single copy, and the rest is done in place on that copy (``x`` itself is
    never changed): the batch-wide ``where`` and masked rotations this replaces were a third of a
    CPU training step. The noise comes from ``noise`` (:class:`NoiseBank`, what training passes)
    or, without one, from a fresh draw.
    """
    b, s = x.shape[0], x.shape[-1]

    def coin() -> torch.Tensor:
        return torch.rand(b, generator=gen) < 0.5

    no = torch.zeros(b, dtype=torch.bool)
    flip_h, flip_v = (coin(), coin()) if aug.flip else (no, no)
    turns = torch.randint(0, 4, (b,), generator=gen) if aug.rotate90 else torch.zeros(b, dtype=torch.long)
    x = _dihedral(x, flip_h.tolist(), flip_v.tolist(), turns.tolist())
    if x.dtype == torch.uint8:
        x = to_float(x)
    if aug.edge_jitter > 0:
        x = edge_jitter(x, aug.edge_jitter, gen)
    p = aug.shift_px
    if p > 0:
        # shifted crops of the edge-padded test image, gathered for the whole batch at once
        padded = F.pad(x[:, 1], (p, p, p, p), mode="replicate")
        dy, dx = torch.randint(-p, p + 1, (2, b), generator=gen)
        ar = torch.arange(s)
        rows = (ar[None, :] + p + dy[:, None])[:, :, None]  # (B, S, 1)
        cols = (ar[None, :] + p + dx[:, None])[:, None, :]  # (B, 1, S)
        x[:, 1] = padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if aug.brightness > 0:
        gain = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * aug.brightness
        x[:, 1] *= gain
    if aug.noise > 0:
        if noise is None:
            x += torch.randn(x.shape, generator=gen).mul_(aug.noise)
        else:
            x.add_(noise.take(x.shape, gen), alpha=aug.noise)
    return x.clamp_(0.0, 1.0)


def _dihedral(x: torch.Tensor, flip_h: list[bool], flip_v: list[bool], turns: list[int]) -> torch.Tensor:
    """A new batch: pair i flipped left-right (``flip_h``), then up-down (``flip_v``), then turned
    ``turns[i]`` quarter turns, golden and test alike."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for i, (h, v, k) in enumerate(zip(flip_h, flip_v, turns, strict=True)):
        xi = x[i]
        dims = [d for d, on in ((-1, h), (-2, v)) if on]
        if dims:
            xi = xi.flip(dims)
        if k:
            xi = torch.rot90(xi, k, dims=(-2, -1))
        out[i] = xi
    return out


def edge_jitter(x: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
    """Move a random ``rate`` share of the pixels by one pixel: each takes its 3x3 neighbourhood's
    max or min (half each), drawn independently for every image of the pair.

    Flat regions are unchanged (max = min = the pixel); along an edge the outline gets the ragged,
    one-pixel-off look of a template and a test binarized from two captures, so the pair differs by
    slivers that are not defects. A defect a few pixels deep stays.
    """
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-2], shape[-1])
    hi = F.max_pool2d(flat, 3, stride=1, padding=1)
    lo = -F.max_pool2d(-flat, 3, stride=1, padding=1)
    u = torch.rand(flat.shape, generator=gen)
    out = torch.where(u < rate / 2, hi, torch.where(u < rate, lo, flat))
    return out.reshape(shape)


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


__all__ = ["NoiseBank", "PairSet", "augment", "class_names", "edge_jitter", "load_pair_set", "resolve_layout", "to_float"]
