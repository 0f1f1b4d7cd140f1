"""Model benchmark: throughput vs the FLOP-bound limit, data-loading share, peak RSS, DeepPCB quality.

Usage:
    python bench/bench_model.py speed [--threads 2]                  # synthetic 64x64, default spec
    python bench/bench_model.py cost [--threads 2] [--train-rows 28000] [--val-rows 3000]  # DeepPCB variants
    python bench/bench_model.py quality --ws DEEPPCB_WS [--fusion F] [--epochs N] [--shift PX] [--tag T]
    python bench/bench_model.py thumbs --ws DEEPPCB_WS --key deeppcb_T --split kpi --out PNG

Results are merged into bench/results/model.json (one key per measurement).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deftpipe.data import make_synthetic_workspace
from deftpipe.model._data import augment, class_names, load_pair_set, to_float
from deftpipe.model._network import NetConfig, SiameseChangeNet
from deftpipe.model._torch_adapter import TorchAdapter
from deftpipe.model._train import EVAL_BATCH, loss_fn
from deftpipe.spec import Spec, load_spec

RESULTS = Path(__file__).parent / "results" / "model.json"


def merge_results(key: str, value: dict) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    data[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def gemm_gflops(n: int = 1024, reps: int = 20, dtype: torch.dtype | None = None) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def flops_per_sample(model: SiameseChangeNet, size: int) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs per sample, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(8, 2, model.cfg.num_input, size, size)
    with FlopCounterMode(display=False) as fc:
        model(x)
    fwd = fc.get_total_flops() / 8
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    return fwd, fc.get_total_flops() / 8


def speed(threads: int) -> None:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_synthetic_workspace(Path(tmp) / "ws", size="small")
        spec = load_spec(ws / "specs" / "baseline_spec.yaml")
        # the default size (Spec defaults: width 16, depth 4, batch 32), not the tiny demo spec
        default = Spec()
        spec.model = default.model.model_copy(update={"input_size": spec.model.input_size})
        spec.train.batch_size = default.train.batch_size
        classes = class_names(spec)
        data = load_pair_set(ws / "train" / "base" / "training_set.csv", spec, classes)
        model = SiameseChangeNet(NetConfig.from_spec(spec))
        fwd, fwd_bwd = flops_per_sample(model, spec.model.input_size)
        model = model.to(memory_format=torch.channels_last)  # as the training loop does
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        bs, steps = spec.train.batch_size, 25
        t_data = t_step = 0.0
        n = 0
        for i in range(steps + 5):
            t0 = time.perf_counter()
            idx = torch.randint(0, len(data), (bs,), generator=gen)
            x = augment(to_float(data.images[idx]), spec.train.augment, gen)
            y = data.targets[idx]
            t1 = time.perf_counter()
            loss = loss_fn(model(x), y, None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if i >= 5:  # warm-up steps excluded
                t_data += t1 - t0
                t_step += t2 - t1
                n += bs
        train_sps = n / (t_data + t_step)
        model.eval()
        xs = to_float(data.images[:1024])
        with torch.no_grad():
            model(xs[:EVAL_BATCH])
            t0 = time.perf_counter()
            for i in range(0, len(xs), EVAL_BATCH):
                model(xs[i:i + EVAL_BATCH])
            infer_sps = len(xs) / (time.perf_counter() - t0)
        gemm = gemm_gflops()
        res = {
            "threads": threads, "input_size": spec.model.input_size, "batch_size": bs,
            "fusion": spec.model.fusion, "width": spec.model.width, "depth": spec.model.depth,
            "flops_forward_per_sample": fwd, "flops_train_per_sample": fwd_bwd,
            "train_samples_per_s": round(train_sps, 1), "infer_samples_per_s": round(infer_sps, 1),
            "gemm_gflops": round(gemm, 1),
            "train_pct_of_flop_bound": round(100 * fwd_bwd * train_sps / (gemm * 1e9), 1),
            "infer_pct_of_flop_bound": round(100 * fwd * infer_sps / (gemm * 1e9), 1),
            "data_share_of_step_pct": round(100 * t_data / (t_data + t_step), 1),
            "torch": torch.__version__,
        }
    print(json.dumps(res, indent=2))
    merge_results(f"speed_{threads}_threads", res)


COST_VARIANTS = {  # name -> (model.context, model.fusion, model.flip_tta)
    "context1_plain": (1, "multiscale", False),  # the default when issue 18 was filed
    "context1_tta": (1, "multiscale", True),
    "context2_tta": (2, "multiscale", True),  # the DeepPCB default since the eleventh session
    "context2_conv_tta": (2, "multiscale_conv", True),
}


def cost(threads: int, train_rows: int, val_rows: int, window: int = 64, repeats: int = 3) -> None:
    """Minutes per epoch of each DeepPCB model variant at a fold's size: a training step (augment,
    forward, backward, AdamW) and a validation pass (x4 with flip TTA) timed on random pairs of the
    stored crop size (speed does not depend on the pixels), then scaled to the rows. The variants
    are timed in turn, ``repeats`` rounds; each figure is the median over the rounds."""
    torch.set_num_threads(threads)
    rounds = [_cost_round(train_rows, val_rows, window) for _ in range(repeats)]
    out = {"threads": threads, "train_rows": train_rows, "val_rows": val_rows, "window": window,
           "repeats": repeats, "torch": torch.__version__, "variants": {}}
    for name in COST_VARIANTS:
        runs = [r[name] for r in rounds]
        med = {k: float(np.median([r[k] for r in runs])) if isinstance(runs[0][k], float) else runs[0][k]
               for k in runs[0]}
        med["min_per_epoch_rounds"] = [r["min_per_epoch"] for r in runs]
        out["variants"][name] = med
    base = out["variants"]["context1_plain"]["min_per_epoch"]
    for v in out["variants"].values():
        v["x_context1_plain"] = round(v["min_per_epoch"] / base, 2)
    print(json.dumps(out, indent=2))
    merge_results(f"cost_{threads}_threads", out)


def _cost_round(train_rows: int, val_rows: int, window: int) -> dict:
    out = {}
    for name, (context, fusion, tta) in COST_VARIANTS.items():
        spec = Spec()
        spec.model.input_size, spec.model.context, spec.model.fusion, spec.model.flip_tta = (
            window * context, context, fusion, tta)
        size, bs = spec.model.input_size, spec.train.batch_size
        model = SiameseChangeNet(NetConfig.from_spec(spec))
        fwd, fwd_bwd = flops_per_sample(model, size)
        model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (256, 2, 1, size, size), dtype=torch.uint8, generator=gen)
        targets = torch.randint(0, 2, (256,), generator=gen).float()
        t_train, n = 0.0, 0
        for i in range(25):
            t0 = time.perf_counter()
            idx = torch.randint(0, len(images), (bs,), generator=gen)
            loss = loss_fn(model(augment(to_float(images[idx]), spec.train.augment, gen)), targets[idx], None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 5:
                t_train += time.perf_counter() - t0
                n += bs
        model.eval()
        xs = to_float(images)
        with torch.no_grad():
            model(xs[:EVAL_BATCH])
            t0 = time.perf_counter()
            for i in range(0, len(xs), EVAL_BATCH):
                model(xs[i:i + EVAL_BATCH])
            infer_s = (time.perf_counter() - t0) / len(xs) * (4 if tta else 1)
        train_min = train_rows * t_train / n / 60
        val_min = val_rows * infer_s / 60
        out[name] = {
            "context": context, "fusion": fusion, "flip_tta": tta, "flops_forward_per_pair": float(fwd),
            "flops_train_per_pair": float(fwd_bwd), "train_pairs_per_s": round(n / t_train, 1),
            "scored_pairs_per_s": round(1 / infer_s, 1), "train_min_per_epoch": round(train_min, 2),
            "validation_min_per_epoch": round(val_min, 2), "min_per_epoch": round(train_min + val_min, 2)}
    return out


class PrintProgress:
    """Progress lines every 50 batches (for logs of background runs)."""

    def start(self, epochs, steps):
        self.steps, self.t0 = steps, time.perf_counter()

    def batch(self, epoch, i, loss):
        if i % 50 == 0:
            rate = i / (time.perf_counter() - self.t0)
            print(f"  epoch {epoch} batch {i}/{self.steps} loss {loss:.4f} ({rate:.2f} batches/s)", flush=True)

    def epoch_end(self, epoch, metrics):
        self.t0 = time.perf_counter()

    def close(self):
        pass


def subset_csv(csv: Path, n: int, seed: int) -> Path:
    """A random ``n``-row subset of ``csv`` (same PASS/defect ratio), for quick comparisons."""
    from deftpipe.data import read_dataset, write_dataset

    df = read_dataset(csv)
    sub = df.sample(n=min(n, len(df)), random_state=seed)
    return write_dataset(sub, Path(tempfile.mkdtemp(prefix="bench_subset_")) / csv.name)


def quality(ws: Path, fusion: str | None, epochs: int, shift: int | None, tag: str, threads: int,
            subset: int | None = None, seed: int | None = None) -> None:
    spec = load_spec(ws / "specs" / "baseline_spec.yaml")
    if fusion:
        spec.model.fusion = fusion
    if shift is not None:
        spec.train.augment.shift_px = shift
    spec.train.num_epochs = epochs
    spec.train.num_threads = threads
    if seed is not None:
        spec.train.seed = seed
    spec.train.keep_checkpoints = epochs
    out = Path(tempfile.mkdtemp(prefix=f"bench_{tag}_"))
    t0 = time.perf_counter()
    adapter = TorchAdapter(progress=PrintProgress())
    train_csv = ws / "train" / "base" / "training_set.csv"
    if subset:
        train_csv = subset_csv(train_csv, subset, seed=0)
    result = adapter.train(spec, train_csv,
                           ws / "train" / "base" / "validation_set.csv", out,
                           epoch_callback=lambda e, m: print(
                               f"epoch {e}: val far {m['far_pct']:.2f} auroc {m['auroc']:.5f} "
                               f"far99 {m['far_pct_at_99']:.2f} {m['epoch_seconds']:.0f}s", flush=True) and False)
    minutes = (time.perf_counter() - t0) / 60
    kpi = adapter.evaluate(result.best_checkpoint, ws / "kpi" / "testing_set.csv")
    keep = ("far_pct", "far_ci_low", "far_ci_high", "far_pct_at_99", "auroc", "n_defects", "n_pass",
            "threshold", "hardest_defects", "val_loss")
    res = {
        "train_rows": subset or "all", "seed": spec.train.seed, "fusion": spec.model.fusion, "shift_px": spec.train.augment.shift_px, "epochs": epochs,
        "threads": threads, "train_minutes": round(minutes, 2), "best_epoch": result.best_epoch,
        "val_history": [{k: h[k] for k in ("epoch", "far_pct", "far_pct_at_99", "auroc", "val_loss")}
                        for h in result.history],
        "val_best": {k: result.metrics[k] for k in keep},
        "kpi": {k: kpi[k] for k in keep},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "checkpoint": str(result.best_checkpoint),
    }
    print(json.dumps(res, indent=2))
    merge_results(f"deeppcb_{tag}", res)


def thumbnails(ws: Path, key: str, split: str, out: Path, n: int = 5, scale: int = 3) -> None:
    """golden | test | |test - golden| of the ``n`` defects that set the threshold in result ``key``."""
    import numpy as np
    from PIL import Image, ImageDraw

    from deftpipe.data import read_dataset, resolve_layout

    csv = ws / ("kpi/testing_set.csv" if split == "kpi" else "train/base/validation_set.csv")
    res = json.loads(RESULTS.read_text())[key]["kpi" if split == "kpi" else "val_best"]
    df, layout = read_dataset(csv), resolve_layout(csv, None)
    tiles = []
    for h in res["hardest_defects"][:n]:
        row = df.iloc[h["row"]].to_dict()
        test_files, golden_files = layout.row_files(row)
        g = np.asarray(Image.open(golden_files[0]).convert("L"), dtype=np.int16)
        t = np.asarray(Image.open(test_files[0]).convert("L"), dtype=np.int16)
        strip = np.concatenate([g, np.full((g.shape[0], 2), 128), t, np.full((g.shape[0], 2), 128),
                                np.abs(t - g)], axis=1).astype(np.uint8)
        im = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
        canvas = Image.new("L", (im.width, im.height + 14), 255)
        canvas.paste(im, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), f"{row['object_name']} {h['label']} box {row.get('defect_box', '?')} "
                                            f"score {h['score']:.3f}", fill=0)
        tiles.append(canvas)
    sheet = Image.new("L", (max(t.width for t in tiles), sum(t.height + 4 for t in tiles)), 255)
    y = 0
    for t in tiles:
        sheet.paste(t, (0, y))
        y += t.height + 4
    sheet.save(out)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["speed", "cost", "quality", "thumbs"])
    ap.add_argument("--key", help="thumbs: result key in model.json (e.g. deeppcb_full_8ep)")
    ap.add_argument("--split", default="kpi", choices=["kpi", "val"], help="thumbs: which set's hardest defects")
    ap.add_argument("--out", type=Path, help="thumbs: PNG to write")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ws", type=Path)
    ap.add_argument("--fusion")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--shift", type=int)
    ap.add_argument("--tag", default="default")
    ap.add_argument("--subset", type=int, help="train on a random subset of this many rows")
    ap.add_argument("--seed", type=int, help="training seed (default: the spec's)")
    ap.add_argument("--train-rows", type=int, default=28000, help="cost: training rows of an epoch")
    ap.add_argument("--val-rows", type=int, default=3000, help="cost: validation rows scored per epoch")
    a = ap.parse_args()
    if a.mode == "speed":
        speed(a.threads)
    elif a.mode == "cost":
        cost(a.threads, a.train_rows, a.val_rows)
    elif a.mode == "thumbs":
        thumbnails(a.ws, a.key, a.split, a.out)
    else:
        if not a.ws:
            sys.exit("--ws DEEPPCB_WS is required (build one with `deftpipe init --from-deeppcb`)")
        quality(a.ws, a.fusion, a.epochs, a.shift, a.tag, a.threads, a.subset, a.seed)


if __name__ == "__main__":
    main()
