"""data_merge: previous training set + SDG rows + mined rows → ``train_combined_iter<N>.csv``.

Every previous row is carried over unchanged (same order, same ``source``), so the set grows
monotonically; new rows are appended after normalising labels and dropping duplicates (by
identity key, against the previous rows and among themselves). ``_provenance.csv`` says where each
row comes from (``base_train | previous_iter_train | sdg | mining_pool``) and in which iteration it
was added. The merged set is then validated and checked for leakage against the validation and
KPI sets; any failure is a hard stop (:class:`DataError`).

What is checked: iteration 1 checks every row (the base set plus the first additions). A later
iteration checks only the rows it adds (``train_added_<iter>.csv``) when the previous merge passed
and recorded the SHA-1 of the combined CSV it wrote and of the validation and KPI CSVs it checked
against, and all three are unchanged; otherwise it checks every row again. The carried-over rows
were checked when they entered, so re-checking them every iteration was a tenth of a second per
iteration on the synthetic ``small`` workspace, for nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from deftpipe._fs import atomic_path, atomic_write_json
from deftpipe.data import (
    DEFECT_CLASSES,
    PASS,
    ImageLayout,
    find_leaks,
    identity_keys,
    normalize_label,
    read_dataset,
    validate_dataset,
)
from deftpipe.data import write_dataset as _write
from deftpipe.deft._context import HardStop
from deftpipe.errors import DataError

ROW_COLUMNS = ["input_path", "golden_path", "label", "object_name", "boardname", "source"]


@dataclass(frozen=True)
class MergeResult:
    combined_csv: Path
    provenance_csv: Path
    validation_json: Path
    n_rows: int
    n_previous: int
    n_sdg: int
    n_mined: int
    n_duplicates: int
    checked_rows: str  # "all" or "added" (the carried-over rows were checked before)


def _new_rows(csv: Path | None, source: str) -> pd.DataFrame:
    if csv is None or not Path(csv).is_file():
        return pd.DataFrame(columns=ROW_COLUMNS)
    df = read_dataset(csv, require_rows=False)
    df["label"] = df["label"].map(normalize_label)
    df["source"] = source
    return df[ROW_COLUMNS]


def _sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _checked_before(previous_validation: Path | None, fingerprints: dict[str, str]) -> bool:
    """True when the previous merge passed and checked exactly these files (same SHA-1s)."""
    try:
        old = json.loads(Path(previous_validation).read_text()) if previous_validation else None
    except (OSError, ValueError):
        return False
    if not old or old.get("validation") != "ok":
        return False
    return (old.get("leakage") or {}).get("n_overlapping") == 0 and old.get("fingerprints") == fingerprints


def _provenance(prev: pd.DataFrame, added: pd.DataFrame, combined: pd.DataFrame, iter_label: str,
                previous_provenance: Path | None) -> pd.DataFrame:
    """One row per combined row: where it came from and in which iteration it was added (the
    previous provenance file carries the earlier rows' history; without one they are the base set)."""
    if previous_provenance is None or not Path(previous_provenance).is_file():
        prov_prev = pd.DataFrame({"source": "base_train", "added_in": "base", "first_source": "base_train"},
                                 index=range(len(prev)))
    else:
        old = pd.read_csv(previous_provenance, dtype=str, keep_default_na=False)
        prov_prev = pd.DataFrame({"source": "previous_iter_train", "added_in": old["added_in"],
                                  "first_source": old["first_source"]})
    prov_new = pd.DataFrame({"source": added["source"].to_numpy(), "added_in": iter_label,
                             "first_source": added["source"].to_numpy()})
    prov = pd.concat([prov_prev, prov_new], ignore_index=True)
    prov.insert(0, "row", range(1, len(prov) + 1))
    prov["object_name"] = combined["object_name"].to_numpy()
    prov["label"] = combined["label"].to_numpy()
    return prov


def merge(*, previous_csv: Path, previous_is_base: bool, previous_provenance: Path | None, sdg_csv: Path | None,
          mined_csv: Path | None, val_csv: Path, kpi_csv: Path, layout: ImageLayout, out_dir: Path,
          iter_label: str, previous_validation: Path | None = None) -> MergeResult:
    """Write the combined CSV, its provenance, the added rows and ``merge_validation.json``.

    Args:
        previous_validation: the previous iteration's ``merge_validation.json``; when it vouches
            for ``previous_csv`` against the same validation and KPI files, only the added rows
            are checked.

    Raises:
        DataError: the merged set fails validation, or shares rows with validation / KPI (hard stop).
    """
    prev = read_dataset(previous_csv)
    if previous_is_base:
        prev["source"] = "base_train"
    elif "source" not in prev.columns:
        prev["source"] = "previous_iter_train"
    new = pd.concat([_new_rows(sdg_csv, "sdg"), _new_rows(mined_csv, "mining_pool")], ignore_index=True)
    known = set(identity_keys(prev))
    new_keys = identity_keys(new) if len(new) else pd.Series([], dtype=str)
    keep = ~new_keys.isin(known) & ~new_keys.duplicated() if len(new) else pd.Series([], dtype=bool)
    added = new[keep.to_numpy()] if len(new) else new
    combined = pd.concat([prev, added], ignore_index=True)
    combined_csv = _write(combined, out_dir / f"train_combined_{iter_label}.csv")
    added_csv = _write(added, out_dir / f"train_added_{iter_label}.csv")

    prov = _provenance(prev, added, combined, iter_label,
                       None if previous_is_base else previous_provenance)
    provenance_csv = _write_plain(prov, out_dir / f"train_combined_{iter_label}_provenance.csv")

    report = {"combined_csv": str(combined_csv), "n_rows": len(combined), "n_previous": len(prev),
              "n_sdg": int((added["source"] == "sdg").sum()), "n_mined": int((added["source"] == "mining_pool").sum()),
              "n_duplicates_dropped": int(len(new) - len(added)), "validation": "pending", "leakage": None}
    validation_json = out_dir / "merge_validation.json"
    held_out = {"val_csv": _sha1(val_csv), "kpi_csv": _sha1(kpi_csv)}
    only_added = not previous_is_base and _checked_before(
        previous_validation, {"combined_csv": _sha1(previous_csv), **held_out})
    report["checked_rows"] = "added" if only_added else "all"
    try:
        # classes beyond the six PCB ones are fine when the base data already has them
        known = {PASS, *DEFECT_CLASSES, *prev["label"], *read_dataset(val_csv)["label"]}
        if not only_added:
            # rows carried over were decoded when they entered (and training re-checks every file's
            # size and mtime through the image cache key), so only the added rows are decoded here
            validate_dataset(combined_csv, layout=layout, known_labels=known,
                             decode_rows=range(len(prev), len(combined)))
        elif len(added):
            validate_dataset(added_csv, layout=layout, known_labels=known, require_both_classes=False)
        report["validation"] = "ok"
        if only_added and not len(added):
            leaks = None
        else:
            leaks = find_leaks([added_csv if only_added else combined_csv, val_csv, kpi_csv], [layout] * 3,
                               first_only=only_added)
        report["leakage"] = {"n_overlapping": leaks.n_overlapping if leaks else 0,
                             "lines": leaks.lines() if leaks else []}
        if leaks is not None and leaks.n_overlapping:
            raise DataError(f"merged training set {combined_csv.name} overlaps held-out data: "
                            + "; ".join(leaks.lines()[:3]) + " — remove those rows from the pool / inputs and rerun")
    except DataError as err:
        report["validation"] = report["validation"] if report["validation"] == "ok" else "failed"
        report["error"] = str(err)
        atomic_write_json(validation_json, report)
        raise HardStop(f"data_merge hard stop for {iter_label}: {err}") from None
    report["fingerprints"] = {"combined_csv": _sha1(combined_csv), **held_out}  # what the next merge may trust
    atomic_write_json(validation_json, report)
    return MergeResult(combined_csv=combined_csv, provenance_csv=provenance_csv, validation_json=validation_json,
                       n_rows=len(combined), n_previous=len(prev), n_sdg=report["n_sdg"], n_mined=report["n_mined"],
                       n_duplicates=report["n_duplicates_dropped"], checked_rows=report["checked_rows"])


def _write_plain(df: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


__all__ = ["MergeResult", "merge"]
