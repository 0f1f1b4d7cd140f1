"""DeepPCB importer: `deftpipe init --from-deeppcb PATH DIR`.

Each 640x640 (template, test) pair is decoded once, in a worker process, and cut into aligned
crops: one FAIL crop per annotated box (label = the box's class) and ``pass_ratio`` PASS crops per
box from windows that touch no box and show both copper and laminate. Crops are written as PNG
(lossless: no second JPEG generation). Rows carry the source image and crop origin as extra
columns (``source_image``, ``crop_x``, ``crop_y``, ``defect_box``) for root-cause analysis.

Crop rules (docs/data.md):
- FAIL, box fits: the window is jittered uniformly over the positions that keep the whole box
  inside (with a 2 px margin when possible), preferring a position that holds no other box.
- FAIL, box wider or taller than the crop (~10 % of open/short boxes at 64 px): the window is
  centred, along the oversized side, on the centroid of the pixels that actually differ between
  template and test inside the box, so the visible defect is in the crop; ``defect_box`` is the
  part of the box inside the crop.
- PASS: random windows at least 2 px away from every box whose darker and brighter phase each
  cover >= 8 % of the window and whose edge density is >= 2 %; duplicates by content are dropped.

Two options (docs/model.md, "Context and local alignment"), both off by default:
- ``context`` = k > 1: each stored crop is k times the window, centred on it (edge-replicated past
  the image border), so a model with ``model.context: k`` sees the window at full resolution and
  its neighbourhood downsampled; ``crop_x``/``crop_y``/``defect_box`` refer to the stored crop.
- ``align``: the test crop is cut at the integer shift (``_register.local_shift`` on the 2x window
  around the crop) that best aligns it with the template, removing the local misregistration.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from deftpipe.config import PipelineConfig
from deftpipe.data._csv import PASS
from deftpipe.data._deeppcb_scan import (
    SPLITS,
    Box,
    Pair,
    assign_groups,
    assignment_flags,
    discover_pairs,
    parse_annotation,
    split_pairs,
)
from deftpipe.data._open import open_image
from deftpipe.data._register import MAX_SHIFT, local_shift
from deftpipe.data._workspace import baseline_spec, build_workspace, write_workspace_files
from deftpipe.errors import DataError

# stored crop = 2 windows: the model sees the window at full resolution and its neighbourhood
# downsampled (model.context). Leave-board-groups-out folds, full size, 2 seeds: FAR@100%R <= 5 % on
# 6 of 8 cells against 4 of 8 with 1, at 1.64x the minutes per epoch on 2 cores (docs/model.md)
DEFAULT_CONTEXT = 2
BOX_MARGIN = 2  # px kept between a PASS window and any box, and around a FAIL box when possible
MIN_PHASE = 0.08  # PASS: min share of both dark and bright pixels
MIN_EDGES = 0.02  # PASS: min share of pixels on an edge


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _decode(path: Path) -> np.ndarray:
    try:
        with open_image(path) as im:
            return np.asarray(im.convert("L"))
    except OSError as e:
        raise DataError(f"cannot decode DeepPCB image {path}: {e}; restore the file") from None


def _overlaps(x: int, y: int, c: int, b: Box, margin: int = 0) -> bool:
    return x < b.x2 + margin and b.x1 - margin < x + c and y < b.y2 + margin and b.y1 - margin < y + c


def _fail_origin(rng, b: Box, boxes: list[Box], c: int, golden: np.ndarray, test: np.ndarray) -> tuple[int, int]:
    def axis(lo: int, hi: int, size: int, centroid: float) -> tuple[int, int]:
        if hi - lo <= c:  # fits: every origin that keeps the box inside, with a margin if possible
            a, z = max(0, hi - c), min(lo, size - c)
            if z - a > 2 * BOX_MARGIN:
                a, z = a + BOX_MARGIN, z - BOX_MARGIN
            return a, z
        o = int(np.clip(round(centroid - c / 2), 0, size - c))
        return o, o

    h, w = test.shape
    region = (slice(b.y1, b.y2), slice(b.x1, b.x2))
    ys, xs = np.nonzero(np.abs(test[region].astype(np.int16) - golden[region]) > 64)  # changed pixels
    cy = b.y1 + ys.mean() if len(ys) else (b.y1 + b.y2) / 2
    cx = b.x1 + xs.mean() if len(xs) else (b.x1 + b.x2) / 2
    (xa, xz), (ya, yz) = axis(b.x1, b.x2, w, cx), axis(b.y1, b.y2, h, cy)
    best = None
    for _ in range(10):
        x, y = int(rng.integers(xa, xz + 1)), int(rng.integers(ya, yz + 1))
        best = (x, y)
        if not any(o is not b and _overlaps(x, y, c, o) for o in boxes):
            break
    return best


class _Informative:
    """O(1) test of a window: both phases present and enough edges (summed-area tables)."""

    def __init__(self, golden: np.ndarray, crop: int) -> None:
        dark = golden < 128
        edges = np.zeros(dark.shape, np.uint8)
        edges[1:, :] += dark[1:, :] != dark[:-1, :]
        edges[:, 1:] += dark[:, 1:] != dark[:, :-1]
        self.dark, self.edges, self.crop = self._sat(dark), self._sat(edges), crop

    @staticmethod
    def _sat(a: np.ndarray) -> np.ndarray:
        out = np.zeros((a.shape[0] + 1, a.shape[1] + 1), np.int32)  # 640*640*2 fits easily
        out[1:, 1:] = a.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32)
        return out

    def _sum(self, sat: np.ndarray, x: int, y: int) -> int:
        c = self.crop
        return int(sat[y + c, x + c] - sat[y, x + c] - sat[y + c, x] + sat[y, x])

    def __call__(self, x: int, y: int) -> bool:
        area = self.crop * self.crop
        share = self._sum(self.dark, x, y) / area
        return MIN_PHASE <= share <= 1 - MIN_PHASE and self._sum(self.edges, x, y) / area >= MIN_EDGES


def crop_pair(pair: Pair, images: Path, crop: int, seed: int, pass_ratio: float, context: int = 1,
              align: bool = False) -> list[dict]:
    """Cut one DeepPCB pair into FAIL and PASS crops under ``images``; return their rows.

    The stored crops are ``crop * context`` px, centred on the chosen window; with ``align`` the
    test crop is cut where the test image lines up with the template locally.
    """
    golden, test = _decode(pair.template), _decode(pair.test)
    h, w = test.shape
    if golden.shape != test.shape or min(h, w) < crop:
        raise DataError(f"{pair.test}: template {golden.shape} and test {test.shape} must have the same "
                        f"size, at least {crop}x{crop} (--crop-size)")
    boxes = parse_annotation(pair.annotation, w, h)
    rng = np.random.default_rng([seed, zlib.crc32(pair.source.encode())])
    windows: list[tuple[str, int, int, Box | None]] = []
    for b in boxes:
        x, y = _fail_origin(rng, b, boxes, crop, golden, test)
        windows.append((b.label, x, y, b))
    n_pass = round(pass_ratio * max(len(boxes), 1))
    taken: set[tuple[int, int]] = set()
    informative = _Informative(golden, crop)
    for _ in range(40 * n_pass):
        if len(taken) >= n_pass:
            break
        x, y = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
        if (x, y) in taken or any(_overlaps(x, y, crop, b, BOX_MARGIN) for b in boxes):
            continue
        if informative(x, y):
            taken.add((x, y))
            windows.append((PASS, x, y, None))
    rows = []
    side, off = crop * context, (context - 1) * crop // 2  # stored crop side; window offset inside it
    pad = side + MAX_SHIFT  # room for the context, the alignment window and the shift past the border
    gp, tp = np.pad(golden, pad, mode="edge"), np.pad(test, pad, mode="edge")
    for k, (label, x, y, b) in enumerate(windows):
        obj = f"{pair.image_id}_{k:03d}"
        dy = dx = 0
        if align:  # the local shift over twice the window, centred on it
            a = pad + y - crop // 2, pad + x - crop // 2
            dy, dx, _, _ = local_shift(gp[a[0]:a[0] + 2 * crop, a[1]:a[1] + 2 * crop],
                                       tp[a[0]:a[0] + 2 * crop, a[1]:a[1] + 2 * crop])
        x, y = x - off, y - off  # stored crop origin in image coordinates
        g = _png(gp[pad + y:pad + y + side, pad + x:pad + x + side])
        t = _png(tp[pad + y + dy:pad + y + dy + side, pad + x + dx:pad + x + dx + side])
        (images / pair.group / "golden" / f"{obj}.png").write_bytes(g)
        (images / pair.group / "test" / f"{obj}.png").write_bytes(t)
        box = "" if b is None else " ".join(
            str(v) for v in (max(b.x1 - x, 0), max(b.y1 - y, 0), min(b.x2 - x, side), min(b.y2 - y, side)))
        rows.append({"input_path": f"{pair.group}/test", "golden_path": f"{pair.group}/golden", "label": label,
                     "object_name": obj, "boardname": pair.group, "source_image": pair.source,
                     "crop_x": str(x), "crop_y": str(y), "defect_box": box,
                     "_hash": hashlib.sha1(g + t).hexdigest()})
    return rows


def _crop_all(pairs: list[Pair], images: Path, crop: int, seed: int, pass_ratio: float, workers: int,
              progress: Callable[[int, int], None], context: int = 1, align: bool = False) -> list[list[dict]]:
    """Rows of every pair, in input order (one process pool for the whole import)."""
    args = [(p, images, crop, seed, pass_ratio, context, align) for p in pairs]
    out: list[list[dict]] = []
    if workers <= 1:
        results = (crop_pair(*a) for a in args)
        for rows in results:
            out.append(rows)
            progress(len(out), len(args))
        return out
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for rows in pool.map(crop_pair, *zip(*args, strict=True), chunksize=8):
            out.append(rows)
            progress(len(out), len(args))
    return out


def pipeline_config(name: str) -> PipelineConfig:
    cfg = PipelineConfig(name=name)
    cfg.deft.max_iterations = 2
    cfg.deft.num_epochs = 2
    cfg.automl.phase3.num_epochs = 2
    return cfg


def _unique_splits(rows_by_split: dict[str, list[dict]], per_split: dict[str, list], images: Path,
                   src: str | Path, log: Callable[[str], None]) -> dict[str, pd.DataFrame]:
    """The crops of each split as a table, a crop whose content an earlier one already has dropped
    (with its files): identical content twice would read as a leak, so the first is kept."""
    splits: dict[str, pd.DataFrame] = {}
    seen: set[str] = set()
    for split in SPLITS:
        if split == "holdout" and not per_split[split]:
            continue  # no --holdout-groups: a workspace without a holdout
        keep = []
        for r in rows_by_split[split]:
            if r["_hash"] in seen:
                for kind in ("golden", "test"):
                    (images / r["boardname"] / kind / f"{r['object_name']}.png").unlink()
                continue
            seen.add(r.pop("_hash"))
            keep.append(r)
        splits[split] = pd.DataFrame(keep)
        if splits[split].empty:
            raise DataError(f"the {split} split of {src} has no crops; choose other groups for it")
        log(f"  {split}: {len(per_split[split])} images -> {len(keep)} crops "
            f"({int((splits[split]['label'] != PASS).sum())} FAIL)")
    return splits


def import_deeppcb(
    src: str | Path,
    dest: str | Path,
    *,
    crop_size: int = 64,
    seed: int = 0,
    kpi_groups: list[str] | None = None,
    val_groups: list[str] | None = None,
    pool_groups: list[str] | None = None,
    holdout_groups: list[str] | None = None,
    pass_ratio: float = 4.0,
    context: int = DEFAULT_CONTEXT,
    align: bool = False,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Build a workspace of aligned (template crop, test crop) pairs from a DeepPCB checkout.

    Args:
        src: the DeepPCB folder (holding ``PCBData/``).
        dest: new (or empty) workspace folder.
        crop_size: crop side in pixels (= spec ``model.input_size``).
        seed: crop jitter, PASS windows and default split; same seed, same workspace.
        kpi_groups, val_groups, pool_groups: board group names per held-out split (``20085`` or
            ``group20085``); None = chosen by :func:`assign_groups`; the rest is training.
        holdout_groups: board groups of the holdout (``holdout/holdout_set.csv``), used by no
            other split; None = no holdout (the run then reports that no audit was done).
        pass_ratio: PASS crops per FAIL crop.
        context: stored crops are ``context * crop_size`` px centred on the window (the spec gets
            ``model.context`` = context and ``model.input_size`` = the stored side). Default 2:
            measured on the leave-board-groups-out folds (docs/model.md).
        align: cut each test crop at the local shift that aligns it with its template.
        workers: processes (default: every core).
        log: called with progress lines (e.g. ``print``).
        progress: called with (image pairs done, total) as crops are cut.

    Raises:
        DataError: not a DeepPCB checkout, missing template/annotation, bad annotation line, bad group
            name, or ``dest`` not empty. Nothing is left at ``dest`` on failure.
    """
    log = log or (lambda _msg: None)
    if not pass_ratio > 0:
        raise DataError(f"--pass-ratio must be > 0 (got {pass_ratio}); every split needs PASS crops "
                        "for FAR @ 100% recall")
    if context not in (1, 2, 3, 4) or (context - 1) * crop_size % 2:
        raise DataError(f"--context must be 1-4 with an even margin (got {context} for --crop-size {crop_size})")
    start = time.perf_counter()
    groups = discover_pairs(src)
    assignment = assign_groups(groups, seed=seed, kpi=kpi_groups, val=val_groups, pool=pool_groups,
                               holdout=holdout_groups)
    log(f"DeepPCB: {sum(map(len, groups.values()))} image pairs in {len(groups)} board groups "
        f"({', '.join(f'{g}:{len(p)}' for g, p in groups.items())})")
    log(f"split by board group: {assignment_flags(assignment)} (train: {','.join(assignment['train'])})")
    per_split = split_pairs(groups, assignment, seed=seed)
    with build_workspace(dest) as tmp:
        images = tmp / "images"
        for g in groups:
            (images / g / "golden").mkdir(parents=True)
            (images / g / "test").mkdir(parents=True)
        order = [(split, p) for split in SPLITS for p in per_split[split]]
        results = _crop_all([p for _, p in order], images, crop_size, seed, pass_ratio,
                            workers or os.cpu_count() or 1, progress or (lambda _done, _total: None),
                            context, align)
        rows_by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
        for (split, _), rows in zip(order, results, strict=True):
            rows_by_split[split] += rows
        splits = _unique_splits(rows_by_split, per_split, images, src, log)
        spec = baseline_spec(crop_size * context)
        spec.model.context = context
        spec.model.flip_tta = True  # measured on leave-board-groups-out folds (docs/model.md)
        write_workspace_files(tmp, splits, spec, pipeline_config(f"deeppcb-{crop_size}"))
    log(f"imported in {time.perf_counter() - start:.1f} s")
    return Path(dest)


__all__ = ["crop_pair", "import_deeppcb"]
