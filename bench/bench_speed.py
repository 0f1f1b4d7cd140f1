"""Where a training step's time goes, and what each speed lever buys: before/after on the same box.

The DeepPCB default model (context 2, 128 px stored crops, width 16, depth 4, multiscale, flip TTA,
batch 32) is timed by two implementations side by side: ``before`` (the source tree given by
``--before-src``, e.g. a git worktree of the commit before the speed work) and ``after`` (this
tree), each in its own subprocess (``PYTHONPATH``), so one process never holds both.

Cells (each stored in ``bench/results/speed.json`` as soon as it finishes; a rerun skips it):

* ``step/<impl>/<variant>``: ms per training step (augment + forward + backward + AdamW step, the
  training loop's own functions), the data share of it, pairs/s of scoring (plain and with the four
  flips), FLOPs per pair (torch's FlopCounterMode), the effective GFLOP/s and its share of this
  box's fp32 GEMM peak (measured in the same cell). Variants: ``fp32`` (the default of today),
  ``bf16`` (``train.precision``), ``pool_first`` (``model.pool_first``), ``pool_first_bf16``.
* ``profile/<impl>/<variant>``: the top operators of ten training steps (PyTorch profiler, self CPU).
* ``epoch/<impl>/<variant>``: one real epoch of ``train_model`` on a DeepPCB fold's full training
  set (``--ws``: a ``deftpipe init --from-deeppcb`` workspace; the folds of
  bench_generalisation.py): decode, training and validation-scoring seconds.
* ``fused_ab/<impl>/pool_first_bf16``: the fused AdamW step against the per-parameter loop, alternated
  ``--repeats`` times in one process (median ms per step of each, and in how many rounds fused won).
* ``pool_ab/<impl>/pool_first_bf16``: the tree's spatial pool and context view against the same two
  written as autograd ops (``cat([mean, amax])``, ``F.avg_pool2d``), alternated ``--repeats`` times in
  one process on real crops (``--real-ws``): median ms per training step and flip-TTA pairs/s of
  each, and in how many rounds the tree's won. Both give the same weights bit for bit (tests).
* ``maxpool_ab/<impl>/pool_first_bf16``: the stages' 2x2 max-pool, forward and backward on the maps one
  training step pools, by the kernel (int64 indices) against a uint8-code formulation from element-wise
  ops over views, alternated ``--repeats`` times in one process; both bit for bit (checked in the cell).
* ``gemm_share/<impl>/pool_first_bf16``: training's share of the fp32 GEMM peak, paired round by round
  (ten timed steps, then the GEMM probe at once, ``--repeats`` rounds in one process).
* ``loop/<impl>/pool_first_bf16``: one full-size DEFT loop iteration (``--deeppcb``: a fresh ``init
  --from-deeppcb`` at the defaults, Phase 1 and 3 off, a KPI target no model meets) and its stage
  seconds from ``deft_state.json``: how much of an iteration lies outside training.
* ``full_run/summary/deeppcb_default`` (``--cells full_runs``): the full default DeepPCB runs of
  ``bench_estimate.py`` in the order they ran, and the speed-up of each after run against the
  before run of the same hour.
* ``parallel/<impl>/pool_first_bf16``: one training alone on 2 threads against two side by side on 1
  thread each, alternated ``--repeats`` times (``deftpipe.automl._local_workers``): how many
  trial-lengths two trials take side by side (the cost model's ``SHARED_TRIAL`` is half of it).

Usage: python bench/bench_speed.py --before-src /work/wt-before/src [--ws WS] [--cells step,profile,epoch]
       [--repeats 5] [--threads 2] [--tag quiet] [--impls before,after] [--after-label after_fused]
``--after-label`` names this tree in the keys, so a later lever is stored beside the earlier "after"
cells instead of being skipped as done (fifteenth session: ``after_fused``, the fused optimiser).
Run it on a quiet box: a second busy process on 2 cores doubles a step's time. The 1-minute load
average at the start and end of each cell is stored with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "speed.json"
VARIANTS = {  # name -> (model.pool_first, train.precision); "before" knows only fp32 without pool_first
    "fp32": (False, "fp32"),
    "bf16": (False, "bf16"),
    "pool_first": (True, "fp32"),
    "pool_first_bf16": (True, "bf16"),
}
BATCH, SIZE, CONTEXT = 32, 128, 2


def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def _store(key: str, value: dict) -> None:
    data = _load()
    data[key] = value
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, RESULTS)


def _load_avg() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------- inside the subprocess (one impl)

def _spec(variant: str):
    from deftpipe.spec import Spec

    spec = Spec()
    spec.model.input_size, spec.model.context, spec.model.flip_tta = SIZE, CONTEXT, True
    spec.train.batch_size = BATCH
    pool_first, precision = VARIANTS[variant]
    if pool_first or precision != "fp32":  # keys the "before" tree does not have
        spec.model.pool_first, spec.train.precision = pool_first, precision
    return spec


def _autocast(spec):
    import contextlib

    import torch

    if getattr(spec.train, "precision", "fp32") == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _model_and_batch(variant: str):
    import torch

    from deftpipe.model._network import NetConfig, SiameseChangeNet

    spec = _spec(variant)
    torch.manual_seed(0)
    model = SiameseChangeNet(NetConfig.from_spec(spec)).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    if os.environ.get("BENCH_REAL_WS"):  # real DeepPCB crops: pooling kernels branch on the data
        images, targets = _real_rows(Path(os.environ["BENCH_REAL_WS"]), 512, gen)
        return spec, model, images, targets, gen
    images = torch.randint(0, 256, (512, 2, 1, SIZE, SIZE), dtype=torch.uint8, generator=gen)
    targets = (torch.rand(512, generator=gen) < 0.2).float()
    return spec, model, images, targets, gen


def _ws_spec(ws: Path):
    """The workspace's baseline spec without the keys the "before" tree does not know."""
    import yaml

    from deftpipe.spec import load_spec

    doc = yaml.safe_load((ws / "specs" / "baseline_spec.yaml").read_text())
    doc["model"].pop("pool_first", None), doc["train"].pop("precision", None)  # keys "before" lacks
    plain = ws / "specs" / f"speed_{os.getpid()}.yaml"  # beside the original: its relative paths hold
    plain.write_text(yaml.safe_dump(doc))
    try:
        return load_spec(plain)
    finally:
        plain.unlink()


