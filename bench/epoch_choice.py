"""Which epoch should a training deliver? The validation-chosen best epoch against the last, on the holdout.

    python bench/epoch_choice.py [--work /tmp/deftpipe_value]      # score, then print the table
    python bench/epoch_choice.py --tables

The adapter keeps the epoch with the lowest validation FAR@100%R, ties broken by validation loss
(``model._train._is_better``), and the last epoch beside it. On DeepPCB's folds the validation set is
one board group: its FAR@100%R saturates at 0 (fold v3) or swings by tens of points from one epoch to
the next (fold v2). This bench finds every training under the value benches' work folder
(bench_value.py, epoch_budget.py: sweep trials, loop trainings, the controls) whose kept best epoch is
not its last, scores both checkpoints on the fold's holdout with the shipped score (flip TTA), and
stores FAR@100%R with its bootstrap interval, AUROC and the validation figures the rule saw, in
``bench/results/epoch_choice.json`` (a training at a time, atomically; a rerun skips what is done).
Trainings whose best epoch is their last need no scoring: there the two rules agree. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ablation as ab  # noqa: E402  (the bench folder is not a package)
import bench_value as bv  # noqa: E402

from deftpipe.data import is_defect, read_dataset  # noqa: E402
from deftpipe.metrics import compute_metrics  # noqa: E402
from deftpipe.selection import RULE_FIGURE, challenge  # noqa: E402

OUT = Path(os.environ.get("BENCH_OUT") or Path(__file__).resolve().parent / "results" / "epoch_choice.json")
#: The trainings scored before the product's new epoch rule (model._train.later_epoch_replaces) was fixed
#: (twenty-first session): the rule was written after seeing these; the others are its check.
SEEN_BEFORE_RULE = {
    "v1/compute_matched_s43/results/compute_matched", "v1/epochs8_s44/results/epochs8",
    "v1/epochs8_s45/results/epochs8", "v2/compute_matched_s43/results/compute_matched",
    "v2/data_matched_s43/results/data_matched", "v2/deft_only_s43/results/run_20261207_024416/baseline/train",
    "v2/epochs8_s44/results/epochs8"}


def trainings(work: Path) -> list[tuple[Path, Path, dict[str, Any]]]:
    """(training folder, its workspace, metrics.json) for each finished training whose best epoch is kept
    beside a later last epoch."""
    found = []
    for m in sorted(work.glob("v*/*/results/**/metrics.json")):
        metrics = json.loads(m.read_text(encoding="utf-8"))
        history = metrics.get("history") or []
        if metrics.get("status") != "complete" or not history or metrics.get("best_epoch") == len(history):
            continue
        if "kept_epoch" in history[-1]:  # trained under the new rule: old_rule_picks() compares those
            continue
        ckpts = sorted(m.parent.glob("model_epoch_*.pth"))
        if len(ckpts) < 2 or not ckpts[-1].name.startswith(f"model_epoch_{len(history):03d}_"):
            continue
        ws = m.parents[len(m.relative_to(work).parts) - 3]  # work/<fold>/<workspace>/results/...
        found.append((m.parent, ws, metrics))
    return found


def old_rule_picks(work: Path) -> list[tuple[Path, Path, dict[str, Any], int]]:
    """Trainings made under the new rule with every epoch kept (``epoch_budget.py --keep-checkpoints``)
    where the old rule (lowest validation ``far_pct``, ties: lower ``val_loss``) would have kept
    another epoch: (folder, workspace, metrics.json, the old rule's epoch)."""
    found = []
    for m in sorted(work.glob("v*/*_keep*/results/**/metrics.json")):
        metrics = json.loads(m.read_text(encoding="utf-8"))
        history = metrics.get("history") or []
        if metrics.get("status") != "complete" or not history or "kept_epoch" not in history[-1]:
            continue
        old = min(history, key=lambda h: (h["far_pct"], h["val_loss"] if h.get("val_loss") is not None
                                          else float("inf")))["epoch"]
        if old != metrics["best_epoch"]:
            found.append((m.parent, m.parents[len(m.relative_to(work).parts) - 3], metrics, old))
    return found


def holdout_figures(ckpt: Path, ws: Path) -> dict[str, Any]:
    csv = ws / "holdout" / "holdout_set.csv"
    y = is_defect(read_dataset(csv)["label"]).to_numpy()
    tta, _ = bv.both_scores(ckpt, csv)
    m = compute_metrics(y, tta, seed=0)
    return {"far_pct": m["far_pct"], "far_ci": [m["far_ci_low"], m["far_ci_high"]], "auroc": m["auroc"]}


def noise_rule(ws: Path, best: Path, last: Path) -> dict[str, Any]:
    """Would the earlier best epoch beat the last beyond the validation set's noise? The product's paired
    bootstrap (``selection.challenge``, its rule figure) on the one-pass scores the epoch rule sees."""
    csv = bv.load_config(ws).path(ws, bv.load_config(ws).data.val_csv)
    y = is_defect(read_dataset(csv)["label"]).to_numpy()
    c = challenge(y, bv.both_scores(last, csv)[1], bv.both_scores(best, csv)[1], figure=RULE_FIGURE)
    return {"figure": c.figure, "last": c.incumbent, "best": c.challenger, "confidence": c.confidence,
            "best_beats_last": c.replaces}


def summarise(cells: dict[str, Any]) -> dict[str, Any]:
    """The three rules' holdout figures over all trainings, and over those the rule was not written on."""
    check = {k: c for k, c in cells.items() if k not in SEEN_BEFORE_RULE}
    return {**_summary(cells), "check": _summary(check) if check else None}


def _summary(cells: dict[str, Any]) -> dict[str, Any]:
    rows = list(cells.values())
    best = np.array([r["best"]["holdout"]["far_pct"] for r in rows])
    last = np.array([r["last"]["holdout"]["far_pct"] for r in rows])
    beyond = {"last_better": sum(r["last"]["holdout"]["far_pct"] < r["best"]["holdout"]["far_ci"][0] for r in rows),
              "best_better": sum(r["best"]["holdout"]["far_pct"] < r["last"]["holdout"]["far_ci"][0] for r in rows)}
    rule = np.array([b if r["noise_rule"]["best_beats_last"] else la
                     for r, b, la in zip(rows, best, last, strict=True)])
    return {"trainings": len(rows), "best_far_mean": float(best.mean()), "last_far_mean": float(last.mean()),
            "noise_rule_far_mean": float(rule.mean()),
            "noise_rule_keeps_best": sum(bool(r["noise_rule"]["best_beats_last"]) for r in rows),
            "last_lower": int((last < best).sum()), "best_lower": int((best < last).sum()),
            "beyond_the_other_interval": beyond}


def _line(s: dict[str, Any]) -> str:
    return (f"{s['trainings']} trainings whose kept best epoch is not their last. Holdout FAR@100%R mean: "
             f"best {s['best_far_mean']:.2f} %, last {s['last_far_mean']:.2f} %; the last is lower in "
             f"{s['last_lower']}, the best in {s['best_lower']}; below the other's interval: the last "
             f"{s['beyond_the_other_interval']['last_better']}, the best {s['beyond_the_other_interval']['best_better']}. "
             f"The last unless the best beats it beyond the validation noise: {s['noise_rule_far_mean']:.2f} % "
             f"(keeps the best in {s['noise_rule_keeps_best']}).")


def tables(results: dict[str, Any]) -> str:
    s = summarise(results["cells"])
    lines = ["All: " + _line(s)]
    if s["check"]:
        lines.append("Not seen when the rule was written: " + _line(s["check"]))
    lines += ["", "| training | epochs | best epoch | validation FAR best / last | best beats last (paired) | "
             "holdout best [95 % CI] | holdout last [95 % CI] |", "|---|---|---|---|---|---|---|"]
    for key, r in sorted(results["cells"].items()):
        b, la = r["best"], r["last"]
        n = r["noise_rule"]
        lines.append(f"| {key}{'' if key in SEEN_BEFORE_RULE else ' (check)'} | {r['epochs']} | {r['best_epoch']} | {b['val_far_pct']:.2f} / {la['val_far_pct']:.2f} | "
                     f"{'yes' if n['best_beats_last'] else 'no'} ({100 * n['confidence']:.0f} %) | "
                     f"{b['holdout']['far_pct']:.2f} [{b['holdout']['far_ci'][0]:.2f}, {b['holdout']['far_ci'][1]:.2f}] | "
                     f"{la['holdout']['far_pct']:.2f} [{la['holdout']['far_ci'][0]:.2f}, {la['holdout']['far_ci'][1]:.2f}] |")
    if results.get("new_seeds"):
        ns = results["new_seeds"]
        kept = [c["kept"]["holdout"]["far_pct"] for c in ns.values()]
        old = [c["old"]["holdout"]["far_pct"] for c in ns.values()]
        lines += ["", f"Trained under this rule (new seeds), where the old rule would have kept another epoch: "
                  f"{len(ns)}; mean holdout FAR@100%R {np.mean(kept):.2f} % (this rule) against {np.mean(old):.2f} % "
                  f"(the old rule); this rule lower in {sum(k < o for k, o in zip(kept, old, strict=True))}.", "",
                  "| training | epochs | kept / old rule's epoch | validation FAR kept / old | holdout kept [95 % CI] "
                  "| holdout old rule's [95 % CI] |", "|---|---|---|---|---|---|"]
        for key, c in sorted(ns.items()):
            k, o = c["kept"], c["old"]
            lines.append(f"| {key} | {c['epochs']} | {c['kept_epoch']} / {c['old_epoch']} | {k['val_far_pct']:.2f} / "
                         f"{o['val_far_pct']:.2f} | {k['holdout']['far_pct']:.2f} [{k['holdout']['far_ci'][0]:.2f}, "
                         f"{k['holdout']['far_ci'][1]:.2f}] | {o['holdout']['far_pct']:.2f} "
                         f"[{o['holdout']['far_ci'][0]:.2f}, {o['holdout']['far_ci'][1]:.2f}] |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/deftpipe_value"))
    ap.add_argument("--tables", action="store_true", help="print the table of epoch_choice.json, then stop")
    args = ap.parse_args()
    if args.tables:
        return print(tables(json.loads(OUT.read_text(encoding="utf-8"))))
    results = json.loads(OUT.read_text(encoding="utf-8")) if OUT.is_file() else {"cells": {}}
    for folder, ws, metrics in trainings(args.work):
        key = str(folder.relative_to(args.work))
        if key in results["cells"] and "noise_rule" in results["cells"][key]:
            continue
        if key in results["cells"]:  # scored on the holdout before the rule's column existed
            cell = results["cells"][key]
            cell["noise_rule"] = noise_rule(ws, folder / cell["best"]["checkpoint"], folder / cell["last"]["checkpoint"])
            results["summary"] = summarise(results["cells"])
            ab.atomic_write_json(OUT, results)
            continue
        t0 = time.perf_counter()
        history, cell = metrics["history"], {"epochs": len(metrics["history"]), "best_epoch": metrics["best_epoch"]}
        for name, epoch, ckpt in (("best", metrics["best_epoch"], folder / metrics["best_checkpoint"]),
                                  ("last", len(history), sorted(folder.glob("model_epoch_*.pth"))[-1])):
            h = history[epoch - 1]
            cell[name] = {"checkpoint": ckpt.name, "val_far_pct": h.get("far_pct"), "val_loss": h.get("val_loss"),
                          "holdout": holdout_figures(ckpt, ws)}
        cell["noise_rule"] = noise_rule(ws, folder / cell["best"]["checkpoint"], folder / cell["last"]["checkpoint"])
        cell["code"] = ab.code_commit()
        results["cells"][key] = cell
        results["summary"] = summarise(results["cells"])
        ab.atomic_write_json(OUT, results)
        ab.log(f"{key}: best (epoch {cell['best_epoch']}) {cell['best']['holdout']['far_pct']:.2f} %, last "
               f"{cell['last']['holdout']['far_pct']:.2f} % ({(time.perf_counter() - t0):.0f} s)")
    results.setdefault("new_seeds", {})
    for folder, ws, metrics, old in old_rule_picks(args.work):
        key = str(folder.relative_to(args.work))
        if key in results["new_seeds"]:
            continue
        cell: dict[str, Any] = {"epochs": len(metrics["history"]), "kept_epoch": metrics["best_epoch"], "old_epoch": old}
        for name, epoch in (("kept", metrics["best_epoch"]), ("old", old)):
            ckpt = next(folder.glob(f"model_epoch_{epoch:03d}_step_*.pth"))
            h = metrics["history"][epoch - 1]
            cell[name] = {"checkpoint": ckpt.name, "val_far_pct": h.get("far_pct"), "val_loss": h.get("val_loss"),
                          "holdout": holdout_figures(ckpt, ws)}
        cell["code"] = ab.code_commit()
        results["new_seeds"][key] = cell
        ab.atomic_write_json(OUT, results)
        ab.log(f"{key}: kept (epoch {cell['kept_epoch']}) {cell['kept']['holdout']['far_pct']:.2f} %, the old rule's "
               f"(epoch {old}) {cell['old']['holdout']['far_pct']:.2f} %")
    results["summary"] = summarise(results["cells"])
    ab.atomic_write_json(OUT, results)
    print(tables(results))


if __name__ == "__main__":
    sys.exit(main())
