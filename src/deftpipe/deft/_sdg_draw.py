"""Image-space defect synthesis on a golden image (grayscale uint8), for SDG.

Copper is found by thresholding the golden image (Otsu); a defect edits that copper mask in the
ways DeepPCB's hardest escapes look (a trace cut across the whole crop, two pads bridged, a band of
copper right across the crop — a short as wide as the window, also on a crop with no copper —,
bites, spurs, stray copper, pin-holes); the edited pixels are repainted at the copper / substrate grey
levels, then the test image gets capture nuisances: misregistration by several pixels, sensor
noise and a brightness change. Unknown classes get a generic anomaly (cut-paste or noise blob).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PCB_CLASSES = ("open", "short", "mousebite", "spur", "copper", "pin-hole")


def _otsu(img: np.ndarray) -> int:
    hist = np.bincount(img.ravel(), minlength=256).astype(float)
    p = hist / max(hist.sum(), 1.0)
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    return int(np.nanargmax(np.nan_to_num(between, nan=-1.0)))


_DARK_SHARE: dict[int, tuple[np.ndarray, float]] = {}  # id -> (read-only image, share)


def _dark_share(im: np.ndarray) -> float:
    """Share of ``im`` at or below its Otsu threshold. Remembered for read-only arrays (the image
    cache hands out the same read-only array for a file), since SDG asks again every iteration."""
    hit = _DARK_SHARE.get(id(im))
    if hit is not None and hit[0] is im:
        return hit[1]
    share = float((im <= _otsu(im)).mean())
    if not im.flags.writeable and (im.base is None or not getattr(im.base, "flags", im.flags).writeable):
        if len(_DARK_SHARE) > 8192:
            _DARK_SHARE.clear()
        _DARK_SHARE[id(im)] = (im, share)  # holding the array keeps its id from being reused
    return share


def copper_is_dark(images: list[np.ndarray]) -> bool:
    """Copper polarity of a data set: copper is the mode covering less of the crops on average
    (traces are thinner than the laminate between them) — dark on DeepPCB, bright on many AOI
    cameras. Decided once per data set, since a single crop can be mostly copper."""
    dark_share = [_dark_share(im) for im in images]
    return bool(np.mean(dark_share) < 0.5) if dark_share else False


FLAT_RANGE = 48  # a crop whose grey levels span less than this is one material (no edge to threshold)


def copper_mask(img: np.ndarray, *, dark: bool | None = None) -> np.ndarray:
    """True where ``img`` is copper (Otsu threshold; polarity from ``dark``, or this crop's minority mode).
    A flat crop is all copper or all substrate: with the polarity known, its grey level says which."""
    if dark is not None and int(img.max()) - int(img.min()) < FLAT_RANGE:
        return np.full(img.shape, (float(img.mean()) < 128) == dark)
    bright = img > _otsu(img)
    if dark is None:
        dark = bright.mean() > 0.5
    return ~bright if dark else bright


def _disk(mask: np.ndarray, cy: float, cx: float, r: float, value: bool) -> None:
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value


def _line(mask: np.ndarray, p, q, width: float, value: bool) -> None:
    n = int(np.hypot(q[0] - p[0], q[1] - p[1]) * 2) + 2
    for t in np.linspace(0.0, 1.0, n):
        _disk(mask, p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t, width / 2, value)


def _pick(rng, cond: np.ndarray):
    ys, xs = np.nonzero(cond)
    if len(ys) == 0:
        return None
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


@dataclass(frozen=True)
class Placement:
    """Where an edit goes in a crop: ``window`` = the part the model sees at full resolution (the
    central 1/``model.context``), ``centre`` = that window less a 15 % margin (a defect's anchor)."""

    centre: np.ndarray
    window: np.ndarray

    @classmethod
    def of(cls, shape, context: int = 1) -> Placement:
        return cls(centre_region(shape, context), centre_region(shape, context, 0.0))

    @property
    def side(self) -> int:
        """The full-resolution window's side in pixels."""
        return int(self.window.any(1).sum())


def centre_region(shape, context: int = 1, margin: float = 0.15) -> np.ndarray:
    """Where a defect may be placed: the crop's full-resolution window (its central 1/``context``,
    the part the model sees at full resolution with ``model.context``) less a ``margin`` share of that
    window on every side."""
    h, w = shape
    frac = 0.5 - (0.5 - margin) / context
    c = np.zeros(shape, bool)
    c[int(h * frac):h - int(h * frac), int(w * frac):w - int(w * frac)] = True
    return c


def _open(rng, m, scale, where: Placement):
    out = m.copy()
    p = _pick(rng, m & where.centre)
    if p is None:
        return None
    if rng.random() < 0.6:  # a cut across the whole crop, through p
        angle = rng.uniform(0, np.pi)
        d = np.array([np.sin(angle), np.cos(angle)]) * m.shape[0]
        cut = np.zeros_like(m)
        _line(cut, (p[0] - d[0], p[1] - d[1]), (p[0] + d[0], p[1] + d[1]), rng.uniform(1.0, 2.5) * scale, True)
        out[cut] = False
    else:
        d_in = ndimage.distance_transform_edt(m)
        _disk(out, p[0], p[1], float(d_in[p]) + rng.uniform(0.5, 1.5) * scale, False)
    return out if out.sum() < m.sum() else None


WIDE_SHORT_SHARE = 0.3  # shorts drawn as a band of copper across the whole crop (larger than the window)


def _band(rng, m, scale, where: Placement):
    """A band of copper right across the crop through its centre region (a short wider than the window)."""
    p = _pick(rng, ~m & where.centre)
    if p is None:
        return None
    angle = rng.uniform(0, np.pi)
    d = np.array([np.sin(angle), np.cos(angle)]) * m.shape[0]
    out = m.copy()
    _line(out, (p[0] - d[0], p[1] - d[1]), (p[0] + d[0], p[1] + d[1]), rng.uniform(3.0, 8.0) * scale, True)
    return out


def _short(rng, m, scale, where: Placement):
    if m.mean() <= 0.05 or rng.random() < WIDE_SHORT_SHARE:
        return _band(rng, m, scale, where)
    labels, n = ndimage.label(m)
    out = m.copy()
    if n >= 2:  # bridge the closest pair of distinct nets (pads)
        a = int(rng.integers(1, n + 1))
        d_other, idx = ndimage.distance_transform_edt(~((labels > 0) & (labels != a)), return_indices=True)
        ys, xs = np.nonzero((labels == a) & (d_other <= where.side / 2))
        mid = where.window[(ys + idx[0][ys, xs]) // 2, (xs + idx[1][ys, xs]) // 2]  # the bridge's middle in the window
        ys, xs = ys[mid], xs[mid]
        if len(ys):
            j = int(np.argmin(d_other[ys, xs] + rng.uniform(0, 2, len(ys))))
            p = (ys[j], xs[j])
            q = (idx[0][p], idx[1][p])
            _line(out, p, q, rng.uniform(1.0, 2.0) * scale, True)
            return out
    p = _pick(rng, m)  # one net only: a long bridge out into the substrate
    q = _pick(rng, ~m & where.centre)
    if p is None or q is None:
        return None
    _line(out, p, q, rng.uniform(1.0, 2.0) * scale, True)
    return out


def _mousebite(rng, m, scale, where: Placement):
    d_in = ndimage.distance_transform_edt(m)
    edge = (d_in == 1) & where.centre
    out = m.copy()
    for _ in range(int(rng.integers(1, 4))):
        p = _pick(rng, edge)
        if p is None:
            return None
        _disk(out, p[0], p[1], rng.uniform(0.8, 1.5) * scale, False)
    return out


def _spur(rng, m, scale, where: Placement):
    d_in = ndimage.distance_transform_edt(m)
    p = _pick(rng, (d_in == 1) & where.centre)
    if p is None:
        return None
    _, idx = ndimage.distance_transform_edt(m, return_indices=True)
    # idx[p] is the laminate pixel nearest to the edge pixel p: grow the spur from p towards it
    away = np.array([idx[0][p], idx[1][p]], float) - np.array(p, float)
    norm = np.linalg.norm(away)
    away = away / norm if norm > 0 else rng.normal(size=2)
    length = rng.uniform(2.0, 5.0) * scale
    out = m.copy()
    _line(out, p, (p[0] + away[0] * length, p[1] + away[1] * length), rng.uniform(0.8, 1.5) * scale, True)
    return out


def _copper(rng, m, scale, where: Placement):
    d_out = ndimage.distance_transform_edt(~m)
    r = rng.uniform(1.0, 2.5) * scale
    p = _pick(rng, (d_out >= r + 1) & where.centre)
    if p is None:
        return None
    out = m.copy()
    _disk(out, p[0], p[1], r, True)
    return out


def _pinhole(rng, m, scale, where: Placement):
    d_in = ndimage.distance_transform_edt(m)
    r = rng.uniform(0.7, 1.4) * scale
    p = _pick(rng, (d_in >= r + 1) & where.centre)
    if p is None:
        return None
    out = m.copy()
    _disk(out, p[0], p[1], r, False)
    return out


_DEFECTS = {"open": _open, "short": _short, "mousebite": _mousebite, "spur": _spur, "copper": _copper,
            "pin-hole": _pinhole}


def _generic(rng, img: np.ndarray) -> np.ndarray:
    """Cut-paste a patch to another place, or paint a noise blob (classes SDG does not know)."""
    h, w = img.shape
    s = max(3, h // 5)
    out = img.astype(np.float32).copy()
    y, x = rng.integers(0, h - s), rng.integers(0, w - s)
    if rng.random() < 0.5:
        y2, x2 = rng.integers(0, h - s), rng.integers(0, w - s)
        out[y:y + s, x:x + s] = img[y2:y2 + s, x2:x2 + s]
    else:
        blob = np.zeros((h, w), bool)
        _disk(blob, y + s / 2, x + s / 2, s / 2, True)
        out[blob] = rng.uniform(0, 255) + rng.normal(0, 25, int(blob.sum()))
    return out


def shift_image(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Misregister by (dy, dx) pixels, repeating the border (no wrap-around)."""
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return img
    p = np.pad(img, pad, mode="edge")
    h, w = img.shape
    return p[pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def nuisance(rng, img: np.ndarray, *, max_shift: int) -> np.ndarray:
    """Capture nuisances of a hard test image: misregistration, brightness, sensor noise."""
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    out = shift_image(img.astype(np.float32), dy, dx)
    out = out * rng.uniform(0.9, 1.1) + rng.uniform(-12, 12) + rng.normal(0, rng.uniform(2, 6), out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def repaint(img: np.ndarray, m: np.ndarray, new: np.ndarray, a: float, *, dark_copper: bool | None,
            bare: bool) -> np.ndarray:
    """``img`` (float32) with the pixels the edit ``m`` -> ``new`` turned copper / substrate moved a
    share ``a`` of the way to this image's copper / substrate grey level."""
    gm = copper_mask(img, dark=dark_copper) if not bare else np.zeros_like(m)
    sub = float(np.median(img[~gm])) if (~gm).any() else 0.0
    # no copper in sight: the data set's polarity says which end of the grey scale it is
    cu = float(np.median(img[gm])) if gm.any() else (0.0 if dark_copper else 255.0)
    t = img.astype(np.float32).copy()
    t[new & ~m] += a * (cu - t[new & ~m])
    t[~new & m] += a * (sub - t[~new & m])
    return t


def synthesize(rng, golden: list[np.ndarray], label: str, *, max_shift: int,
               dark_copper: bool | None = None, contrast: tuple[float, float] = (1.0, 1.0), context: int = 1
               ) -> list[np.ndarray] | None:
    """Test images (one per light) with one ``label`` defect; PASS gives a hard PASS pair.

    The edited pixels move a fraction ``a`` ~ U(``contrast``) of the way to the copper / substrate
    grey level (1 = a clean defect; less = a faint one: partial etch, residue, a hole that does not
    go through). ``context`` (``model.context``): the crop is that many windows wide and the defect
    is drawn, at the window's scale, inside the central one. Returns None when the defect does not
    fit this golden image (try another one).
    """
    if label == "PASS":
        return [nuisance(rng, g, max_shift=max_shift) for g in golden]
    m = copper_mask(golden[0], dark=dark_copper)
    bare = m.mean() <= 0.05  # a crop of plain substrate: only a short (a band across it) can be drawn
    if m.mean() >= 0.95 or (bare and label != "short") or (bare and dark_copper is None):
        return None
    scale = max(1.0, golden[0].shape[0] / context / 32)
    if label in _DEFECTS:
        new = _DEFECTS[label](rng, m, scale, Placement.of(m.shape, context))
        if new is None or (new == m).all():
            return None
        tests = []
        a = float(rng.uniform(*contrast))
        for g in golden:
            t = repaint(g, m, new, a, dark_copper=dark_copper, bare=bare)
            tests.append(nuisance(rng, np.clip(t, 0, 255).astype(np.uint8), max_shift=max_shift))
        return tests
    state = rng.bit_generator.state
    out = []
    for g in golden:  # the same anomaly in every light
        rng.bit_generator.state = state
        out.append(nuisance(rng, np.clip(_generic(rng, g), 0, 255).astype(np.uint8), max_shift=max_shift))
    return out


__all__ = ["PCB_CLASSES", "copper_is_dark", "copper_mask", "nuisance", "repaint", "shift_image", "synthesize"]
