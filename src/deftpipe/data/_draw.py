"""Procedural PCB drawing for the synthetic AOI generator: boards, crops, defects, nuisances.

Everything is drawn as a boolean copper mask at twice the output resolution (``SS`` = 2) and
box-filtered down, so edges get the grey anti-aliased rims of a real binarised scan and a shift of
one mask pixel is a half-pixel (sub-pixel) misregistration of the rendered image.

A board is one large mask with a style of its own (trace width, pitch, share of 45-degree traces,
pads, vias, copper pours); samples are windows of it. Defects are edits of a window's mask chosen
from its geometry (distance transforms), and each one is checked to really be what its class says
(an ``open`` must disconnect a trace, a ``short`` must join two nets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SS = 2  # supersampling factor of every mask
MARGIN = 4  # mask pixels kept around a window so the test image can be shifted

# Defect sizes in mask pixels (half output pixels). Every defect spans several output pixels
# (3-8 px at 64x64), well above the <= 1 px misregistration and the sensor noise, so the
# golden/test difference is a clear signal. The two rare classes also look unlike the common
# ones: a pin-hole is a round bright hole enclosed in copper (nothing else makes an enclosed
# hole), a short a thin straight filament bridging two nets (spurs are stubby and end in the gap);
# both are drawn at RARE_CONTRAST, nearer to the PASS surface marks (see _surface_marks).
OPEN_EXTRA = (4.0, 9.0)  # open: cut radius beyond the trace half-width
BITE_R = (5.0, 8.0)  # mousebite: bite radius on a trace edge
SPUR_LEN, SPUR_W = (8.0, 16.0), (7.0, 11.0)  # spur: stubby protrusion into the gap
SHORT_W = (4.0, 5.5)  # short: thin bridge between two nets
COPPER_R = (5.0, 9.0)  # spurious copper blob in the gap
PINHOLE_R = (3.5, 6.5)  # pin-hole: round hole inside copper
RARE_CONTRAST = (0.6, 0.8)  # pin-holes and shorts: share of the full copper/laminate contrast
MIN_CHANGED = 48  # mask pixels (12 output px^2): smaller edits are rejected and redrawn


@dataclass(frozen=True)
class BoardStyle:
    trace_w: int  # trace width in mask pixels
    pitch: int  # routing grid pitch in mask pixels
    diag_share: float  # share of traces with a 45-degree leg
    n_traces: int
    n_vias: int
    n_pours: int
    substrate: float  # grey level of bare laminate (0-255)
    copper: float  # grey level of copper


def _disk(mask: np.ndarray, cy: float, cx: float, r: float, value: bool = True) -> None:
    h, w = mask.shape
    y0, y1 = max(int(cy - r - 1), 0), min(int(cy + r + 2), h)
    x0, x1 = max(int(cx - r - 1), 0), min(int(cx + r + 2), w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    mask[y0:y1, x0:x1][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value


def _line(mask: np.ndarray, p: tuple[float, float], q: tuple[float, float], width: float,
          value: bool = True) -> None:
    """Thick segment p→q (row, col) with round caps."""
    h, w = mask.shape
    r = width / 2
    y0, y1 = max(int(min(p[0], q[0]) - r - 1), 0), min(int(max(p[0], q[0]) + r + 2), h)
    x0, x1 = max(int(min(p[1], q[1]) - r - 1), 0), min(int(max(p[1], q[1]) + r + 2), w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = q[0] - p[0], q[1] - p[1]
    n2 = dy * dy + dx * dx
    t = np.zeros_like(yy) if n2 == 0 else np.clip(((yy - p[0]) * dy + (xx - p[1]) * dx) / n2, 0, 1)
    d2 = (yy - p[0] - t * dy) ** 2 + (xx - p[1] - t * dx) ** 2
    mask[y0:y1, x0:x1][d2 <= r * r] = value


def draw_style(rng: np.random.Generator, board_px: int) -> BoardStyle:
    trace_w = int(rng.integers(8, 17))  # 4-8 output px, like DeepPCB traces in a 64 px crop
    pitch = int(trace_w * rng.uniform(2.4, 3.6))
    area = board_px * board_px
    return BoardStyle(
        trace_w=trace_w,
        pitch=pitch,
        diag_share=float(rng.uniform(0.0, 0.45)),
        n_traces=int(area / (pitch * board_px) * rng.uniform(0.9, 1.5)),
        n_vias=int(area / 10000 * rng.uniform(0.3, 0.8)),
        n_pours=int(area / 240000 * rng.uniform(0.5, 1.5)) + 1,
        # DeepPCB polarity: bright laminate, dark copper
        substrate=float(rng.uniform(205, 245)),
        copper=float(rng.uniform(10, 50)),
    )


def draw_board(rng: np.random.Generator, style: BoardStyle, board_px: int) -> np.ndarray:
    """One board's copper mask (``board_px`` square, mask resolution)."""
    m = np.zeros((board_px, board_px), bool)
    tw, g = style.trace_w, style.pitch
    cells = board_px // g
    for _ in range(style.n_pours):  # copper pours / large pads: where pin-holes live
        h, w = rng.integers(6 * tw, 16 * tw, size=2)
        y, x = rng.integers(0, board_px - h), rng.integers(0, board_px - w)
        m[y:y + h, x:x + w] = True
    for _ in range(style.n_traces):
        y, x = (rng.integers(1, cells - 1, size=2) * g).astype(float)
        horizontal = rng.random() < 0.5
        length = float(rng.integers(4, max(cells // 2, 6)) * g)
        sign = rng.choice([-1.0, 1.0])
        q = (y, x + sign * length) if horizontal else (y + sign * length, x)
        _line(m, (y, x), q, tw)
        end = q
        if rng.random() < style.diag_share:  # a 45-degree leg, then straight again
            d = float(rng.integers(2, 6) * g)
            s2 = rng.choice([-1.0, 1.0])
            r = (q[0] + s2 * d, q[1] + sign * d) if horizontal else (q[0] + sign * d, q[1] + s2 * d)
            _line(m, q, r, tw)
            end = r
        for pt in ((y, x), end):  # pads at both ends
            size = tw * rng.uniform(1.6, 2.6)
            if rng.random() < 0.5:
                _disk(m, pt[0], pt[1], size)
            else:
                y0, x0 = int(pt[0] - size), int(pt[1] - size)
                m[max(y0, 0):max(y0 + int(2 * size), 0), max(x0, 0):max(x0 + int(2 * size), 0)] = True
    for _ in range(style.n_vias):  # annular rings with a drilled hole
        y, x = rng.integers(0, board_px, size=2).astype(float)
        r = tw * rng.uniform(1.2, 2.0)
        _disk(m, y, x, r)
        _disk(m, y, x, r * rng.uniform(0.35, 0.5), value=False)
    return m


# ---------------------------------------------------------------- defects on a window's mask

def _center_mask(shape: tuple[int, int], frac: float = 0.15) -> np.ndarray:
    h, w = shape
    c = np.zeros(shape, bool)
    c[int(h * frac) + MARGIN:h - int(h * frac) - MARGIN, int(w * frac) + MARGIN:w - int(w * frac) - MARGIN] = True
    return c


def _pick(rng: np.random.Generator, cond: np.ndarray) -> tuple[int, int] | None:
    ys, xs = np.nonzero(cond)
    if len(ys) == 0:
        return None
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def _n_components(m: np.ndarray) -> int:
    return int(ndimage.label(m)[1])


def _open(rng, m, d_in, d_out, center):
    ridge = (d_in >= 3) & (d_in <= 10) & (d_in >= ndimage.maximum_filter(d_in, size=3)) & center
    for _ in range(6):
        p = _pick(rng, ridge)
        if p is None:
            return None
        out = m.copy()
        r = d_in[p] + rng.uniform(*OPEN_EXTRA)
        _disk(out, p[0], p[1], r, value=False)
        core = (slice(MARGIN, -MARGIN),) * 2  # disconnected in the visible part and in the whole window
        if _n_components(out[core]) > _n_components(m[core]) and _n_components(out) > _n_components(m):
            return out
    return None


def _mousebite(rng, m, d_in, d_out, center):
    edge = (d_in == 1) & center & (ndimage.maximum_filter(d_in, size=11) >= 4)
    p = _pick(rng, edge)
    if p is None:
        return None
    out = m.copy()
    n_bites = int(rng.integers(1, 4))
    r = rng.uniform(*BITE_R)
    for k in range(n_bites):  # bites strung along the edge
        ys, xs = np.nonzero(edge[max(p[0] - 6, 0):p[0] + 7, max(p[1] - 6, 0):p[1] + 7])
        if k and len(ys):
            j = int(rng.integers(len(ys)))
            p = (max(p[0] - 6, 0) + int(ys[j]), max(p[1] - 6, 0) + int(xs[j]))
        _disk(out, p[0], p[1], r, value=False)
    if _n_components(out) > _n_components(m):  # a bite that cuts through is an open, not a bite
        return None
    return out


def _spur(rng, m, d_in, d_out, idx, center):
    length = rng.uniform(*SPUR_LEN)
    tip = _pick(rng, (np.abs(d_out - length) < 0.8) & center)
    if tip is None:
        return None
    base = (int(idx[0][tip]), int(idx[1][tip]))
    out = m.copy()
    _line(out, base, tip, rng.uniform(*SPUR_W))
    return out


def _short(rng, m, d_in, d_out, idx, center):
    labels, _ = ndimage.label(m)
    cand = (d_out >= 2) & (d_out <= 12) & center
    for _ in range(12):
        t = _pick(rng, cand)
        if t is None:
            return None
        a = np.array([idx[0][t], idx[1][t]], float)
        v = np.array(t, float) - a
        v /= max(np.linalg.norm(v), 1e-6)
        p = np.array(t, float)
        for _ in range(30):  # walk on, away from the first net, until copper is hit
            p = p + v
            y, x = int(round(p[0])), int(round(p[1]))
            if not (0 <= y < m.shape[0] and 0 <= x < m.shape[1]):
                break
            if m[y, x]:
                if labels[y, x] != labels[int(a[0]), int(a[1])]:
                    out = m.copy()
                    _line(out, tuple(a), (y, x), rng.uniform(*SHORT_W))
                    return out
                break
    return None


def _copper(rng, m, d_in, d_out, center):
    r = rng.uniform(*COPPER_R)
    t = _pick(rng, (d_out >= r + 4) & center)
    if t is None:
        return None
    out = m.copy()
    for _ in range(int(rng.integers(1, 4))):
        _disk(out, t[0] + rng.uniform(-r, r) * 0.6, t[1] + rng.uniform(-r, r) * 0.6, r * rng.uniform(0.6, 1.0))
    return out


def _pinhole(rng, m, d_in, d_out, center):
    r = rng.uniform(*PINHOLE_R)
    t = _pick(rng, (d_in >= r + 3) & center)
    if t is None:
        return None
    out = m.copy()
    _disk(out, t[0], t[1], r, value=False)
    return out


def add_defect(rng: np.random.Generator, m: np.ndarray, label: str) -> np.ndarray | None:
    """Return a copy of window mask ``m`` with one defect of class ``label``, or None if none fits
    (or the edit would be too small to see: fewer than ``MIN_CHANGED`` visible mask pixels)."""
    center = _center_mask(m.shape)
    d_in = ndimage.distance_transform_edt(m)
    if label in ("spur", "short"):
        d_out, idx = ndimage.distance_transform_edt(~m, return_indices=True)
        out = (_spur if label == "spur" else _short)(rng, m, d_in, d_out, idx, center)
    else:
        d_out = ndimage.distance_transform_edt(~m)
        fn = {"open": _open, "mousebite": _mousebite, "copper": _copper, "pin-hole": _pinhole}[label]
        out = fn(rng, m, d_in, d_out, center)
    visible = (out != m)[MARGIN:-MARGIN, MARGIN:-MARGIN].sum() >= MIN_CHANGED if out is not None else False
    return out if visible else None


# ---------------------------------------------------------------- rendering and nuisances

def render(m: np.ndarray, style: BoardStyle, rng: np.random.Generator, *, nuisance: bool,
           shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Window mask (with MARGIN) → uint8 image at output resolution.

    ``shift`` (mask pixels, i.e. half output pixels) misregisters the test image; ``nuisance``
    adds a brightness/contrast change and surface marks on top of the sensor noise every capture has.
    """
    h, w = m.shape
    dy, dx = shift
    core = m[MARGIN + dy:h - MARGIN + dy, MARGIN + dx:w - MARGIN + dx].astype(np.float32)
    n = core.shape[0] // SS
    cov = core.reshape(n, SS, n, SS).mean(axis=(1, 3))
    sub, cop = style.substrate, style.copper
    if nuisance:
        gain = rng.uniform(0.92, 1.08)
        offset = rng.uniform(-12, 12)
        sub, cop = sub * gain + offset, cop * gain + offset
    img = sub + (cop - sub) * cov
    if nuisance:
        img = _surface_marks(rng, img, cov, sub - cop)
    img = img + rng.normal(0.0, rng.uniform(1.5, 5.0) if nuisance else 2.0, cov.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


GLINT_SHARE, FIBRE_SHARE = 0.3, 0.3  # captures with a glint on copper / a fibre on laminate


def _surface_marks(rng: np.random.Generator, img: np.ndarray, cov: np.ndarray, contrast: float) -> np.ndarray:
    """Harmless surface marks of a capture, the AOI look-alikes of the two rare defect classes.

    A *glint* is a small (<= 2.4 px), 35-60 %-contrast bright spot on copper (a pin-hole is a
    3.5-6.5 px hole at 60-80 % contrast); a *fibre* is a 1 px, 35-60 %-contrast dark hair on
    laminate (a short is a 2-2.75 px bridge between nets at 60-80 % contrast). They teach a model that not every speck or
    hair is a defect; size and contrast tell them apart (measured in docs/data.md: on their own
    they do not make an unseen rare class score low).
    """
    img = img.copy()
    if rng.random() < GLINT_SHARE:
        p = _pick(rng, ndimage.binary_erosion(cov > 0.95, iterations=2))
        if p is not None:
            spot = np.zeros(cov.shape, bool)
            _disk(spot, p[0], p[1], rng.uniform(0.7, 1.2))
            img[spot] += contrast * rng.uniform(0.35, 0.6)
    if rng.random() < FIBRE_SHARE:
        p = _pick(rng, cov < 0.05)
        if p is not None:
            angle, length = rng.uniform(0, np.pi), rng.uniform(4, 12)
            q = (p[0] + length * np.sin(angle), p[1] + length * np.cos(angle))
            hair = np.zeros(cov.shape, bool)
            _line(hair, p, q, 1.0)
            img[hair & (cov < 0.05)] -= contrast * rng.uniform(0.35, 0.6)
    return img


def draw_shift(rng: np.random.Generator) -> tuple[int, int]:
    """Misregistration in mask pixels: mostly sub-pixel, at most 1 output pixel."""
    u = rng.random()
    reach = 1 if u < 0.75 else 2  # +-0.5 px, +-1 px
    return tuple(int(v) for v in rng.integers(-reach, reach + 1, size=2))
