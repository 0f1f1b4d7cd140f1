"""``train.precision``: which arithmetic the convolutions run in, and the autocast that applies it.

``bf16`` runs the encoders under ``torch.autocast`` (the head, the loss and the optimiser's weights stay
fp32); ``auto`` is bf16 where the device computes it natively — a CPU with AMX or AVX512-BF16, a
CUDA GPU that supports bf16 — and fp32 elsewhere, where emulated bf16 would be slower than fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (so autocast to bf16 is faster than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:  # private probes of torch.cpu (2.x); a torch without them gets fp32
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``fp32`` or ``bf16``: what ``train.precision: name`` means on ``device``."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast to bf16 for ``precision`` bf16 (resolved), a no-op for fp32."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield


__all__ = ["autocast", "native_bf16", "resolve_precision"]
