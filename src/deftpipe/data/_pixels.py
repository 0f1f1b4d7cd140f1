"""Any image mode PIL can open -> the 8-bit grayscale array the model expects, or a refusal.

One rule for training, inference and ``data validate``:

- ``1`` / ``L``: as is (bilevel becomes 0/255).
- 16-bit and 32-bit integer grayscale (``I;16*``, ``I``; what industrial cameras write): scaled from
  0..65535 to 0..255 (PIL's own conversion clips, turning such an image solid white). Values outside
  0..65535 are refused.
- Float (``F``): refused (the range is unknown).
- Palette (``P``/``PA``), ``RGB``/``CMYK``/``YCbCr``/...: accepted when every pixel is gray
  (R = G = B after conversion to RGB); a real colour image is refused (one grayscale file per light).
- Any alpha channel (``LA``, ``RGBA``, ``PA``, a palette with transparency): accepted only when fully
  opaque (alpha is then dropped); a transparent pixel has no defined gray value, so it is refused.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from deftpipe.errors import DataError

_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def gray8(im: Image.Image, path: object) -> np.ndarray:
    """The decoded image ``im`` (read from ``path``) as a 2-D uint8 array.

    Raises:
        DataError: a float image, 16/32-bit values out of range, transparency, or real colour.
    """
    mode = im.mode
    if mode in ("L", "1"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode in _WIDE_GRAY:
        a = np.asarray(im).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"image {path} is {mode} with values outside 0..65535; save it as 8- or 16-bit "
                            "grayscale PNG")
        return ((a * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F":
        raise DataError(f"image {path} holds floating-point pixels (mode F) whose range is unknown; "
                        "save it as 8- or 16-bit grayscale PNG")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    if "A" in im.getbands() or "a" in im.getbands():
        alpha = np.asarray(im.getchannel("A" if "A" in im.getbands() else "a"))
        if alpha.size and alpha.min() < 255:
            raise DataError(f"image {path} has transparent pixels (mode {mode}); save it without an alpha "
                            "channel (flattened, grayscale)")
        if im.mode in ("LA", "La"):
            return np.asarray(im.getchannel("L"), dtype=np.uint8)
    rgb = np.asarray(im.convert("RGB"))
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise DataError(f"image {path} has 3 colour channels; expected 1 grayscale channel per lighting file "
                        f"(mode {mode}; list each light in the spec's dataset.classify.input_map)")
    return np.ascontiguousarray(rgb[..., 0])


__all__ = ["gray8"]
