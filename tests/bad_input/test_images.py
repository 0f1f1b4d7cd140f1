"""Images in every mode PIL opens: converted to the 8-bit gray the model expects exactly as training
decodes them, or refused by `data validate` (decode, mode and size) with the row, exit 1, nothing written."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deftpipe.data._cache import decode_image

from .conftest import replace_file


def _row_image(bad, kind: str = "test", row: int = 0) -> Path:
    df = pd.read_csv(bad.train, dtype=str)
    folder = df.loc[row, "input_path" if kind == "test" else "golden_path"]
    return bad.ws / "images" / folder / f"{df.loc[row, 'object_name']}.png"


def _gray(bad, kind: str = "test") -> np.ndarray:
    return np.asarray(Image.open(_row_image(bad, kind)).convert("L"))


def _save(bad, img: Image.Image, kind: str = "test", fmt: str = "PNG") -> Path:
    path = replace_file(_row_image(bad, kind))
    img.save(path, format=fmt)
    return path


def _write(bad, data: bytes, kind: str = "test") -> Path:
    path = replace_file(_row_image(bad, kind))
    path.write_bytes(data)
    return path


def _colour(bad) -> Image.Image:
    g = _gray(bad)
    return Image.fromarray(np.stack([g, 255 - g, g], axis=-1))


def _alpha(bad, mode: str) -> Image.Image:
    g = _gray(bad)
    a = np.full_like(g, 255)
    a[0, 0] = 10
    bands = [g, a] if mode == "LA" else [g, g, g, a]
    return Image.fromarray(np.stack(bands, axis=-1), mode)


def _resized(bad, side: int, kinds=("test",)) -> Path:
    for kind in kinds:
        _save(bad, Image.fromarray(_gray(bad, kind)).resize((side, side)), kind)
    return bad.train


def _bomb(w: int, h: int) -> bytes:
    """A valid 100-byte PNG whose header claims ``w`` x ``h`` 8-bit gray pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


REFUSED = {
    "zero_bytes": (lambda b: _write(b, b""), r"unreadable image \(1\): row 1 test .*unreadable"),
    "truncated_png": (lambda b: _write(b, _row_image(b).read_bytes()[:60]), r"unreadable image.*row 1 test"),
    "text_named_png": (lambda b: _write(b, b"this is not a picture\n"), r"unreadable image.*row 1 test"),
    "golden_unreadable": (lambda b: _write(b, b"\x89PNG\r\n\x1a\n", "golden"), r"unreadable image.*row 1 golden"),
    "colour_rgb": (lambda b: _save(b, _colour(b)), r"3 colour channels"),
    "colour_palette": (lambda b: _save(b, _colour(b).convert("P", palette=Image.Palette.ADAPTIVE)), r"3 colour channels"),
    "colour_jpeg": (lambda b: _save(b, _colour(b), fmt="JPEG"), r"3 colour channels"),
    "rgba_transparent": (lambda b: _save(b, _alpha(b, "RGBA")), r"transparent pixels"),
    "la_transparent": (lambda b: _save(b, _alpha(b, "LA")), r"transparent pixels"),
    "float_tiff": (lambda b: _save(b, Image.fromarray(_gray(b).astype(np.float32)), fmt="TIFF"), r"floating-point"),
    "golden_test_sizes_differ": (lambda b: _resized(b, 40), r"golden and test of different sizes \(1\): row 1"),
    "size_spec_cannot_take": (lambda b: _resized(b, 40, ("test", "golden")), r"size the spec cannot take.*40x40"),
    "header_claims_100000x100000": (lambda b: _write(b, _bomb(100_000, 100_000)), r"claims 100000x100000 pixels"),
    "golden_header_claims_huge": (lambda b: _write(b, _bomb(70_000, 70_000), "golden"), r"row 1 golden.*claims"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_unusable_image_is_refused_by_validate(bad, case):
    make, match = REFUSED[case]
    make(bad)
    bad.refused("data", "validate", bad.train, match=match, one_line=False)


def _sixteen_bit(g: np.ndarray) -> Image.Image:
    return Image.fromarray(g.astype(np.uint16) * 257)  # mode I;16, the full 16-bit range


CONVERTED = {
    # (image built from the row's 8-bit gray g, the gray the model must see)
    "sixteen_bit": (_sixteen_bit, lambda g: g),
    "sixteen_bit_dark": (lambda g: Image.fromarray(g.astype(np.uint16) * 16), lambda g: (g.astype(int) * 16 * 255 + 32767) // 65535),
    "palette_gray": (lambda g: Image.fromarray(g).convert("P"), lambda g: g),
    "la_opaque": (lambda g: Image.fromarray(np.stack([g, np.full_like(g, 255)], -1), "LA"), lambda g: g),
    "rgba_opaque_gray": (lambda g: Image.fromarray(np.stack([g, g, g, np.full_like(g, 255)], -1), "RGBA"), lambda g: g),
    "bilevel": (lambda g: Image.fromarray(g > 128), lambda g: np.where(g > 128, 255, 0)),
}


@pytest.mark.parametrize("case", CONVERTED)
def test_other_modes_are_converted_exactly_as_training_reads_them(bad, case):
    build, expected = CONVERTED[case]
    g = _gray(bad)
    _save(bad, build(g))
    r = bad.cli("data", "validate", bad.train)
    assert r.code == 0 and "valid" in r.out, r.err
    got = decode_image(_row_image(bad), 32)
    np.testing.assert_array_equal(got, np.asarray(expected(g), dtype=np.uint8))
    assert got.std() > 0  # never a solid image


def test_sixteen_bit_png_is_not_white(bad):
    """The reported case: a 16-bit camera PNG used to decode as solid white."""
    g = _gray(bad)
    buf = io.BytesIO()
    _sixteen_bit(g).save(buf, format="PNG")
    _write(bad, buf.getvalue())
    got = decode_image(_row_image(bad), 32)
    assert got.mean() == pytest.approx(g.mean(), abs=0.5) and got.max() < 255 or got.min() < 250


#: EXIF orientation -> how a camera stored the upright picture (the inverse of what a viewer applies).
STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied_wherever_images_are_decoded(bad, orientation):
    from deftpipe.data._open import open_image
    from deftpipe.data._validate import _decode

    g = _gray(bad)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = replace_file(_row_image(bad))
    Image.fromarray(g).transpose(STORED[orientation]).save(path, format="PNG", exif=exif)
    r = bad.cli("data", "validate", bad.train)
    assert r.code == 0 and "valid" in r.out, r.err
    np.testing.assert_array_equal(decode_image(path, g.shape[0]), g)  # training and inference
    assert _decode(str(path)) == (None, (g.shape[1], g.shape[0]))  # data validate
    with open_image(path) as im:  # report thumbnails, DeepPCB importer, near-duplicate hashes
        np.testing.assert_array_equal(np.asarray(im.convert("L")), g)


def test_exif_rotated_non_square_image_is_checked_upright(bad):
    g = _gray(bad)[:, :20]  # 32 high, 20 wide, stored lying on its side
    exif = Image.Exif()
    exif[0x0112] = 6
    path = replace_file(_row_image(bad))
    Image.fromarray(g).transpose(STORED[6]).save(path, format="PNG", exif=exif)
    bad.refused("data", "validate", bad.train, match=r"20x32", one_line=False)
