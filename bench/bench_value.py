"""The value of the three phases at full size and the product's defaults, against fair controls (issue 28).

    DEFTPIPE_NUM_THREADS=1 OMP_NUM_THREADS=1 nice -n 10 python bench/bench_value.py \
        --deeppcb ../shared/deeppcb [--arms a,d,k,l,b,c] [--folds v1,v2,v3] [--seeds 42,43] \
        [--work /tmp/deftpipe_value] [--smoke]

Three leave-board-groups-out folds of DeepPCB, imported as the product imports them (context 2, every
row: no subsetting), each with two board groups held out (used nowhere else in that fold), one as the
KPI set, one as validation, one as the mining pool and three to train (>= 20,000 training rows).
Every arm runs at the product's defaults (``pipeline.yaml`` as ``init --from-deeppcb`` writes it;
only the seed is set), and every deliverable is shipped by the product's threshold rule on the KPI
set and audited once on the holdout:

* ``default_spec`` (a) — the user's spec trained once: read from the (d) run of the same fold and seed,
  whose Phase 1 trains it first (same spec, data, seed and epochs) and records it as ``user_spec``;
  trained here only when no (d) cell exists;
* ``full_pipeline`` (d) — ``deftpipe run``: Phase 1 → loop → Phase 3;
* ``compute_matched`` (k) — the user's spec given the training row-epochs the full pipeline of the
  same fold and seed used (more epochs at the same rows; the adapter's best-epoch rule);
* ``data_matched`` (l) — the user's spec trained on the training set plus the whole labelled mining
  pool (the rows the loop mines from);
* ``phase1_only`` (b) — the full pipeline's hand-off (its loop baseline), read from the (d) run;
* ``deft_only`` (c) — the loop from the user's spec (Phase 1 and Phase 3 off).

Cells run seed by seed and fold by fold, every arm of one (fold, seed) before the next (``deft_only``
after all the others), so a stopped bench leaves whole comparisons. Each finished cell is written to ``bench/results/value.json`` at once (atomically, under a file
lock), so a stopped bench resumes at the next cell; the claims let two processes share the plan.
Scoring, audit and cell bookkeeping are bench_ablation's (the same code the earlier ablation used).
Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ablation as ab  # noqa: E402  (the bench folder is not a package)

from deftpipe.config import load_config  # noqa: E402
from deftpipe.data import import_deeppcb, is_defect, read_dataset, write_dataset  # noqa: E402

OUT = Path(os.environ.get("BENCH_OUT") or Path(__file__).resolve().parent / "results" / "value.json")
CONTEXT = 2  # the importer's default (data/_deeppcb.DEFAULT_CONTEXT)
TRAIN_ROWS_MIN = 20_000  # "full size" (the acceptance check's floor)
#: holdout / KPI / validation / pool board groups per fold; the three other groups train.
FOLDS: dict[str, dict[str, list[str]]] = {
    "v1": {"holdout": ["12100", "44000"], "kpi": ["13000"], "val": ["12300"], "pool": ["12000"]},
    # v2 trains on 12100/13000/20085 (23.2k rows); 12000 (465 rows) as its training group left it at 19.1k
    "v2": {"holdout": ["00041", "12300"], "kpi": ["44000"], "val": ["77000"], "pool": ["12000"]},
    "v3": {"holdout": ["13000", "77000"], "kpi": ["12100"], "val": ["12000"], "pool": ["44000"]},
}
ARMS = ["default_spec", "full_pipeline", "compute_matched", "data_matched", "phase1_only", "deft_only"]
ALIASES = {"a": "default_spec", "d": "full_pipeline", "k": "compute_matched", "l": "data_matched",
           "b": "phase1_only", "c": "deft_only"}
OVERRIDES: dict[str, dict[str, Any]] = {
    "full_pipeline": {},
    "deft_only": {"automl.phase1.enabled": False, "automl.phase3.enabled": False},
}
SMOKE_ROWS: dict[str, int] | None = None  # --smoke: rows kept per split (else every row)


def build_fold(src: Path, work: Path, fold: str) -> Path:
    """The fold's base workspace: DeepPCB imported at the product's defaults, the holdout split off."""
    ws = work / fold / "base"
    if (ws / "holdout" / "holdout_set.csv").is_file():
        return ws
    f = FOLDS[fold]
    ab.log(f"{fold}: importing DeepPCB (holdout {f['holdout']}, KPI {f['kpi']}, val {f['val']}, pool {f['pool']})")
    import_deeppcb(src, ws, kpi_groups=f["kpi"] + f["holdout"], val_groups=f["val"], pool_groups=f["pool"],
                   context=CONTEXT)
    cfg = load_config(ws)
    kpi = read_dataset(cfg.path(ws, cfg.data.kpi_csv))
    held = kpi["boardname"].astype(str).isin(f["holdout"])
    (ws / "holdout").mkdir(exist_ok=True)
    if SMOKE_ROWS:
        write_dataset(ab._subset(kpi[~held], max_pass=SMOKE_ROWS["kpi_pass"]), cfg.path(ws, cfg.data.kpi_csv))
        write_dataset(ab._subset(kpi[held], max_pass=SMOKE_ROWS["holdout_pass"]), ws / "holdout" / "holdout_set.csv")
        for key in ("train_csv", "val_csv", "pool_csv"):
            path = cfg.path(ws, getattr(cfg.data, key))
            write_dataset(ab._subset(read_dataset(path), SMOKE_ROWS[key.removesuffix("_csv")]), path)
    else:
        write_dataset(kpi[~held], cfg.path(ws, cfg.data.kpi_csv))
        write_dataset(kpi[held], ws / "holdout" / "holdout_set.csv")
    drop_leaks_from_holdout(ws)
    ab.prune_images(ws)
    rows = _rows(cfg.path(ws, cfg.data.train_csv))
    if not SMOKE_ROWS and rows < TRAIN_ROWS_MIN:
        raise SystemExit(f"{fold}: {rows} training rows (< {TRAIN_ROWS_MIN}): not full size; change FOLDS")
    return ws


def drop_leaks_from_holdout(ws: Path) -> None:
    """Holdout rows that are copies or near-copies of a row of another split are dropped (recorded in
    ``holdout/dropped.json``): DeepPCB's board groups share crops (bare copper, the same trace), and the
    pre-flight blocks a holdout that is not "boards no split has touched"."""
    from deftpipe.data import content_hashes, layout_for
    from deftpipe.data._near_dup import fingerprints, near_pairs
    from deftpipe.spec import load_spec

    cfg = load_config(ws)
    hcsv = ws / "holdout" / "holdout_set.csv"
    held = read_dataset(hcsv)
    layout = layout_for(load_spec(cfg.path(ws, cfg.data.spec)), ws)
    h_print, h_hash = fingerprints(held, layout), content_hashes(held, layout)
    drop: dict[int, str] = {}
    for key in ("train_csv", "val_csv", "kpi_csv", "pool_csv"):
        other = read_dataset(cfg.path(ws, getattr(cfg.data, key)))
        same = h_hash.notna() & h_hash.isin(set(content_hashes(other, layout).dropna()))
        drop.update({int(i): f"{key}: same image" for i in np.flatnonzero(same.to_numpy())})
        drop.update({j: f"{key}: near-duplicate" for _, j in near_pairs(fingerprints(other, layout), h_print)})
    write_dataset(held.drop(index=held.index[sorted(drop)]).reset_index(drop=True), hcsv)
    ab.atomic_write_json(ws / "holdout" / "dropped.json", {
        "rows_before": len(held), "dropped": len(drop),
        "defects_dropped": int(is_defect(held["label"].iloc[sorted(drop)]).sum()) if drop else 0,
        "why": {str(held["object_name"].iloc[i]): w for i, w in sorted(drop.items())}})
    ab.log(f"{ws.parent.name}: {len(drop)} holdout rows dropped of {len(held)} (copies of rows of other splits)")


def _rows(csv: Path) -> int:
    return len(read_dataset(csv))


def row_epochs(run_dir: Path, ws: Path) -> int:
    """The training row-epochs a pipeline run spent: every sweep trial and every loop training."""
    cfg = load_config(ws)
    total = 0
    for folder, csv in (("automl/phase1", cfg.path(ws, cfg.data.train_csv)), ("final_automl", None)):
        br = run_dir / folder / "best_rec.json"
        if not br.is_file():
            continue
        rec = json.loads(br.read_text(encoding="utf-8"))
        rows = _rows(csv) if csv else _rows(Path(json.loads((run_dir / "pipeline_state.json").read_text(
            encoding="utf-8"))["phases"]["phase3"]["handoff"]["train_csv"]))
        total += sum(rows * int(r.get("epochs_run") or 0) for r in rec["all_recs"])
        # the winner's fresh-seed verification re-run (automl.*.rerun_margin) trains too
        for m in (run_dir / folder / "reruns").glob("*/metrics.json"):
            total += rows * len(json.loads(m.read_text(encoding="utf-8")).get("history", []))
    state = json.loads((run_dir / "deft_state.json").read_text(encoding="utf-8"))
    for label, it in state["iterations"].items():
        if label == "final_automl" or it.get("source") != "deft":
            continue
        csv = it.get("combined_training_csv") if label != "baseline" else str(cfg.path(ws, cfg.data.train_csv))
        total += _rows(Path(csv)) * int(it.get("epochs_run") or 0)
    return total


def _train_spec(ws: Path, train_csv: Path, out: Path, epochs: int | None) -> tuple[Path, dict[str, Any]]:
    from deftpipe.model import get_adapter
    from deftpipe.spec import load_spec

    cfg = load_config(ws)
    spec = load_spec(cfg.path(ws, cfg.data.spec))
    if epochs is not None:
        spec.train.num_epochs = epochs
    res = get_adapter(spec).train(spec, train_csv, cfg.path(ws, cfg.data.val_csv), out)
    return Path(res.best_checkpoint), {"val_far_pct": res.metrics.get("far_pct"), "epochs": spec.train.num_epochs,
                                       "epochs_run": res.epochs_run}


def _spec_cell(ws: Path, tmp: Path, train_csv: Path, epochs: int | None, label: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    ckpt, info = _train_spec(ws, train_csv, ws / "results" / label, epochs)
    cfg = load_config(ws)
    kpi = ab.kpi_figures(ckpt, cfg.path(ws, cfg.data.kpi_csv), tmp)
    return {"deliverable": label, "checkpoint": str(ckpt), "kpi": kpi, **info, "train_rows": _rows(train_csv),
            "holdout": ab.audit(ckpt, float(kpi["threshold"]), ws, tmp),
            "minutes": round((time.perf_counter() - t0) / 60.0, 2)}


def user_spec_cell(full: dict[str, Any], tmp: Path) -> dict[str, Any] | None:
    """(a) from the (d) run: the user's spec Phase 1 trained first, shipped by the product's rule."""
    ws, run_dir = Path(full["workspace"]), Path(full["run_dir"])
    us = json.loads((run_dir / "deft_state.json").read_text(encoding="utf-8")).get("user_spec")
    if not us or not Path(us.get("best_ckpt_path", "")).is_file() or us.get("threshold") is None:
        return None
    cfg = load_config(ws)
    kcsv = cfg.path(ws, cfg.data.kpi_csv)
    ab.known_scores(us["best_ckpt_path"], kcsv, us.get("inference_csv"))
    return {"deliverable": "user_spec (Phase 1's first trial of the full_pipeline run)",
            "checkpoint": us["best_ckpt_path"], "kpi": ab.kpi_figures(us["best_ckpt_path"], kcsv, tmp),
            "holdout": ab.audit(us["best_ckpt_path"], float(us["threshold"]), ws, tmp),
            "train_rows": _rows(cfg.path(ws, cfg.data.train_csv)), "minutes": 0.0,
            "from_full_pipeline_run": full["run_dir"], "rec_id": us.get("rec_id"), "workspace": str(ws)}


def save_scores(cell: dict[str, Any], key: str, work: Path) -> None:
    """Per-row scores of the cell's deliverable on the KPI set and the holdout (the threshold study's input)."""
    ws, ckpt = Path(cell["workspace"]), str(cell["checkpoint"])
    cfg = load_config(ws)
    arrays = {}
    for name, csv in (("kpi", cfg.path(ws, cfg.data.kpi_csv)), ("holdout", ws / "holdout" / "holdout_set.csv")):
        s = ab._SCORES.get((ckpt, str(csv)))
        if s is not None:
            df = read_dataset(csv)
            arrays[f"{name}_score"], arrays[f"{name}_label"] = s, df["label"].to_numpy(dtype=str)
    if arrays:
        out = work / "scores" / f"{key.replace('|', '_')}.npz"
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, **arrays)


def run_cell(arm: str, fold: str, seed: int, src: Path, work: Path, done: dict[str, Any]) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    with FileLock(str(work / f"{fold}.build.lock")):
        base = build_fold(src, work, fold)
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    full = done.get(f"full_pipeline|{fold}|{seed}")
    if arm in ("phase1_only", "compute_matched") and not full:
        raise RuntimeError(f"{arm} is built from the full_pipeline cell of the same fold and seed; run it first")
    if arm == "default_spec" and full and (cell := user_spec_cell(full, tmp)):
        return cell
    if arm == "phase1_only":
        ws, run_dir = Path(full["workspace"]), Path(full["run_dir"])
        return {**ab.cell_from_best(run_dir, ws, tmp, label="baseline"), "workspace": str(ws)}
    ws = work / fold / f"{arm}_s{seed}"
    resumable = arm in OVERRIDES and (ws / "pipeline.yaml").is_file() and any((ws / "results").glob("run_*"))
    if not resumable:
        _arm_workspace(base, ws, seed, OVERRIDES.get(arm, {}))
    cfg = load_config(ws)
    train_csv = cfg.path(ws, cfg.data.train_csv)
    if arm == "default_spec":
        cell = _spec_cell(ws, tmp, train_csv, None, "default_spec")
    elif arm == "compute_matched":
        rows = _rows(train_csv)
        epochs = max(1, round(full["row_epochs"] / rows))
        cell = {**_spec_cell(ws, tmp, train_csv, epochs, "compute_matched"), "row_epochs_matched": full["row_epochs"]}
    elif arm == "data_matched":
        both = ws / "train" / "train_plus_pool.csv"
        df = read_dataset(train_csv)
        pool = read_dataset(cfg.path(ws, cfg.data.pool_csv))
        write_dataset(pd.concat([df, pool], ignore_index=True), both)
        cell = _spec_cell(ws, tmp, both, None, "data_matched")
    else:
        run_dir, minutes = ab.run_pipeline_arm(ws)
        cell = {**ab.cell_from_best(run_dir, ws, tmp), "minutes": round(minutes, 2), "run_dir": str(run_dir),
                "row_epochs": row_epochs(run_dir, ws), "train_rows": _rows(train_csv)}
        bm = json.loads((run_dir / "best_model.json").read_text(encoding="utf-8"))
        cell["delivers_user_spec"] = bool(bm.get("delivers_user_spec"))
        cell["choices"] = bm.get("choices")
    cell["workspace"] = str(ws)
    return cell


def _arm_workspace(base: Path, dest: Path, seed: int, overrides: dict[str, Any]) -> Path:
    """bench_ablation's hard-linked copy with the seed set, at the product's default budgets."""
    saved = dict(ab.BUDGET)
    ab.BUDGET.clear()
    try:
        return ab.arm_workspace(base, dest, seed, overrides)
    finally:
        ab.BUDGET.update(saved)


def summarise(cells: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arm in ARMS:
        mine = sorted((v for k, v in cells.items() if k.split("|")[0] == arm and "holdout" in v),
                      key=lambda c: (c["fold"], c["seed"]))
        h = [c["holdout"] for c in mine]
        out[arm] = {
            "far_pct_mean": float(np.mean([x["far_pct"] for x in h])) if h else None,
            "recall_at_threshold_min": min((x["recall_at_threshold_pct"] for x in h), default=None),
            "far_at_threshold_mean": float(np.mean([x["far_at_threshold_pct"] for x in h])) if h else None,
            "cells_done": len(h),
            "cells": [{"fold": c["fold"], "seed": c["seed"], "far_pct": c["holdout"]["far_pct"],
                       "far_ci_low": c["holdout"]["far_ci"][0], "far_ci_high": c["holdout"]["far_ci"][1],
                       "recall_at_threshold_pct": c["holdout"]["recall_at_threshold_pct"],
                       "far_at_threshold_pct": c["holdout"]["far_at_threshold_pct"],
                       "escapes": c["holdout"]["escapes"], "hardest": c["holdout"].get("hardest", [])[:3],
                       "kpi_far_pct": c["kpi"]["far_pct"], "minutes": c.get("minutes"),
                       "deliverable": c.get("deliverable"), "code": c.get("code")} for c in mine],
        }
    return out


def both_scores(ckpt: str | Path, csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """P(defect) per row with the spec's flip TTA and from the unflipped pass alone, from one forward sweep
    (the TTA mean includes the unflipped pass, whose logits ``predict`` returns)."""
    from deftpipe.model._torch_adapter import TorchAdapter
    from deftpipe.model._train import predict, torch_threads

    with torch_threads():
        model, spec, _, data, device = TorchAdapter()._load(ckpt, csv)
        tta, logits = predict(model, data, device, precision=spec.train.precision)
    single = model.defect_score(logits.float()).numpy().astype(np.float64)
    return np.asarray(tta, dtype=np.float64), single


def both_figures(ckpt: str | Path, ws: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """bench_ablation.candidate_figures (the selection figures on validation, KPI set, both pooled and the
    holdout), with flip TTA and without it (issue 26 item 3: does TTA change a decision?)."""
    from deftpipe.metrics import compute_metrics
    from deftpipe.selection import figures

    cfg = load_config(ws)
    sets = {"kpi": cfg.path(ws, cfg.data.kpi_csv), "val": cfg.path(ws, cfg.data.val_csv),
            "holdout": ws / "holdout" / "holdout_set.csv"}
    ys = {n: is_defect(read_dataset(c)["label"]).to_numpy() for n, c in sets.items()}
    scored = {n: both_scores(ckpt, c) for n, c in sets.items()}
    out: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    for which in (0, 1):
        for n in sets:
            s = scored[n][which]
            out[which][n] = {**figures(ys[n], s), "auroc": compute_metrics(ys[n], s, n_boot=0)["auroc"]}
            if n == "holdout":
                m = compute_metrics(ys[n], s, seed=0)
                out[which][n].update(far_ci=[m["far_ci_low"], m["far_ci_high"]])
        out[which]["kpi_val"] = figures(np.concatenate([ys["kpi"], ys["val"]]),
                                        np.concatenate([scored["kpi"][which], scored["val"][which]]))
    return out


def score_candidates(work: Path) -> None:
    """Every sweep trial of every finished (d) run scored on validation, KPI set and holdout, stored as the
    cell's ``candidates`` (what ``sweep_objective.py --results value.json`` ranks; item 2 at full size).
    Resumable cell by cell; the loop's iterations are not sweep trials and are left out."""
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(OUT) + ".lock")
    with lock:
        keys = [k for k, c in json.loads(OUT.read_text(encoding="utf-8"))["cells"].items()
                if k.startswith("full_pipeline|") and "candidates" not in c]
    for key in keys:
        with lock:
            cell = json.loads(OUT.read_text(encoding="utf-8"))["cells"][key]
        ws, t0 = Path(cell["workspace"]), time.perf_counter()
        cands = [c for c in ab._candidates(Path(cell["run_dir"])) if c["kind"] != "loop"]
        for c in cands:
            if Path(c["checkpoint"]).is_file():
                c["figures"], c["figures_single_pass"] = both_figures(c["checkpoint"], ws)
        with lock:
            results = json.loads(OUT.read_text(encoding="utf-8"))
            results["cells"][key]["candidates"] = cands
            ab.atomic_write_json(OUT, results)
        ab.log(f"candidates of {key}: {len(cands)} scored in {(time.perf_counter() - t0) / 60:.1f} min")
        ab._SCORES.clear()


