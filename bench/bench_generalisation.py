"""Leave-board-groups-out folds on DeepPCB: does the model catch every defect on unseen boards?

One workspace from ``deftpipe init --from-deeppcb`` (any split: its CSVs are pooled and split again
by board group here), one fold = (holdout groups, validation group); every other group trains.
A cell = (config, fold, seed): train the workspace's spec (with ``--set`` overrides) on the fold's
training rows (``--train-rows``: a fixed, class-stratified subsample, the same rows for every config
and seed), checkpoint chosen on the validation group, then score the holdout groups:
FAR@100%R with its bootstrap interval, AUROC, FAR@99%R, recall and escapes at the shipped threshold
(the validation set's 100 %-recall threshold), the same per board group, the lowest-scored defects
(row, label, score, local shift of the pair), and the same for the mean score over the four flips (test-time augmentation, ``tta``).

Usage:
    python bench/bench_generalisation.py --ws WS --config NAME --fold F [--fold F ...] [--seed 42]
        [--train-rows 6000] [--epochs 2] [--set model.width=24 ...]
    python bench/bench_generalisation.py thumbs --cell KEY --ws WS --out PNG
    python bench/bench_generalisation.py rethreshold --ws WS [--far-budget 10]
Each finished cell is written to bench/results/generalisation.json at once (a rerun skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from filelock import FileLock

from deftpipe._fs import atomic_write_text
from deftpipe.data import read_dataset, write_dataset
from deftpipe.data._workspace import SPLIT_FILES
from deftpipe.metrics import compute_metrics, shipped_threshold
from deftpipe.model._checkpoint import load_model
from deftpipe.model._data import class_names, load_pair_set, to_float
from deftpipe.model._precision import autocast, resolve_precision
from deftpipe.model._torch_adapter import TorchAdapter
from deftpipe.model._train import EVAL_BATCH, torch_threads
from deftpipe.spec import load_spec

RESULTS = Path(__file__).parent / "results" / "generalisation.json"
FOLDS = {  # name -> (holdout groups, validation group); the rest trains
    "f1": (("12100", "44000"), "12300"),
    "f2": (("13000", "77000"), "12300"),
    "f3": (("00041", "12300"), "44000"),
    "f4": (("20085", "12000"), "12300"),
}


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def save_cell(key: str, value: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(RESULTS) + ".lock"):  # two bench processes may share the file
        data = load_results()
        data[key] = value
        atomic_write_text(RESULTS, json.dumps(data, indent=1) + "\n")


def fold_csvs(ws: Path, fold: str, train_rows: int) -> tuple[Path, Path, Path]:
    """The fold's train/val/holdout CSVs under ``ws/folds/<fold>_<rows>/`` (made once)."""
    out = ws / "folds" / f"{fold}_{train_rows}"
    paths = out / "train.csv", out / "val.csv", out / "holdout.csv"
    if all(p.is_file() for p in paths):
        return paths
    rows = pd.concat([read_dataset(ws / rel) for rel in SPLIT_FILES.values() if (ws / rel).is_file()],
                     ignore_index=True)
    holdout, val = FOLDS[fold]
    board = rows["boardname"]
    train = rows[~board.isin([*holdout, val])]
    if train_rows and len(train) > train_rows:  # stratified, same rows for every config and seed
        rng = np.random.default_rng(0)
        keep = []
        for _, part in train.groupby(train["label"] == "PASS"):
            n = round(train_rows * len(part) / len(train))
            keep.append(part.iloc[np.sort(rng.choice(len(part), n, replace=False))])
        train = pd.concat(keep).sort_index()
    out.mkdir(parents=True, exist_ok=True)
    for df, p in zip((train, rows[board == val], rows[board.isin(holdout)]), paths, strict=True):
        write_dataset(df.reset_index(drop=True), p)
    return paths


