"""Reading a DeepPCB checkout: board groups, image pairs, annotations, and the split by group.

Layout (see the dataset's README): ``PCBData/groupG/G/<id>_temp.jpg`` (template = golden),
``PCBData/groupG/G/<id>_test.jpg`` and ``PCBData/groupG/G_not/<id>.txt`` (``x1 y1 x2 y2 type`` per
line, type 1..6 = open, short, mousebite, spur, copper, pin-hole). Groups are discovered from the
folder, never assumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deftpipe.data._csv import DEFECT_CLASSES
from deftpipe.errors import DataError

SPLITS = ("train", "val", "kpi", "pool", "holdout")  # holdout: only groups named by --holdout-groups
HOLDOUT_SHARE = {"kpi": 0.20, "pool": 0.18, "val": 0.12}  # default share of images per held-out split
_SEP = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class Box:
    x1: int
    y1: int
    x2: int
    y2: int
    label: str


@dataclass(frozen=True)
class Pair:
    group: str  # board group name, e.g. "20085"
    image_id: str  # e.g. "20085000"
    template: Path
    test: Path
    annotation: Path

    @property
    def source(self) -> str:
        return f"group{self.group}/{self.group}/{self.image_id}"


def parse_annotation(path: Path, width: int = 640, height: int = 640) -> list[Box]:
    """Boxes of one annotation file; comma or space separated, final newline optional.

    Raises:
        DataError: a line without 5 integers or with an unknown defect type (file and line named).
    """
    boxes = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), start=1):
        fields = [f for f in _SEP.split(line.strip()) if f]
        if not fields:
            continue
        try:
            x1, y1, x2, y2, t = (int(float(f)) for f in fields[:5])
            if len(fields) != 5:
                raise ValueError
        except ValueError:
            raise DataError(f"{path} line {n}: expected 'x1 y1 x2 y2 type' (5 integers), got {line.strip()!r}; "
                            "fix or delete the line") from None
        if not 1 <= t <= len(DEFECT_CLASSES):
            raise DataError(f"{path} line {n}: defect type {t} is not one of 1..{len(DEFECT_CLASSES)} "
                            f"({', '.join(DEFECT_CLASSES)}); fix the line")
        x1, x2 = sorted((max(0, min(x1, width)), max(0, min(x2, width))))
        y1, y2 = sorted((max(0, min(y1, height)), max(0, min(y2, height))))
        if x2 > x1 and y2 > y1:
            boxes.append(Box(x1, y1, x2, y2, DEFECT_CLASSES[t - 1]))
    return boxes


def discover_pairs(src: str | Path) -> dict[str, list[Pair]]:
    """``{group: [Pair, ...]}`` of a DeepPCB checkout (``src`` or ``src/PCBData``).

    Raises:
        DataError: no PCBData folder / no groups, or test images lacking a template or annotation
            (every missing file is listed).
    """
    src = Path(src)
    root = src / "PCBData" if (src / "PCBData").is_dir() else src
    groups = sorted(p for p in root.glob("group*") if p.is_dir()) if root.is_dir() else []
    if not groups:
        raise DataError(f"{src} is not a DeepPCB checkout: expected {src}/PCBData/group*/ folders "
                        "(see the DeepPCB README); pass the folder holding PCBData/ to --from-deeppcb")
    out: dict[str, list[Pair]] = {}
    missing: list[str] = []
    for gdir in groups:
        name = gdir.name.removeprefix("group")
        pairs = []
        for test in sorted(gdir.glob("*/*_test.jpg")):
            image_id = test.name.removesuffix("_test.jpg")
            template = test.with_name(f"{image_id}_temp.jpg")
            annotation = test.parent.with_name(test.parent.name + "_not") / f"{image_id}.txt"
            for f, what in ((template, "template"), (annotation, "annotation")):
                if not f.is_file():
                    missing.append(f"{what} {f} (for {test.name})")
            pairs.append(Pair(name, image_id, template, test, annotation))
        if pairs:
            out[name] = pairs
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"DeepPCB folder {src} is incomplete: missing {'; '.join(missing[:5])}{more}; "
                        "restore the files or remove the test images that lack them")
    if not out:
        raise DataError(f"{src}: no *_test.jpg images under {root}/group*/*/; is this a DeepPCB checkout?")
    return out


def _normalise(names: list[str] | None, groups: dict[str, list[Pair]], flag: str) -> list[str]:
    out = []
    for n in names or []:
        g = str(n).strip().removeprefix("group")
        if g not in groups:
            raise DataError(f"{flag}: board group '{n}' not found; groups in this checkout: "
                            f"{', '.join(groups)}")
        out.append(g)
    return out


def assign_groups(groups: dict[str, list[Pair]], *, seed: int = 0, kpi: list[str] | None = None,
                  val: list[str] | None = None, pool: list[str] | None = None,
                  holdout: list[str] | None = None) -> dict[str, list[str]]:
    """Board groups per split. Given flags are kept; other held-out splits are filled greedily.

    The holdout (the audit's data, docs/contracts.md §11) holds exactly the ``holdout`` groups — never a
    default, never images carved out of other groups — and they are removed before anything else
    is assigned, so the other splits are what they would be on a checkout without those groups.

    Default: groups are visited in a seeded random order and each goes to the held-out split
    (kpi, pool, val) furthest below its share of images (``HOLDOUT_SHARE``) if it fits in it by at
    least half its size, else to train. A held-out split that gets no group is later carved out of
    the training groups by image (see :func:`split_pairs`).

    Raises:
        DataError: unknown group name, a group named in two flags, or no group left for training.
    """
    given = {"kpi": _normalise(kpi, groups, "--kpi-groups"), "val": _normalise(val, groups, "--val-groups"),
             "pool": _normalise(pool, groups, "--pool-groups"),
             "holdout": _normalise(holdout, groups, "--holdout-groups")}
    seen: dict[str, str] = {}
    for split, names in given.items():
        for g in names:
            if g in seen:
                raise DataError(f"board group '{g}' is given to both --{seen[g]}-groups and --{split}-groups; "
                                "a group may be in one split only")
            seen[g] = split
    out = {s: list(given.get(s, [])) for s in SPLITS}
    groups = {g: p for g, p in groups.items() if g not in given["holdout"]}
    total = sum(len(p) for p in groups.values())
    free = [g for g in groups if g not in seen]
    order = [free[i] for i in np.random.default_rng(seed).permutation(len(free))]
    if not any(given[s] for s in ("kpi", "val", "pool")) and len(groups) >= 2:
        # biggest group first into train so the default never leaves training starved
        order.remove(max(free, key=lambda g: (len(groups[g]), g)))
        out["train"].append(max(free, key=lambda g: (len(groups[g]), g)))
    open_splits = [s for s in ("kpi", "pool", "val") if not given[s]]
    for g in order:
        size = len(groups[g])
        deficit = {s: HOLDOUT_SHARE[s] * total - sum(len(groups[x]) for x in out[s]) for s in open_splits}
        best = max(deficit, key=lambda s: deficit[s]) if deficit else None
        if best is not None and deficit[best] >= size / 2:
            out[best].append(g)
        else:
            out["train"].append(g)
    if not out["train"]:
        raise DataError("no board group is left for training; name fewer groups in "
                        "--kpi-groups/--val-groups/--pool-groups/--holdout-groups")
    if not out["kpi"]:
        raise DataError(f"only {len(groups)} board group(s) found ({', '.join(groups)}); the KPI test set needs "
                        "a group never seen in training: pass --kpi-groups G (and leave at least one for training)")
    return {s: sorted(v) for s, v in out.items() if v or s != "holdout"}  # no holdout key unless asked


def split_pairs(groups: dict[str, list[Pair]], assignment: dict[str, list[str]], *,
                seed: int = 0) -> dict[str, list[Pair]]:
    """Image pairs per split; a held-out split without groups takes held-out images of train groups."""
    out = {s: [p for g in assignment.get(s, []) for p in groups[g]] for s in SPLITS}
    rng = np.random.default_rng([seed, 7])
    train = out["train"]
    for s in ("pool", "val"):
        if not out[s]:
            n = max(1, round(HOLDOUT_SHARE[s] * len(train)))
            if len(train) - n < 1:
                raise DataError(f"too few training images to hold out a {s} split; pass --{s}-groups")
            idx = set(rng.choice(len(train), size=n, replace=False).tolist())
            out[s] = [p for i, p in enumerate(train) if i in idx]
            train = [p for i, p in enumerate(train) if i not in idx]
    out["train"] = train
    return out


def assignment_flags(assignment: dict[str, list[str]]) -> str:
    """The flags that reproduce an assignment (printed by the importer)."""
    return " ".join(f"--{s}-groups {','.join(assignment[s])}" for s in ("kpi", "val", "pool", "holdout")
                    if assignment.get(s))


__all__ = ["Box", "Pair", "assign_groups", "assignment_flags", "discover_pairs", "parse_annotation", "split_pairs"]
