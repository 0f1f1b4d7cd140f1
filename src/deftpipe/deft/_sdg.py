"""SDG: synthetic defect pairs for the routing's SDG targets.

Golden images come from the current training set's PASS rows (a clean reference of a real scene).
Each defect target gets ``count_per_target`` pairs of its class (the six PCB classes are drawn by
:mod:`._sdg_draw`; any other class gets a generic anomaly); each false-alarm target gets
``hard_pass_per_target`` hard PASS pairs (misregistration + noise). Images go under
``iter<N>/sdg/images/<target>/{golden,test}/``; the CSV's paths are relative to the workspace's
images folder (``../results/run_.../iter<N>/sdg/images/...``). A target that cannot be served (no
golden image, or no place for the defect) is skipped with its reason in ``allocation.json``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from deftpipe._fs import atomic_write_json
from deftpipe.data import PASS, ImageLayout, load_image, write_dataset
from deftpipe.deft._context import jsonable, relpath
from deftpipe.deft._sdg_draw import PCB_CLASSES, copper_is_dark, synthesize
from deftpipe.errors import DataError

MAX_GOLDEN_SOURCES = 400
ATTEMPTS_PER_PAIR = 6


@dataclass(frozen=True)
class SdgResult:
    sdg_csv: Path
    allocation_json: Path
    n_rows: int
    per_target: dict[str, int]
    skipped: dict[str, str]


def _read_gray(path: str | Path) -> np.ndarray | None:
    """A golden image through the image cache's in-process memo (training decoded it already)."""
    try:
        return load_image(path)
    except DataError:
        return None


def _save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(img, mode="L").save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    path.write_bytes(buf.getvalue())  # the stage folder is cleared on a rerun: no partial file survives


def golden_sources(train: pd.DataFrame, layout: ImageLayout, *, seed: int) -> list[list[np.ndarray]]:
    """Golden images (one array per light) of the training set's PASS rows whose files decode."""
    rows = train[train["label"] == PASS]
    if len(rows) > MAX_GOLDEN_SOURCES:
        rows = rows.sample(MAX_GOLDEN_SOURCES, random_state=seed)
    out = []
    for golden_dir, name in zip(rows["golden_path"].tolist(), rows["object_name"].tolist(), strict=True):
        imgs = [_read_gray(p) for p in layout.inside_file_strs(golden_dir, name)]
        if all(i is not None for i in imgs):
            out.append(imgs)
    return out


def generator_name(label: str) -> str:
    if label == PASS:
        return "hard_pass"
    return label if label in PCB_CLASSES else "generic"


def generate(*, targets: list[dict[str, Any]], train: pd.DataFrame, layout: ImageLayout, out_dir: Path,
             iter_label: str, count_per_target: int, hard_pass_per_target: int, seed: int = 0,
             contrast: tuple[float, float] = (1.0, 1.0), context: int = 1, on_pair=None) -> SdgResult:
    """Write the synthetic pairs of every SDG target and their CSV (``sdg_rows.csv``); ``context`` is
    the spec's ``model.context`` (defects go into the crop's full-resolution window)."""
    rng = np.random.default_rng([seed, int(iter_label.removeprefix("iter") or 0)])
    goldens = golden_sources(train, layout, seed=seed)
    dark = copper_is_dark([g[0] for g in goldens])
    rows, allocation, per_target, skipped = [], [], {}, {}
    for t in targets:
        tid = t["target_id"]
        label = PASS if t["kind"] == "false_alarm" else t["label"]
        want = hard_pass_per_target if label == PASS else count_per_target
        entry = {"target_id": tid, "group_id": t["group_id"], "label": label,
                 "generator": generator_name(label), "requested": want, "written": 0, "skipped_reason": None,
                 "examples": []}
        allocation.append(entry)
        per_target[tid] = 0
        if not goldens:
            entry["skipped_reason"] = (f"no golden images for class '{t['label']}': the training set has no "
                                       "PASS rows with readable golden images")
            skipped[tid] = entry["skipped_reason"]
            continue
        folder = out_dir / "images" / tid
        csv_dirs = relpath(folder / "test", layout.images_dir), relpath(folder / "golden", layout.images_dir)
        for k in range(want):
            tests = None
            for _ in range(ATTEMPTS_PER_PAIR):
                golden = goldens[int(rng.integers(len(goldens)))]
                tests = synthesize(rng, golden, label, max_shift=max(2, golden[0].shape[0] // context // 16),
                                   dark_copper=dark, contrast=contrast, context=context)
                if tests is not None:
                    break
            if tests is None:
                continue
            name = f"sdg_{iter_label}_{tid}_{k:04d}"
            for light, g, te in zip(layout.lights or ("",), golden, tests, strict=False):
                suffix = f"_{light}" if light else ""
                _save(g, folder / "golden" / f"{name}{suffix}{layout.image_ext}")
                _save(te, folder / "test" / f"{name}{suffix}{layout.image_ext}")
            rows.append({"input_path": csv_dirs[0], "golden_path": csv_dirs[1], "label": label,
                         "object_name": name, "boardname": f"sdg_{iter_label}", "source": "sdg",
                         "sdg_target": tid})
            entry["written"] += 1
            if len(entry["examples"]) < 4:
                entry["examples"].append(name)
            if on_pair is not None:
                on_pair()
        per_target[tid] = entry["written"]
        if entry["written"] == 0 and want > 0:
            entry["skipped_reason"] = f"no place for a '{label}' defect on {ATTEMPTS_PER_PAIR * want} tries"
            skipped[tid] = entry["skipped_reason"]
    cols = ["input_path", "golden_path", "label", "object_name", "boardname", "source", "sdg_target"]
    sdg_csv = write_dataset(pd.DataFrame(rows, columns=cols), out_dir / "sdg_rows.csv")
    allocation_json = atomic_write_json(out_dir / "allocation.json", jsonable({
        "count_per_target": count_per_target, "hard_pass_per_target": hard_pass_per_target, "contrast": contrast,
        "n_golden_sources": len(goldens), "copper_polarity": "dark" if dark else "bright", "n_rows": len(rows), "targets": allocation}))
    return SdgResult(sdg_csv=sdg_csv, allocation_json=allocation_json, n_rows=len(rows),
                     per_target=per_target, skipped=skipped)


__all__ = ["SdgResult", "generate", "generator_name", "golden_sources"]