def transplant(rng, test: list[np.ndarray], label: str, *, dark_copper: bool | None = None,
               contrast: tuple[float, float] = (1.0, 1.0)) -> list[np.ndarray] | None:
    """Test images (one per light) of a real PASS pair with one ``label`` defect drawn on them.

    Unlike :func:`synthesize` (a test image made from the golden one, nuisances simulated), the
    pair keeps everything the camera and the board put between its template and its test image —
    misregistration that varies across the image, line widths that differ by a pixel, noise — so
    the defect sits among the real outline slivers of that pair: the situation of the escapes on
    unseen board groups (docs/model.md). The defect is drawn on the test image's own copper mask,
    so it follows the test image's traces. None when it does not fit (try another pair).
    """
    from deftpipe.deft._sdg_draw import _DEFECTS, copper_mask, repaint

    if label not in _DEFECTS:
        return None
    m = copper_mask(test[0], dark=dark_copper)
    bare = m.mean() <= 0.05
    if m.mean() >= 0.95 or (bare and label != "short") or (bare and dark_copper is None):
        return None
    new = _DEFECTS[label](rng, m, max(1.0, test[0].shape[0] / 32))
    if new is None or (new == m).all():
        return None
    a = float(rng.uniform(*contrast))
    out = []
    for t0 in test:
        t = repaint(t0, m, new, a, dark_copper=dark_copper, bare=bare)
        out.append(np.clip(np.rint(t), 0, 255).astype(np.uint8))
    return out


def sdg_base_csv(ws: Path, train_csv: Path, n: int, seed: int = 0) -> Path:
    """The fold's training CSV plus ``n`` defect rows drawn on real PASS pairs of its own training
    groups (:func:`deftpipe.deft._sdg_draw.transplant`; classes in the training set's proportions).
    Made once per fold and ``n``; the images go under ``WS/images/sdg_base/<fold>_<n>/``."""
    from deftpipe.data import is_defect, resolve_layout
    from deftpipe.deft._sdg import _read_gray, _save
    from deftpipe.deft._sdg_draw import copper_is_dark

    out_csv = train_csv.with_name(f"train_sdg{n}.csv")
    if out_csv.is_file():
        return out_csv
    train = read_dataset(train_csv)
    layout = resolve_layout(train_csv, None)
    rng = np.random.default_rng([seed, n])
    passes = train[~is_defect(train["label"])]
    classes = train.loc[is_defect(train["label"]), "label"].value_counts(normalize=True)
    tag = f"{train_csv.parent.name}_{n}"
    folder = layout.images_dir / "sdg_base" / tag
    pairs: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def pair(i: int):
        if i not in pairs:
            r = passes.iloc[i]
            g = [_read_gray(f) for f in layout.inside_file_strs(r["golden_path"], r["object_name"])]
            t = [_read_gray(f) for f in layout.inside_file_strs(r["input_path"], r["object_name"])]
            pairs[i] = (g, t)
        return pairs[i]

    dark = copper_is_dark([pair(int(i))[0][0] for i in rng.choice(len(passes), min(200, len(passes)), replace=False)])
    rows = []
    for k, label in enumerate(rng.choice(classes.index.to_numpy(), n, p=classes.to_numpy())):
        for _ in range(12):
            i = int(rng.integers(len(passes)))
            golden, test = pair(i)
            new = transplant(rng, test, str(label), dark_copper=dark)
            if new is not None:
                break
        else:
            continue
        name = f"sdgb_{k:05d}"
        for g, te in zip(golden, new, strict=True):
            _save(g, folder / "golden" / f"{name}{layout.image_ext}")
            _save(te, folder / "test" / f"{name}{layout.image_ext}")
        rows.append({"input_path": f"sdg_base/{tag}/test", "golden_path": f"sdg_base/{tag}/golden", "label": label,
                     "object_name": name, "boardname": "sdg_base", "defect_box": ""})
    aug = pd.concat([train, pd.DataFrame(rows)], ignore_index=True)
    write_dataset(aug, out_csv)
    print(f"{out_csv}: {len(rows)} transplanted defect rows added to {len(train)}", flush=True)
    return out_csv