def _real_rows(ws: Path, n: int, gen):
    """``n`` rows of fold f1_0's training set of a DeepPCB workspace (uint8 images, float targets),
    drawn with ``gen``: what training and scoring see, where random pixels would make the pooling
    kernels' branches unpredictable and slow them."""
    import torch

    from deftpipe.model._data import class_names, load_pair_set

    spec = _ws_spec(ws)
    data = load_pair_set(ws / "folds" / "f1_0" / "train.csv", spec, class_names(spec))
    idx = torch.randperm(len(data), generator=gen)[:n]
    return data.images[idx].contiguous(), data.targets[idx].float()


def _optimizer(spec, model):
    """The training loop's own optimiser (``make_optimizer``: fused in trees that fuse it)."""
    from deftpipe.model._train import make_optimizer

    return make_optimizer(model, spec.train.optim)


_BANKS: dict[int, object] = {}


def _noise_bank(images, gen):
    """The tree's ``NoiseBank`` for this image set (drawn once, as an epoch would), or None before it."""
    try:
        from deftpipe.model._data import NoiseBank
    except ImportError:
        return None
    if id(images) not in _BANKS:
        _BANKS[id(images)] = NoiseBank(gen, BATCH * images[0].numel())
    return _BANKS[id(images)]


def cell_steps(variant: str, steps: int) -> dict:
    """ms per training step over ``steps`` steps (after 3 warm-up steps): one trial's pace."""
    spec, model, images, targets, gen = _model_and_batch(variant)
    opt = _optimizer(spec, model)
    for _ in range(3):
        _train_step(spec, model, opt, images, targets, gen)
    t = time.perf_counter()
    for _ in range(steps):
        _train_step(spec, model, opt, images, targets, gen)
    return {"step_ms": round(1000 * (time.perf_counter() - t) / steps, 1)}


def cell_parallel(src: str, variant: str, rounds: int, steps: int = 60) -> dict:
    """One trial alone on 2 threads against two trials side by side on 1 thread each, alternated
    ``rounds`` times (deftpipe.automl._local_workers): how many trial-lengths two trials take."""
    import statistics

    def start(threads: int) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": src, "BENCH_THREADS": str(threads)}
        return subprocess.Popen([sys.executable, __file__, "_child", "steps", variant, str(steps)], env=env,
                                stdout=subprocess.PIPE, text=True)

    def ms(proc: subprocess.Popen) -> float:
        out, _ = proc.communicate()
        return json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])["step_ms"]

    alone, pairs = [], []
    for _ in range(rounds):
        alone.append(ms(start(2)))
        a, b = start(1), start(1)
        pairs.append([ms(a), ms(b)])
    one, two = statistics.median(alone), statistics.median(max(p) for p in pairs)
    return {"alone_2_threads_step_ms": alone, "side_by_side_1_thread_step_ms": pairs,
            "two_trials_in_trial_lengths": round(two / one, 3), "shared_trial": round(two / one / 2, 3),
            "rounds": rounds, "steps": steps}


