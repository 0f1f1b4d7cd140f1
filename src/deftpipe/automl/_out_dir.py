"""Which study a sweep folder belongs to: ``<out>/.study.json`` names it, so a second sweep with
another ``--study`` (or storage) cannot overwrite the first one's trials and ``best_rec.json``."""

from __future__ import annotations

import json
from pathlib import Path

from deftpipe._fs import atomic_write_json
from deftpipe.errors import SweepError

OWNER_NAME = ".study.json"


def _owner(out: Path) -> dict | None:
    marker = out / OWNER_NAME
    owner = None
    if marker.is_file():
        try:
            owner = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            owner = None
        if not isinstance(owner, dict) or not isinstance(owner.get("study"), str):
            raise SweepError(f"{marker} is damaged; it should name the study this folder holds. Delete it only "
                             "if the folder holds no other sweep")
    return owner


def refuse_other_owner(out: Path, study: str, storage: str) -> None:
    """Before any storage is opened: refuse ``out`` when its marker names another study.

    Raises:
        SweepError: ``out`` belongs to another study (or its marker is damaged).
    """
    owner = _owner(out)
    if owner is not None and owner["study"] != study:  # not the storage: a moved folder changes its path
        raise SweepError(f"--out {out} holds study '{owner['study']}' ({owner.get('storage')}); a sweep of study "
                         f"'{study}' there would overwrite its trials and best_rec.json: pass another --out, or "
                         f"--study {owner['study']} to resume it")


def claim_out_dir(out: Path, study: str, storage: str, *, resuming: bool) -> None:
    """Record ``study``/``storage`` (password-redacted) as the owner of ``out``, or refuse.

    Raises:
        SweepError: ``out`` holds an earlier sweep's files (trials/, best_rec.json) without naming
            its study while ``study`` is new.
    """
    refuse_other_owner(out, study, storage)
    owner = _owner(out)
    if owner is None and not resuming and ((out / "best_rec.json").exists() or (out / "trials").exists()):
        raise SweepError(f"--out {out} holds an earlier sweep (trials/, best_rec.json) that study '{study}' would "
                         "overwrite: pass another --out, or the --study and --storage of that sweep to resume it")
    if owner is None:
        atomic_write_json(out / OWNER_NAME, {"study": study, "storage": storage})


__all__ = ["OWNER_NAME", "claim_out_dir", "refuse_other_owner"]