@torch.no_grad()
def holdout_scores(ckpt: Path, csv: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, float | None]:
    """Rows, P(defect), the mean P(defect) over the four flips, and the shipped threshold."""
    with torch_threads():
        model, spec, saved = load_model(ckpt)
        data = load_pair_set(csv, spec, class_names(spec))
        model.eval()
        flips = [(), (-1,), (-2,), (-1, -2)]
        out = []
        cpu = torch.device("cpu")
        with torch.inference_mode(), autocast(resolve_precision(spec.train.precision, cpu), cpu):
            for i in range(0, len(data), EVAL_BATCH):
                x = to_float(data.images[i:i + EVAL_BATCH])
                out.append(torch.stack([model.defect_score(model(x.flip(f) if f else x)) for f in flips]))
    s = torch.cat(out, dim=1).numpy().astype(np.float64)
    return data.df, s[0], s.mean(0), saved["metrics"].get("threshold")


def summarise(df: pd.DataFrame, scores: np.ndarray, threshold: float | None) -> dict:
    defect = (df["label"] != "PASS").to_numpy()
    m = compute_metrics(defect, scores, labels=df["label"].tolist(), threshold=threshold)
    res = {k: m[k] for k in ("far_pct", "far_ci_low", "far_ci_high", "far_pct_at_99", "auroc", "threshold",
                             "n_defects", "n_pass", "recall", "far_pct_at_threshold")}
    res["shipped_threshold"] = threshold
    res["escapes_at_shipped"] = int((scores[defect] < threshold).sum()) if threshold is not None else None
    order = np.argsort(np.where(defect, scores, np.inf))[:8]
    res["lowest_defects"] = [
        {"object": df["object_name"].iat[i], "board": df["boardname"].iat[i], "label": df["label"].iat[i],
         "score": round(float(scores[i]), 5), "defect_box": df["defect_box"].iat[i] if "defect_box" in df else ""}
        for i in order]
    return res


def run_cell(args, fold: str) -> None:
    key = f"{args.config}/{fold}/seed{args.seed}/rows{args.train_rows}/ep{args.epochs}"
    if key in load_results():
        print(f"{key}: done already", flush=True)
        return
    ws = Path(args.ws).resolve()
    train_csv, val_csv, hold_csv = fold_csvs(ws, fold, args.train_rows)
    if args.sdg_base:
        train_csv = sdg_base_csv(ws, train_csv, args.sdg_base)
    spec = load_spec(ws / "specs" / "baseline_spec.yaml")
    spec.train.seed = args.seed
    spec.train.num_epochs = args.epochs
    for kv in args.set:
        path, value = kv.split("=", 1)
        obj = spec
        *parents, leaf = path.split(".")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, leaf, type(getattr(obj, leaf))(value) if not isinstance(getattr(obj, leaf), bool)
                else value.lower() in ("1", "true", "yes"))
    out = ws / "runs" / key.replace("/", "_")
    t0 = time.perf_counter()
    result = TorchAdapter().train(spec, train_csv, val_csv, out)
    train_s = time.perf_counter() - t0
    cell = {"ws": ws.name, "fold": fold, "holdout": list(FOLDS[fold][0]), "val": FOLDS[fold][1],
            "seed": args.seed, "epochs": args.epochs, "train_rows": len(read_dataset(train_csv)),
            "set": args.set, "sdg_base_rows": args.sdg_base, "train_min": round(train_s / 60, 2),
            "min_per_epoch": round(train_s / 60 / args.epochs, 2), "checkpoint": str(result.best_checkpoint),
            "load_avg": round(float(open("/proc/loadavg").read().split()[0]), 2)}
    df, plain, tta_mean, thr = holdout_scores(result.best_checkpoint, hold_csv)
    vdf, _, vtta, _ = holdout_scores(result.best_checkpoint, val_csv)  # TTA ships its own threshold
    thr_tta = float(vtta[(vdf["label"] != "PASS").to_numpy()].min())
    for tta, scores in ((False, plain), (True, tta_mean)):
        thr = thr_tta if tta else thr
        res = summarise(df, scores, thr)
        res["per_board"] = {b: summarise(df[df["boardname"] == b], scores[(df["boardname"] == b).to_numpy()], thr)
                            for b in FOLDS[fold][0]}
        for r in res["per_board"].values():
            r.pop("lowest_defects")
        cell["tta" if tta else "plain"] = res
        np.save(out / ("holdout_scores_tta.npy" if tta else "holdout_scores.npy"), scores)
    save_cell(key, cell)
    p, t = cell["plain"], cell["tta"]
    print(f"{key}: FAR {p['far_pct']:.2f} [{p['far_ci_low']:.1f},{p['far_ci_high']:.1f}] AUROC {p['auroc']:.5f} "
          f"esc {p['escapes_at_shipped']} | tta FAR {t['far_pct']:.2f} AUROC {t['auroc']:.5f} esc "
          f"{t['escapes_at_shipped']} | {cell['min_per_epoch']} min/epoch", flush=True)