def _train_step(spec, model, opt, images, targets, gen):
    import torch

    from deftpipe.model._data import augment, to_float
    from deftpipe.model._train import loss_fn

    t0 = time.perf_counter()
    idx = torch.randint(0, len(images), (BATCH,), generator=gen)
    bank = _noise_bank(images, gen)
    # the training loop's own call: uint8 in and a per-epoch noise bank where the tree has them
    x = augment(images[idx], spec.train.augment, gen, bank) if bank is not None else augment(
        to_float(images[idx]), spec.train.augment, gen)
    y = targets[idx]
    t1 = time.perf_counter()
    with _autocast(spec):
        logits = model(x)
    loss = loss_fn(logits.float(), y, None)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return t1 - t0, time.perf_counter() - t0


def _train_flops_per_pair(model, images) -> float:
    """Forward + backward FLOPs per pair (torch's FlopCounterMode on 8 pairs); the gradients are cleared."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        model(images[:8].float() / 255).sum().backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / 8


def _gemm_peak() -> float:
    """This box's fp32 GEMM GFLOP/s now: the better of two probes (bench_model's)."""
    from bench_model import gemm_gflops  # bench/ is this script's folder (sys.path[0])

    return max(gemm_gflops(reps=30), gemm_gflops(reps=30))


def cell_step(variant: str, repeats: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from deftpipe.model._train import EVAL_BATCH

    spec, model, images, targets, gen = _model_and_batch(variant)
    x8 = images[:8].float() / 255
    with FlopCounterMode(display=False) as fc:
        model(x8)
    fwd = fc.get_total_flops() / 8
    train_flops = _train_flops_per_pair(model, images)
    opt = _optimizer(spec, model)
    for _ in range(3):
        _train_step(spec, model, opt, images, targets, gen)
    runs, data_share = [], []
    for _ in range(repeats):  # the best of ``repeats`` runs of 10 steps: the least disturbed
        d = s = 0.0
        for _ in range(10):
            dd, ss = _train_step(spec, model, opt, images, targets, gen)
            d, s = d + dd, s + ss
        runs.append(s / 10)
        data_share.append(d / s)
    step = min(runs)
    model.eval()
    xs = images[:256].float() / 255

    def score(tta: bool) -> float:
        best = float("inf")
        for _ in range(max(2, repeats // 2)):
            t = time.perf_counter()
            with torch.inference_mode(), _autocast(spec):
                for i in range(0, len(xs), EVAL_BATCH):
                    x = xs[i:i + EVAL_BATCH]
                    lg = model(x)
                    if tta:
                        model.tta_score(x, lg)
            best = min(best, time.perf_counter() - t)
        return len(xs) / best

    plain, tta = score(False), score(True)
    from bench_model import gemm_gflops  # bench/ is this script's folder (sys.path[0])

    gemm = _gemm_peak()
    gemm_bf16 = max(gemm_gflops(reps=30, dtype=torch.bfloat16), gemm_gflops(reps=30, dtype=torch.bfloat16))
    return {"step_ms": round(1000 * step, 1), "step_ms_runs": [round(1000 * r, 1) for r in runs],
            "data_share_pct": round(100 * min(data_share), 1), "train_pairs_per_s": round(BATCH / step, 1),
            "epoch_26k_s": round(26000 / BATCH * step, 1), "score_pairs_per_s": round(plain, 1),
            "score_tta_pairs_per_s": round(tta, 1), "flops_forward_per_pair": fwd, "flops_train_per_pair": train_flops,
            "train_gflops": round(train_flops * BATCH / step / 1e9, 1), "gemm_fp32_gflops": round(gemm, 1),
            "gemm_bf16_gflops": round(gemm_bf16, 1),
            "train_pct_of_gemm_peak": round(100 * train_flops * BATCH / step / 1e9 / gemm, 1)}


def cell_gemm_share(variant: str, rounds: int) -> dict:
    """Training's share of the fp32 GEMM peak, paired: ``rounds`` rounds of ten timed training steps,
    each followed at once by the GEMM probe, in one process. The box's speed drifts between cells
    (``step`` measures the peak after all its steps); a round's ratio compares the two at one moment."""
    import statistics

    spec, model, images, targets, gen = _model_and_batch(variant)
    train_flops = _train_flops_per_pair(model, images)
    opt = _optimizer(spec, model)
    for _ in range(3):
        _train_step(spec, model, opt, images, targets, gen)
    steps, peaks, shares = [], [], []
    for _ in range(rounds):
        s = sum(_train_step(spec, model, opt, images, targets, gen)[1] for _ in range(10)) / 10
        peak = _gemm_peak()
        steps.append(round(1000 * s, 1))
        peaks.append(round(peak, 1))
        shares.append(round(100 * train_flops * BATCH / s / 1e9 / peak, 1))
    return {"step_ms": steps, "gemm_fp32_gflops": peaks, "train_pct_of_gemm_peak": shares,
            "train_pct_of_gemm_peak_median": statistics.median(shares), "rounds_at_or_above_60": sum(x >= 60 for x in shares),
            "rounds": rounds, "flops_train_per_pair": train_flops}


