"""Keep freed memory in the process for the next training step, instead of handing it back to the OS.

A training step allocates its activations and frees them all at its end. glibc's defaults return a
free heap top above 2x the (dynamic) mmap threshold to the OS, at most 64 MB, and serve a block
larger than that threshold by ``mmap``: either way the next step faults the pages back in one by one,
each zero-filled by the kernel. On DeepPCB crops at the product's defaults that was 3,000-7,000 minor
page faults a step, and a step took 4-15 % longer on 2 threads and 7-11 % on one (a sweep's trial
beside another) than with the memory kept (docs/benchmarks.md, "Speed, eighteenth session"). The arithmetic is untouched:
only where the memory comes from changes.

:func:`keep_freed_memory` is called by deftpipe's own processes at their start (the ``deftpipe``
command and a sweep's local worker), never on import: a program that imports deftpipe keeps its
allocator as it was. It does nothing off glibc, and nothing when the user tunes glibc's allocator
themselves (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``): setting
``MALLOC_TRIM_THRESHOLD_=131072`` brings back glibc's behaviour.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (<malloc.h>)
#: a block this large still comes from mmap and goes back to the OS when freed (a decode cache)
MMAP_THRESHOLD = 128 << 20
#: the most free memory the heap's top keeps: more than a step's activations at the product's sizes
TRIM_THRESHOLD = 512 << 20
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds (``mallopt``) so freed activations stay for reuse.

    Returns True when both were set; False off Linux/glibc or when the user set their own."""
    if not sys.platform.startswith("linux") or any(k in os.environ for k in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return False
    # mmap's threshold first: setting either one turns off glibc's dynamic adjustment of both
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


__all__ = ["keep_freed_memory"]
