"""DeepPCB importer (work in progress)."""

from __future__ import annotations

from deftpipe.errors import DataError


def import_deeppcb(src, dest, *, crop_size=64, seed=0, kpi_groups=None, val_groups=None, pool_groups=None,
                   pass_ratio=4.0, log=None):
    raise DataError("the DeepPCB importer is not implemented yet")