def cell_fused_ab(variant: str, rounds: int) -> dict:
    """The fused optimiser against the per-parameter loop in one process, alternated ``rounds`` times
    (10 steps each), so a box whose speed drifts between cells cannot decide the comparison."""
    import torch

    spec, model, images, targets, gen = _model_and_batch(variant)
    o = spec.train.optim
    kw = dict(lr=o.lr, betas=(o.momentum, o.beta2), weight_decay=o.weight_decay)
    opts = {"loop": torch.optim.AdamW(model.parameters(), foreach=False, **kw),
            "fused": torch.optim.AdamW(model.parameters(), fused=True, **kw)}
    for opt in opts.values():
        for _ in range(3):
            _train_step(spec, model, opt, images, targets, gen)
    ms: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            ms[name].append(1000 * sum(_train_step(spec, model, opt, images, targets, gen)[1] for _ in range(10)) / 10)
    med = {k: float(sorted(v)[len(v) // 2]) for k, v in ms.items()}
    alone: dict[str, float] = {}  # the optimiser's step by itself: the most the lever can save per step
    for name, opt in opts.items():
        runs = []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(20):
                opt.step()
            runs.append(1000 * (time.perf_counter() - t) / 20)
        alone[name] = round(sorted(runs)[len(runs) // 2], 2)
    return {"optimizer_step_alone_ms": alone, "step_ms_runs": {k: [round(x, 1) for x in v] for k, v in ms.items()},
            "step_ms_median": {k: round(v, 1) for k, v in med.items()},
            "fused_saves_pct_median": round(100 * (1 - med["fused"] / med["loop"]), 1),
            "fused_faster_in_rounds": sum(f < u for f, u in zip(ms["fused"], ms["loop"], strict=True)), "rounds": rounds}


def cell_pool_ab(variant: str, rounds: int) -> dict:
    """The tree's ``_pool`` and ``mean_pool`` (nineteenth session) against autograd's ``cat([mean, amax])``
    and ``F.avg_pool2d``, alternated ``rounds`` times in one process: each round restores the same
    weights and seeds, trains 15 steps (median of the last 12) and scores the 512 rows with flip TTA."""
    import copy
    import statistics

    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from deftpipe.model import _network
    from deftpipe.model._data import PairSet
    from deftpipe.model._train import forward_rows

    def autograd_pool(x):  # as the eighteenth session's tree wrote it: the mean first (the order sets the
        mean = x.mean(dim=(2, 3))  # accumulated gradient's layout: the other order is 15 % slower)
        peak = F.adaptive_max_pool2d(x, 1).flatten(1) if _network.scoring() else x.amax(dim=(2, 3))
        return torch.cat([mean, peak], dim=1)

    impls = {"autograd": (autograd_pool, lambda x, k: F.avg_pool2d(x.flatten(1, 2), k).unflatten(1, x.shape[1:3])),
             "tree": (_network._pool, _network.mean_pool)}
    spec, model, images, targets, _ = _model_and_batch(variant)
    state = copy.deepcopy(model.state_dict())
    rows = PairSet(pd.DataFrame(index=range(len(images))), images, targets, np.zeros(len(images), bool), [])
    step: dict[str, list[float]] = {k: [] for k in impls}
    score: dict[str, list[float]] = {k: [] for k in impls}
    for r in range(rounds):
        for name in (list(impls) if r % 2 == 0 else list(impls)[::-1]):
            _network._pool, _network.mean_pool = impls[name]
            model.load_state_dict(state)
            model.train()
            gen = torch.Generator().manual_seed(r)
            torch.manual_seed(r)
            _BANKS.clear()
            opt = _optimizer(spec, model)
            times = [_train_step(spec, model, opt, images, targets, gen)[1] for _ in range(15)]
            step[name].append(1000 * statistics.median(times[3:]))
            t = time.perf_counter()
            forward_rows(model, rows, torch.device("cpu"), precision=spec.train.precision, tta=True)
            score[name].append(len(rows) / (time.perf_counter() - t))
    _network._pool, _network.mean_pool = impls["tree"]
    med = {k: statistics.median(v) for k, v in step.items()}
    return {"step_ms_median": {k: round(v, 1) for k, v in med.items()},
            "step_ms_runs": {k: [round(x, 1) for x in v] for k, v in step.items()},
            "saves_pct_median": round(100 * (1 - med["tree"] / med["autograd"]), 1),
            "tree_faster_in_rounds": sum(t < a for t, a in zip(step["tree"], step["autograd"], strict=True)),
            "score_tta_pairs_per_s_median": {k: round(statistics.median(v)) for k, v in score.items()},
            "score_tree_faster_in_rounds": sum(t > a for t, a in zip(score["tree"], score["autograd"], strict=True)),
            "rounds": rounds}


def _pool_by_code(x):
    """A 2x2 max-pool that records which of the four won as one uint8 per output (0-3, the kernel's
    scan order; the first of equal maxima), from element-wise ops over views of the channels-last map."""
    import torch

    n, c, h, w = x.shape
    v = x.permute(0, 2, 3, 1).reshape(n * h // 2, 2, w // 2, 2, c)
    x00, x01, x10, x11 = v[:, 0, :, 0], v[:, 0, :, 1], v[:, 1, :, 0], v[:, 1, :, 1]
    top, bottom = torch.maximum(x00, x01), torch.maximum(x10, x11)
    lower = bottom > top
    code = torch.where(lower, (x11 > x10).to(torch.uint8) + 2, (x01 > x00).to(torch.uint8))
    return torch.maximum(top, bottom), code


def _unpool_by_code(grad, code, shape):
    """The gradient of :func:`_pool_by_code`: one broadcast ``where`` into the channels-last input map."""
    import torch

    n, c, h, w = shape
    pos = torch.arange(4, dtype=torch.uint8).view(1, 2, 1, 2, 1)
    g = grad.permute(0, 2, 3, 1).reshape(n * h // 2, 1, w // 2, 1, c)
    out = torch.where(code.reshape(n * h // 2, 1, w // 2, 1, c) == pos, g, 0)
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def cell_maxpool_ab(variant: str, rounds: int) -> dict:
    """The stages' 2x2 max-pool as training runs it (the kernel, with int64 indices) against a
    formulation that keeps a uint8 code per output instead (:func:`_pool_by_code`), on the maps one
    training step pools (captured from the model), alternated ``rounds`` times in one process. Both give
    the same values and gradients bit for bit (checked here on every map, ties included)."""
    import statistics

    import torch

    spec, model, images, _, _ = _model_and_batch(variant)
    maps = []
    hooks = [s[0].register_forward_hook(lambda m, i, o: maps.append(o.detach().clone()))
             for enc in (model.encoder, model.context_encoder) if enc is not None for s in enc.stages]
    from deftpipe.model._data import to_float

    model.train()
    with _autocast(spec):
        model(to_float(images[:BATCH]))
    for h in hooks:
        h.remove()
    grads = [torch.randn(m.shape[0], m.shape[1], m.shape[2] // 2, m.shape[3] // 2).to(m.dtype)
             .contiguous(memory_format=torch.channels_last) for m in maps]
    same = True
    for m, g in zip(maps, grads, strict=True):
        y, idx = torch.ops.aten.max_pool2d_with_indices(m, [2, 2], [2, 2])
        z, code = _pool_by_code(m)
        gk = torch.ops.aten.max_pool2d_with_indices_backward(g, m, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
        same &= torch.equal(y, z.reshape(y.permute(0, 2, 3, 1).shape).permute(0, 3, 1, 2)) and torch.equal(
            gk, _unpool_by_code(g, code, m.shape))

    def kernel():
        for m, g in zip(maps, grads, strict=True):
            _, idx = torch.ops.aten.max_pool2d_with_indices(m, [2, 2], [2, 2])
            torch.ops.aten.max_pool2d_with_indices_backward(g, m, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)

    def by_code():
        for m, g in zip(maps, grads, strict=True):
            _, code = _pool_by_code(m)
            _unpool_by_code(g, code, m.shape)

    ms: dict[str, list[float]] = {"kernel": [], "uint8_code": []}
    impls = [("kernel", kernel), ("uint8_code", by_code)]
    for r in range(rounds):
        for name, f in (impls if r % 2 == 0 else impls[::-1]):
            f()
            t = time.perf_counter()
            for _ in range(5):
                f()
            ms[name].append(1000 * (time.perf_counter() - t) / 5)
    med = {k: statistics.median(v) for k, v in ms.items()}
    return {"maps": [list(m.shape) for m in maps], "dtype": str(maps[0].dtype), "bit_identical": bool(same),
            "fwd_bwd_ms_per_step_median": {k: round(v, 2) for k, v in med.items()},
            "ms_runs": {k: [round(x, 2) for x in v] for k, v in ms.items()},
            "code_over_kernel": round(med["uint8_code"] / med["kernel"], 2), "rounds": rounds}


def cell_profile(variant: str) -> dict:
    from torch.profiler import ProfilerActivity, profile

    spec, model, images, targets, gen = _model_and_batch(variant)
    opt = _optimizer(spec, model)
    for _ in range(3):
        _train_step(spec, model, opt, images, targets, gen)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            _train_step(spec, model, opt, images, targets, gen)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {"self_cpu_ms_per_step": round(total / 1000 / 10, 1),
            "top_ops": [{"op": e.key, "share_pct": round(100 * e.self_cpu_time_total / total, 1),
                         "ms_per_step": round(e.self_cpu_time_total / 1000 / 10, 2), "calls_per_step": e.count // 10}
                        for e in events[:12]]}


def cell_epoch(variant: str, ws: Path) -> dict:
    import torch

    from deftpipe.model import _train
    from deftpipe.model._data import class_names, load_pair_set

    train_csv, val_csv = ws / "folds" / "f1_0" / "train.csv", ws / "folds" / "f1_0" / "val.csv"
    spec = _ws_spec(ws)
    want = _spec(variant)
    spec.model = want.model.model_copy(update={"input_size": spec.model.input_size})
    if hasattr(want.train, "precision"):
        spec.train.precision = want.train.precision
    spec.train.num_epochs = 1
    t = time.perf_counter()
    load_pair_set(train_csv, spec, class_names(spec)), load_pair_set(val_csv, spec, class_names(spec))
    decode = time.perf_counter() - t  # warm: the on-disk decode cache (the second read of a run)
    predict_s = [0.0]
    predict = _train.predict

    def timed_predict(*a, **k):
        t0 = time.perf_counter()
        try:
            return predict(*a, **k)
        finally:
            predict_s[0] += time.perf_counter() - t0

    _train.predict = timed_predict
    out = ws / "runs" / f"speed_epoch_{variant}_{os.getpid()}"
    t = time.perf_counter()
    result = _train.train_model(spec, train_csv, val_csv, out)
    total = time.perf_counter() - t
    epoch_s = result.history[0]["epoch_seconds"]
    return {"rows_train": len(load_pair_set(train_csv, spec, class_names(spec))), "decode_cached_s": round(decode, 1),
            "train_model_s": round(total, 1), "epoch_s": epoch_s, "val_scoring_s": round(predict_s[0], 1),
            "training_s": round(epoch_s - predict_s[0], 1), "outside_epoch_s": round(total - epoch_s, 1),
            "val_far_pct": result.metrics.get("far_pct"), "threads": torch.get_num_threads()}


def cell_loop(deeppcb: Path, parent: Path) -> dict:
    """One full-size DEFT loop iteration and what its time is spent on.

    A fresh ``init --from-deeppcb`` workspace at the product's defaults, with Phase 1 and Phase 3 off,
    one loop iteration and a KPI target no model meets (``kpi.target: 0``), run through the CLI. The
    iteration's stage seconds come from ``deft_state.json`` (``seconds_<stage>``): training is
    ``seconds_train`` (its epochs, per-epoch validation included); the rest is outside training, the
    baseline's RCA included (recorded on the baseline, paid once per iteration)."""
    import shutil
    import tempfile

    import yaml

    ws = Path(tempfile.mkdtemp(prefix="speed_loop_", dir=parent)) / "ws"
    cli = [sys.executable, "-m", "deftpipe"]
    try:
        subprocess.run(cli + ["init", "--from-deeppcb", str(deeppcb), str(ws)], check=True, stdout=subprocess.DEVNULL)
        cfg_path = ws / "pipeline.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["automl"]["phase1"]["enabled"] = cfg["automl"]["phase3"]["enabled"] = False
        cfg["kpi"]["target"], cfg["deft"]["max_iterations"] = 0.0, 1
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        t = time.perf_counter()
        subprocess.run(cli + ["run", str(ws), "--yes"], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        state = json.loads(next((ws / "results").glob("run_*/deft_state.json")).read_text())
        it = state["iterations"]["iter1"]
        stages = {k.removeprefix("seconds_"): v for k, v in it.items() if k.startswith("seconds_")}
        # the analysis the iteration starts from (RCA of the baseline): every iteration of a longer
        # loop pays one, so it is the iteration's, though the state records it on the model it analysed
        stages["rca"] = state["iterations"]["baseline"].get("seconds_rca") or 0.0
        total = sum(stages.values())
        outside = total - stages.get("train", 0.0)
        train_rows = it.get("n_train_rows")
    finally:
        shutil.rmtree(ws.parent, ignore_errors=True)
    return {"iteration_s": round(total, 1), "stages_s": stages, "outside_training_s": round(outside, 1),
            "outside_training_pct": round(100 * outside / total, 1), "train_rows": train_rows,
            "run_wall_s": round(wall, 1)}


#: the full default DeepPCB runs of bench_estimate.py in the order they ran (tree, estimate.json key);
#: each "after" run is paired with the "before" run nearest in time (the box's speed drifts by the hour)
FULL_RUNS = [("before", "deeppcb__speed_before_quiet"), ("s15 (fused, since reverted)", "deeppcb__speed_after_s15"),
             ("s15", "deeppcb__speed_after_s15b"), ("before", "deeppcb__speed_before_quiet2"),
             ("s16", "deeppcb__speed_after_s16"), ("before", "deeppcb__speed_before_quiet3"),
             ("s16", "deeppcb__speed_after_s16b"), ("s16", "deeppcb__speed_after_s16c"),
             ("before", "deeppcb__speed_before_quiet4"), ("s17", "deeppcb__speed_after_s17"),
             ("before", "deeppcb__speed_before_quiet5"), ("s17 as committed", "deeppcb__speed_after_s17c"),
             ("s17 as committed", "deeppcb__speed_after_s17d"), ("s18", "deeppcb__speed_after_s18"),
             ("before", "deeppcb__speed_before_quiet6"), ("s18", "deeppcb__speed_after_s18b"),
             ("s19", "deeppcb__speed_after_s19"), ("before", "deeppcb__speed_before_quiet8"),
             ("s19", "deeppcb__speed_after_s19b"), ("before", "deeppcb__speed_before_quiet9"),
             ("s19", "deeppcb__speed_after_s19c")]
SAME_HOUR = [("deeppcb__speed_after_s15b", "deeppcb__speed_before_quiet2"),
             ("deeppcb__speed_after_s16", "deeppcb__speed_before_quiet3"),
             ("deeppcb__speed_after_s17", "deeppcb__speed_before_quiet5"),
             ("deeppcb__speed_after_s18", "deeppcb__speed_before_quiet6"),
             ("deeppcb__speed_after_s19", "deeppcb__speed_before_quiet8"),  # s19, before 8, s19b: a sandwich
             ("deeppcb__speed_after_s19b", "deeppcb__speed_before_quiet8"),
             ("deeppcb__speed_after_s19c", "deeppcb__speed_before_quiet9")]  # before first, then main


def full_runs_summary() -> dict:
    """Every full run stored in estimate.json, in order, and the speed-up of each same-hour pair."""
    est = json.loads((RESULTS.parent / "estimate.json").read_text())
    runs = [{"tree": tree, "key": key, "total_s": est[key]["total"]["actual"],
             "phases_s": {k: est[key]["phases"][k] for k in ("phase1", "phase2", "phase3")},
             "estimate_range_s": [est[key]["total"]["low"], est[key]["total"]["high"]],
             "gemm_fp32_gflops_start_end": est[key].get("gemm_fp32_gflops_start_end")}
            for tree, key in FULL_RUNS if key in est]
    pairs = [{"after": a, "before": b, "speedup": round(est[b]["total"]["actual"] / est[a]["total"]["actual"], 2)}
             for a, b in SAME_HOUR if a in est and b in est]
    return {"runs": runs, "same_hour_pairs": pairs, "target_speedup": 3.0}


def _child(argv: list[str]) -> None:
    kind, variant = argv[0], argv[1]
    import torch

    try:  # the tree's own process start: freed memory kept for the next step (trees that have it)
        from deftpipe._malloc import keep_freed_memory
    except ImportError:
        pass
    else:
        keep_freed_memory()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if kind == "step":
        res = cell_step(variant, int(argv[2]))
    elif kind == "profile":
        res = cell_profile(variant)
    elif kind == "loop":
        res = cell_loop(Path(argv[2]), Path(argv[3]))
    elif kind == "fused_ab":
        res = cell_fused_ab(variant, int(argv[2]))
    elif kind == "pool_ab":
        res = cell_pool_ab(variant, int(argv[2]))
    elif kind == "gemm_share":
        res = cell_gemm_share(variant, int(argv[2]))
    elif kind == "maxpool_ab":
        res = cell_maxpool_ab(variant, int(argv[2]))
    elif kind == "steps":
        res = cell_steps(variant, int(argv[2]))
    else:
        res = cell_epoch(variant, Path(argv[2]))
    print("RESULT " + json.dumps(res))


# ---------------------------------------------------------------- the driver


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before-src", required=True, help="src/ of the tree before the speed work")
    ap.add_argument("--ws", help="a DeepPCB workspace with bench_generalisation.py's fold f1_0")
    ap.add_argument("--cells", default="step,profile")
    ap.add_argument("--deeppcb", help="the shared DeepPCB folder (cell loop: a fresh init of it)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="")
    ap.add_argument("--impls", default="before,after", help="which of before,after to run")
    ap.add_argument("--after-label", default="after", help="the key's name for this tree (e.g. after_fused)")
    ap.add_argument("--real-ws", help="step and profile cells on real crops of this DeepPCB workspace's fold f1_0 "
                                      "(bench_generalisation.py's folds) instead of random pixels")
    ap.add_argument("--after-src", default=str(ROOT / "src"),
                    help="src/ of the 'after' tree (default: this one; another for an A/B of two later trees)")
    args = ap.parse_args()
    impls = {"before": str(Path(args.before_src).resolve()), args.after_label: str(Path(args.after_src).resolve())}
    wanted = {args.after_label if i == "after" else i for i in args.impls.split(",")}
    impls = {k: v for k, v in impls.items() if k in wanted}
    for kind in args.cells.split(","):
        if kind == "full_runs":  # a summary of estimate.json's full runs, no measuring
            _store("full_run/summary/deeppcb_default", full_runs_summary())
            print(json.dumps(full_runs_summary()["same_hour_pairs"]), flush=True)
            continue
        for impl, src in impls.items():
            for variant in args.variants.split(","):
                if (impl == "before" and variant != "fp32") or (kind in ("loop", "fused_ab", "pool_ab", "parallel", "gemm_share",
                                                                                 "maxpool_ab")
                                                                 and variant != "pool_first_bf16"):
                    continue  # the loop runs the workspace's own spec (init's defaults): one cell per tree
                key = f"{kind}/{impl}/{variant}" + (f"/{args.tag}" if args.tag else "")
                if key in _load():
                    print(f"{key}: done already", flush=True)
                    continue
                if kind == "parallel":  # its own children: one alone, then two side by side
                    load0 = _load_avg()
                    res = {**cell_parallel(src, variant, args.repeats), "load_avg_start": load0,
                           "load_avg_end": _load_avg(), "src": src}
                    _store(key, res)
                    print(f"{key}: {res['two_trials_in_trial_lengths']} trial-lengths for two", flush=True)
                    continue
                extra = {"step": [str(args.repeats)], "profile": [], "epoch": [str(args.ws)],
                         "loop": [str(args.deeppcb), tempfile.gettempdir()], "fused_ab": [str(args.repeats)],
                         "pool_ab": [str(args.repeats)], "gemm_share": [str(args.repeats)],
                         "maxpool_ab": [str(args.repeats)]}[kind]
                env = {**os.environ, "PYTHONPATH": src, "BENCH_THREADS": str(args.threads)}
                if args.real_ws:
                    env["BENCH_REAL_WS"] = str(Path(args.real_ws).resolve())
                load0 = _load_avg()
                proc = subprocess.run([sys.executable, __file__, "_child", kind, variant, *extra], env=env,
                                      capture_output=True, text=True, check=False)
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    print(f"{key}: failed\n{proc.stderr[-2000:]}", flush=True)
                    continue
                res = {**json.loads(line[7:]), "threads": args.threads, "load_avg_start": load0,
                       "images": "a fresh init of the DeepPCB folder" if kind == "loop" else (
                           f"real: {args.real_ws} f1_0" if args.real_ws else "random pixels"),
                       "load_avg_end": _load_avg(), "src": src}
                _store(key, res)
                brief = {k: res[k] for k in ("step_ms", "train_pct_of_gemm_peak", "score_tta_pairs_per_s",
                                             "iteration_s", "outside_training_pct", "step_ms_median",
                                             "epoch_s", "training_s", "val_scoring_s", "self_cpu_ms_per_step",
                                             "saves_pct_median", "score_tta_pairs_per_s_median",
                                             "train_pct_of_gemm_peak_median", "rounds_at_or_above_60",
                                             "fwd_bwd_ms_per_step_median", "bit_identical")
                         if k in res}
                print(f"{key}: {brief}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(sys.argv[2:])
    else:
        main()
