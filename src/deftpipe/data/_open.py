"""The one way deftpipe opens an image file: bounded, oriented.

- A header that claims more than :data:`MAX_PIXELS` pixels (a "decompression bomb": a few KB of PNG
  that says 100000x100000) is refused before any pixel is decoded.
- The EXIF orientation tag is applied (``ImageOps.exif_transpose``), so an image a camera or an
  editor stored rotated is seen upright — the same way everywhere images are decoded (training,
  inference, ``data validate``, the DeepPCB importer, report thumbnails, near-duplicate hashes).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps

from deftpipe.errors import DataError

#: Largest image accepted (width x height): 16k x 16k, far above any AOI crop or DeepPCB scan.
MAX_PIXELS = 16_384 * 16_384
# PIL's own guard raises before the size can be named; this module's check (header only, before any
# pixel is decoded) replaces it and says "W x H".
Image.MAX_IMAGE_PIXELS = None


@contextlib.contextmanager
def open_image(source: str | Path | io.BytesIO, path: object = None) -> Iterator[Image.Image]:
    """Yield the decoded, upright image of ``source`` (``path`` names it in errors).

    Raises:
        DataError: the header claims more than :data:`MAX_PIXELS` pixels. PIL's own errors
            (unreadable, truncated) propagate as they are, for the caller's message.
    """
    name = path if path is not None else source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(source)
        except Image.DecompressionBombError:  # only if someone set PIL's own limit back
            raise _bomb(name, None) from None
    with im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise _bomb(name, (w, h))
        im.load()
        upright = ImageOps.exif_transpose(im)
        try:
            yield upright
        finally:
            if upright is not im:
                upright.close()


def _bomb(name: object, wh: tuple[int, int] | None) -> DataError:
    size = f"{wh[0]}x{wh[1]} pixels" if wh else "more pixels than PIL allows"
    return DataError(f"image {name} claims {size} (more than {MAX_PIXELS:,} allowed); it is not an inspection "
                     "image — replace or remove the file")


__all__ = ["MAX_PIXELS", "open_image"]