def tables(results: dict[str, Any]) -> str:
    """The docs/benchmarks.md tables: per arm, per (fold, seed) side by side, and per cell with the defects
    that set each figure."""
    v, cells = results["value"], results["cells"]

    def f(x: Any, nd: int = 2) -> str:
        return "—" if x is None else f"{x:.{nd}f}"

    lines = ["| arm | cells | holdout FAR@100%R mean | worst recall @ shipped thr | FAR @ shipped thr mean | "
             "minutes mean |", "|---|---|---|---|---|---|"]
    for arm, a in v.items():
        if a["cells_done"]:
            mins = [c["minutes"] for c in a["cells"] if c.get("minutes") is not None]
            lines.append(f"| {arm} | {a['cells_done']} | {f(a['far_pct_mean'])} | {f(a['recall_at_threshold_min'])} % "
                         f"| {f(a['far_at_threshold_mean'])} | {f(float(np.mean(mins)) if mins else None, 1)} |")
    done = [a for a in ARMS if v.get(a, {}).get("cells_done")]
    pairs = sorted({(c["fold"], c["seed"]) for a in done for c in v[a]["cells"]})
    lines += ["", "| fold | seed | " + " | ".join(done) + " |", "|---|---|" + "---|" * len(done)]
    for fold, seed in pairs:
        row = []
        for a in done:
            c = next((c for c in v[a]["cells"] if (c["fold"], c["seed"]) == (fold, seed)), None)
            row.append(f"{f(c['far_pct'])} [{f(c['far_ci_low'])}, {f(c['far_ci_high'])}]" if c else "—")
        lines.append(f"| {fold} | {seed} | " + " | ".join(row) + " |")
    lines += ["", "| arm | fold | seed | deliverable | defects / PASS | holdout FAR@100%R [95 % CI] | defects that set it "
              "| recall @ thr (escapes) | FAR @ thr | KPI FAR@100%R | min | code |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(cells, key=lambda k: (ARMS.index(k.split("|")[0]), k)):
        c = cells[key]
        h = c["holdout"]
        hard = ", ".join(f"{x['label']} {x['score']:.3g}" for x in h.get("hardest", [])[:3])
        esc = ", ".join(f"{n} {cls}" for cls, n in sorted(h["escapes_by_class"].items()) if n) or "none"
        lines.append(f"| {c['arm']} | {c['fold']} | {c['seed']} | {c.get('deliverable')} | {h['n_defects']} / "
                     f"{h['n_pass']} | {f(h['far_pct'])} [{f(h['far_ci'][0])}, {f(h['far_ci'][1])}] | {hard} | "
                     f"{f(h['recall_at_threshold_pct'])} % ({esc}) | {f(h['far_at_threshold_pct'])} | "
                     f"{f(c['kpi']['far_pct'])} | {f(c.get('minutes'), 1)} | {c.get('code') or 'not recorded'} |")
    return "\n".join(lines)


def _setup(cells: dict[str, Any]) -> dict[str, Any]:
    rows = [c["train_rows"] for c in cells.values() if c.get("train_rows")]
    return {"context": CONTEXT, "train_rows_min": min(rows, default=0), "folds": FOLDS,
            "smoke_rows": SMOKE_ROWS, "defaults": "pipeline.yaml as init --from-deeppcb writes it",
            "cpus": os.cpu_count(), "torch_threads": os.environ.get("DEFTPIPE_NUM_THREADS", "all")}


def holdout_far(h: dict[str, Any]) -> str:
    """A cell's holdout FAR@100%R with its bootstrap interval, as the value benches log it."""
    return f"{h['far_pct']:.2f} [{h['far_ci'][0]:.2f}, {h['far_ci'][1]:.2f}]"


def stamp(cell: dict[str, Any], **ids: Any) -> dict[str, Any]:
    """A finished cell with its identity, when it finished and the commit that ran it."""
    cell.update(**ids, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), code=ab.code_commit())
    return cell