def thumbs(argv: list[str]) -> None:
    """golden | test (defect box drawn) | |test - golden| of a cell's lowest-scored holdout defects,
    with the label, score, shipped threshold and the crop's local shift (dy, dx; the defect box masked)."""
    from PIL import Image, ImageDraw

    from deftpipe.data import resolve_layout
    from deftpipe.data._register import local_shift

    ap = argparse.ArgumentParser()
    ap.add_argument("--cell", required=True)
    ap.add_argument("--ws", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--scores", choices=["plain", "tta"], default="tta")
    a = ap.parse_args(argv)
    cell = load_results()[a.cell]
    ws = Path(a.ws)
    csv = ws / "folds" / f"{cell['fold']}_{a.cell.split('/rows')[1].split('/')[0]}" / "holdout.csv"
    df, layout = read_dataset(csv), resolve_layout(csv, None)
    by_name = {r["object_name"]: r for r in df.to_dict("records")}
    # the product's threshold (budget 10 %, reserve 0.5) where `rethreshold` stored it, else the bare one
    product = cell[a.scores].get("far_budget_10_reserve_0.5") or {}
    thr = product.get("threshold", cell[a.scores].get("shipped_threshold"))
    tiles = []
    for h in cell[a.scores]["lowest_defects"][:a.n]:
        row = by_name[h["object"]]
        test_files, golden_files = layout.row_files(row)
        g = np.asarray(Image.open(golden_files[0]).convert("L"), dtype=np.int16)
        t = np.asarray(Image.open(test_files[0]).convert("L"), dtype=np.int16)
        masked = t.copy()  # the shift of the pair, not of the defect: the box shows the golden
        if row.get("defect_box"):
            x1, y1, x2, y2 = (int(v) for v in row["defect_box"].split())
            masked[y1:y2, x1:x2] = g[y1:y2, x1:x2]
        dy, dx, _, _ = local_shift(g.astype(np.uint8), masked.astype(np.uint8), min(12, g.shape[0] // 2 - 8))
        sep = np.full((g.shape[0], 3), 128)
        strip = np.concatenate([g, sep, t, sep, np.abs(t - g)], axis=1).astype(np.uint8)
        im = Image.fromarray(strip).convert("RGB").resize((strip.shape[1] * a.scale, strip.shape[0] * a.scale),
                                                          Image.NEAREST)
        if row.get("defect_box"):
            x1, y1, x2, y2 = (int(v) * a.scale for v in row["defect_box"].split())
            off = (g.shape[1] + 3) * a.scale
            ImageDraw.Draw(im).rectangle((x1 + off, y1, x2 + off - 1, y2 - 1), outline=(255, 0, 0))
        canvas = Image.new("RGB", (max(im.width, 420), im.height + 14), (255, 255, 255))
        canvas.paste(im, (0, 14))
        mark = " ESCAPE" if thr is not None and h["score"] < thr else ""
        ImageDraw.Draw(canvas).text((2, 1), f"{h['object']} ({h['board']}) {h['label']} {a.scores} score "
                                            f"{h['score']:.3f}{mark} shift {dy:+d},{dx:+d}", fill=(0, 0, 0))
        tiles.append(canvas)
    sheet = Image.new("RGB", (max(t.width for t in tiles), sum(t.height + 4 for t in tiles)), (255, 255, 255))
    y = 0
    for t in tiles:
        sheet.paste(t, (0, y))
        y += t.height + 4
    sheet.save(a.out)
    print(f"wrote {a.out} (shipped threshold {thr})")


def budget_figures(ws: Path, key: str, far_budget: float, far_reserve: float = 0.0) -> dict:
    """The cell's holdout figures at the threshold the product would ship with ``kpi.threshold_far_budget``
    and ``kpi.threshold_far_reserve`` (:func:`deftpipe.metrics.shipped_threshold` on the validation group's
    scores, which play the KPI set's role here): the stored holdout scores, the validation group scored
    again once (kept beside the checkpoint as ``valgroup_scores.npz``)."""
    cell = load_results()[key]
    out = Path(cell["checkpoint"]).parent
    _, val_csv, hold_csv = fold_csvs(ws, cell["fold"], int(key.split("/rows")[1].split("/")[0]))
    cache = out / "valgroup_scores.npz"
    if cache.is_file():
        z = np.load(cache)
        vy, vplain, vtta = z["y"], z["plain"], z["tta"]
    else:
        vdf, vplain, vtta, _ = holdout_scores(Path(cell["checkpoint"]), val_csv)
        vy = (vdf["label"] != "PASS").to_numpy()
        np.savez(cache, y=vy, plain=vplain, tta=vtta)
    hy = (read_dataset(hold_csv)["label"] != "PASS").to_numpy()
    res = {}
    for name, vs, hfile in (("plain", vplain, "holdout_scores.npy"), ("tta", vtta, "holdout_scores_tta.npy")):
        hs = np.load(out / hfile)
        t = shipped_threshold(float(vs[vy].min()), pass_scores=vs[~vy], far_budget_pct=far_budget,
                              far_reserve=far_reserve)
        res[name] = {"far_budget": far_budget, "far_reserve": far_reserve, "threshold": t,
                     "val_far_pct_at_100r": 100 * float((vs[~vy] >= vs[vy].min()).mean()), "val_far_pct_at_threshold": 100 * float((vs[~vy] >= t).mean()),
                     "recall_pct": 100 * float((hs[hy] >= t).mean()), "escapes": int((hs[hy] < t).sum()),
                     "far_pct_at_threshold": 100 * float((hs[~hy] >= t).mean())}
    return res


def rethreshold(argv: list[str]) -> None:
    """Add ``far_budget`` figures to every stored cell of one workspace (resumable)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--ws", required=True)
    ap.add_argument("--far-budget", type=float, default=10.0)
    ap.add_argument("--far-reserve", type=float, default=0.0)
    a = ap.parse_args(argv)
    ws = Path(a.ws).resolve()
    name = f"far_budget_{a.far_budget:g}" + (f"_reserve_{a.far_reserve:g}" if a.far_reserve else "")
    for key, cell in load_results().items():
        if cell["ws"] != ws.name or name in cell.get("tta", {}):
            continue
        if not (Path(cell["checkpoint"]).parent / "holdout_scores_tta.npy").is_file():
            continue
        res = budget_figures(ws, key, a.far_budget, a.far_reserve)
        cell = load_results()[key]
        for scores_name, r in res.items():
            cell[scores_name][name] = r
        save_cell(key, cell)
        t = res["tta"]
        print(f"{key}: budget {a.far_budget:g} % -> tta recall {t['recall_pct']:.2f} % ({t['escapes']} escapes), "
              f"FAR at it {t['far_pct_at_threshold']:.2f} %", flush=True)


def main(argv: list[str]) -> None:
    if argv and argv[0] == "thumbs":
        thumbs(argv[1:])
        return
    if argv and argv[0] == "rethreshold":
        rethreshold(argv[1:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--ws", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--fold", action="append", choices=sorted(FOLDS), required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--train-rows", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--sdg-base", type=int, default=0,
                    help="add this many defect rows drawn on real PASS pairs of the training groups")
    args = ap.parse_args(argv)
    for fold in args.fold:
        run_cell(args, fold)


if __name__ == "__main__":
    main(sys.argv[1:])