def store_cell(out: Path, lock: FileLock, key: str, cell: dict[str, Any],
               setup: Callable[[dict[str, Any]], dict[str, Any]],
               summary: tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """Add a finished cell to a results file (under ``lock``, atomically), with the setup and summary
    recomputed from all its cells: what each value bench does when a cell ends."""
    with lock:
        results = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
        results.setdefault("cells", {})[key] = cell
        results["setup"] = setup(results["cells"])
        results[summary[0]] = summary[1](results["cells"])
        ab.atomic_write_json(out, results)


def main() -> None:
    global OUT, SMOKE_ROWS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deeppcb", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/deftpipe_value"))
    ap.add_argument("--arms", default="d,a,b,l,k,c", help="letters or arm names, in the order to run")
    ap.add_argument("--folds", default=",".join(FOLDS))
    ap.add_argument("--seeds", default="42,43")
    ap.add_argument("--smoke", action="store_true", help="a few hundred rows per split, results to value_smoke.json")
    ap.add_argument("--score-candidates", action="store_true",
                    help="score every sweep trial of the finished full_pipeline cells (item 2), then stop")
    ap.add_argument("--tables", action="store_true", help="print the markdown tables of value.json, then stop")
    args = ap.parse_args()
    if args.tables:
        return print(tables(json.loads(OUT.read_text(encoding="utf-8"))))
    if args.score_candidates:
        return score_candidates(args.work)
    if args.smoke:
        OUT = OUT.with_name("value_smoke.json")
        SMOKE_ROWS = {"train": 300, "val": 200, "pool": 200, "kpi_pass": 200, "holdout_pass": 200}
        ab.BUDGET.clear()
    arms = [ALIASES.get(a, a) for a in args.arms.split(",")]
    if unknown := [a for a in arms if a not in ARMS]:
        raise SystemExit(f"not an arm: {', '.join(unknown)} (arms: {', '.join(ARMS)})")
    folds, seeds = args.folds.split(","), [int(s) for s in args.seeds.split(",")]
    lock = FileLock(str(OUT) + ".lock")
    # whole comparisons first: every (seed, fold) with the controls, then the loop-only arm everywhere
    plan = [(f, s, a) for s in seeds for f in folds for a in arms if a != "deft_only"]
    plan += [(f, s, "deft_only") for s in seeds for f in folds if "deft_only" in arms]
    for fold, seed, arm in plan:
        key = f"{arm}|{fold}|{seed}"
        with lock:
            results = json.loads(OUT.read_text(encoding="utf-8")) if OUT.is_file() else {}
        if key in results.get("cells", {}):
            continue
        claim = args.work / "claims" / key.replace("|", "_")
        if not ab.take_claim(claim):
            continue
        ab.log(f"cell {key}: start")
        try:
            cell = run_cell(arm, fold, seed, args.deeppcb, args.work, results.get("cells", {}))
        except Exception:  # noqa: BLE001 - one failed cell must not stop the others; retried next time
            ab.log(f"cell {key}: FAILED\n{traceback.format_exc()}")
            claim.unlink(missing_ok=True)
            continue
        stamp(cell, arm=arm, fold=fold, seed=seed)
        try:
            save_scores(cell, key, args.work)
        except Exception:  # noqa: BLE001 - the scores are a by-product; the cell stands without them
            ab.log(f"cell {key}: scores not saved\n{traceback.format_exc()}")
        store_cell(OUT, lock, key, cell, _setup, ("value", summarise))
        h = cell["holdout"]
        ab.log(f"cell {key}: holdout FAR@100%R {holdout_far(h)}, "
               f"recall@thr {h['recall_at_threshold_pct']:.2f} % ({h['escapes']} escapes), "
               f"FAR@thr {h['far_at_threshold_pct']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
