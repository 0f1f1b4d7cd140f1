"""The training loop, top to bottom: seeds -> data -> model (scratch or warm start) -> optimiser ->
epochs of (augment, forward, backward, step) -> validation metrics -> checkpoint -> callback.

Checkpoint selection (:func:`later_epoch_replaces`): each epoch replaces the one in hand unless the one
in hand is better beyond the validation set's noise (the run's paired bootstrap,
:func:`deftpipe.selection.challenge`); the learning rate anneals toward the last epoch, so a later epoch
is the default and an earlier one must earn its place. The kept epoch ("best") and the last
``train.keep_checkpoints`` epochs stay on disk, older files are removed.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deftpipe._cores import fair_threads, registered
from deftpipe._fs import LockedError, atomic_write_json, run_lock
from deftpipe._redact import scrub_clip
from deftpipe.errors import DataError, SpecError, TrainingError
from deftpipe.metrics import compute_metrics
from deftpipe.model._adapter import EpochCallback, TrainResult
from deftpipe.model._checkpoint import checkpoint_name, load_weights, read_checkpoint, save_checkpoint
from deftpipe.model._data import NoiseBank, PairSet, augment, class_names, load_pair_set, to_float
from deftpipe.model._network import NetConfig, SiameseChangeNet
from deftpipe.model._precision import autocast, resolve_precision
from deftpipe.model._val_scores import csv_stamp, save_val_scores
from deftpipe.selection import RULE_FIGURE, challenge, figures
from deftpipe.spec import Spec, spec_to_dict

#: a training re-takes its share of the cores this often (about 2 s of a DeepPCB epoch), so a trial
#: that a second sweep worker joins halves its threads, and one left alone takes them all back
RESHARE_STEPS = 32
EVAL_BATCH = 32  # measured: 1,060 pairs/s at 32 vs 634 at 256 on 2 CPU threads (cache-sized batches)


class NullProgress:
    """Progress reporting that does nothing (the CLI passes a Rich one)."""

    def start(self, epochs: int, steps_per_epoch: int) -> None: ...
    def batch(self, epoch: int, step_in_epoch: int, loss: float) -> None: ...
    def epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


@contextlib.contextmanager
def torch_threads(requested: int = 0) -> Iterator[int]:
    """Intra-op threads by the rule of :mod:`deftpipe._cores`: ``requested`` > 0, else
    ``$DEFTPIPE_NUM_THREADS``, else this host's cores ÷ the deftpipe workers running on it."""
    with registered():
        n = fair_threads(requested)
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield n
        finally:
            torch.set_num_threads(before)


def retake_threads(requested: int = 0) -> None:
    """Re-take this job's share of the cores (call inside :func:`torch_threads`): a worker that started
    or ended beside it since changes the share of the rule in :mod:`deftpipe._cores`."""
    n = fair_threads(requested)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)


def device_problem(name: str) -> str | None:
    """Why ``train.device: name`` cannot run with the installed torch, or None (pre-flight asks too)."""
    if name == "cuda" and not torch.cuda.is_available():
        return (f"train.device is cuda but the installed torch {torch.__version__} cannot use a GPU "
                "(torch.cuda.is_available() is False); set train.device to auto or cpu, or install a CUDA build")
    return None


def trains_on_cpu(spec: Spec) -> bool:
    """Whether ``spec`` trains the built-in model on this host's CPU (not a GPU, TAO or a command)."""
    if spec.adapter.kind != "torch":
        return False
    try:
        return pick_device(spec.train.device).type == "cpu"
    except SpecError:
        return False


def scoring_passes(spec: Spec) -> int:
    """Forward passes per scored pair of an inference job of the built-in model: the four flips of
    ``model.flip_tta`` (:meth:`SiameseChangeNet.tta_score`), else one."""
    return len(SiameseChangeNet.FLIPS) if spec.model.flip_tta else 1


def pick_device(name: str) -> torch.device:
    problem = device_problem(name)
    if problem:
        raise SpecError(problem)
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _record_failure(out_dir: Path, created: bool, exc: BaseException) -> None:
    """After a failed or interrupted training: metrics.json says so (never "running" forever); a
    folder this call created and that holds no finished epoch is removed (nothing half-written)."""
    metrics = out_dir / "metrics.json"
    if metrics.is_file():
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(metrics.read_text(encoding="utf-8"))
            data.update(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                        error=scrub_clip(str(exc) or type(exc).__name__, 600))
            atomic_write_json(metrics, data)
    elif created:
        shutil.rmtree(out_dir, ignore_errors=True)


def lr_at(step: int, total: int, warmup: int, optim) -> float:
    """Linear warm-up, then cosine to 1 % of the peak, a x0.1 step at 50 % and 75 %, or flat."""
    if step < warmup:
        return optim.lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    if optim.scheduler == "cosine":
        return optim.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))
    if optim.scheduler == "step":
        return optim.lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
    return optim.lr


def make_optimizer(model: torch.nn.Module, optim) -> torch.optim.Optimizer:
    """The spec's optimiser over ``model``'s parameters. Not fused: the fused AdamW kernel was no faster
    per training step on CPU (median 68.6 vs 67.2 ms over 12 alternated rounds, speed.json ``fused_ab``);
    two full runs hinted at 10 % (docs/benchmarks.md, "Speed, continued"): not settled."""
    params = model.parameters()
    if optim.optimizer == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    cls = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=optim.lr, betas=(optim.momentum, optim.beta2), weight_decay=optim.weight_decay)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None,
            focal_gamma: float = 0.0) -> torch.Tensor:
    """BCE on the defect logit (``weight`` = pos_weight) or CE over classes (``weight`` per class).

    ``focal_gamma`` > 0 scales each row's loss by ``(1 - p_true) ** gamma`` (focal loss, Lin et al.
    2017): rows the model already gets right weigh little, so the gradient goes to the hard ones —
    the low-scored defects and high-scored PASS rows that set FAR@100%R."""
    binary = logits.dim() == 1
    if not focal_gamma:
        return (F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight) if binary
                else F.cross_entropy(logits, targets, weight=weight))
    if binary:
        per_row = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight, reduction="none")
        p_true = torch.exp(-F.binary_cross_entropy_with_logits(logits, targets, reduction="none"))
    else:
        per_row = F.cross_entropy(logits, targets, weight=weight, reduction="none")
        p_true = torch.exp(-F.cross_entropy(logits, targets, reduction="none"))
    return ((1.0 - p_true).pow(focal_gamma) * per_row).mean()


def class_weight(data: PairSet, n_out: int, balance: str) -> torch.Tensor | None:
    if balance != "pos_weight":
        return None
    if n_out == 1:
        n_def = float(data.targets.sum())
        return torch.tensor(max(1.0, (len(data) - n_def) / max(1.0, n_def)))
    counts = torch.bincount(data.targets, minlength=n_out).float().clamp(min=1)
    return len(data) / (n_out * counts)


ADDED_SOURCES = ("sdg", "mining_pool")  # the CSV ``source`` of rows the DEFT loop added (deft/_merge.py)


def epoch_order(data: PairSet, balance: str, gen: torch.Generator, added_weight: float = 1.0) -> torch.Tensor:
    """Sample order of one epoch: a permutation, or weighted draws with replacement — class-balanced
    (``sampler``) and/or the loop's added rows drawn ``added_weight`` times as often."""
    added = data.df["source"].isin(ADDED_SOURCES).to_numpy() if "source" in data.df.columns else None
    boost = added_weight != 1.0 and added is not None and added.any()
    if balance != "sampler" and not boost:
        return torch.randperm(len(data), generator=gen)
    w = torch.ones(len(data))
    if balance == "sampler":
        t = data.targets.long()
        w = 1.0 / torch.bincount(t).float()[t]
    if boost:
        w = w * torch.from_numpy(np.where(added, added_weight, 1.0)).float()
    return torch.multinomial(w, len(data), replacement=True, generator=gen)


@torch.inference_mode()
def forward_rows(model: SiameseChangeNet, data: PairSet, device: torch.device, *, precision: str = "fp32",
                 scores: bool = True, embed: bool = False, tta: bool | None = None
                 ) -> tuple[np.ndarray | None, torch.Tensor, np.ndarray | None]:
    """One pass over ``data`` in eval mode: (P(defect) per row — the mean over the four flips with
    ``flip_tta`` — or None without ``scores``, logits, fused embeddings or None without ``embed``).
    ``tta``: None = the model's ``flip_tta``; False = the unflipped pass alone (see :func:`_validate_epoch`)."""
    tta = model.cfg.flip_tta if tta is None else tta
    was_training = model.training
    model.eval()
    outs, logits, embs = [], [], []
    with autocast(resolve_precision(precision, device), device):
        for i in range(0, len(data), EVAL_BATCH):
            x = to_float(data.images[i:i + EVAL_BATCH]).to(device)
            fused = model.fuse(x)
            lg = model.logits(fused)
            logits.append(lg.cpu())
            if embed:
                embs.append(fused.float().cpu())
            if scores:
                outs.append((model.tta_score(x, lg) if tta else model.defect_score(lg)).cpu())
    model.train(was_training)
    return (torch.cat(outs).float().numpy().astype(np.float64) if scores else None, torch.cat(logits),
            torch.cat(embs).numpy().astype(np.float32) if embed else None)


def predict(model: SiameseChangeNet, data: PairSet, device: torch.device, *, embed: bool = False,
            precision: str = "fp32", tta: bool | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """(P(defect) per row, logits) — or (embeddings, logits) with ``embed`` — in eval mode."""
    scores, logits, embs = forward_rows(model, data, device, precision=precision, scores=not embed, embed=embed,
                                        tta=tta)
    return (embs if embed else scores), logits


def validate(model: SiameseChangeNet, data: PairSet, device: torch.device, *, seed: int,
             threshold: float | None = None, classes: list[str] | None = None, precision: str = "fp32"
             ) -> dict[str, Any]:
    """compute_metrics on ``data`` plus ``val_loss`` (unweighted, comparable across specs)."""
    scores, logits = predict(model, data, device, precision=precision)
    return scored_metrics(data, scores, logits, seed=seed, threshold=threshold, classes=classes)


def scored_metrics(data: PairSet, scores: np.ndarray, logits: torch.Tensor, *, seed: int,
                   threshold: float | None = None, classes: list[str] | None = None) -> dict[str, Any]:
    """:func:`validate`'s metrics from scores and logits already computed by :func:`predict`."""
    val_loss = float(loss_fn(logits, data.targets, None))
    preds = None
    if classes and logits.dim() == 2:
        preds = [classes[i] for i in logits.argmax(1).tolist()]
    m = compute_metrics(data.is_defect, scores, labels=data.labels, threshold=threshold,
                        predictions=preds, seed=seed)
    return {**m, "val_loss": val_loss if math.isfinite(val_loss) else None}


def _validate_epoch(model: SiameseChangeNet, val_set: PairSet, device: torch.device, precision: str, epoch: int, *,
                    seed: int, classes: list[str] | None) -> tuple[dict[str, Any], np.ndarray]:
    """The epoch's validation metrics (with ``val_seconds``, the pass's time) and its scores.

    The pass is the unflipped one alone, also for a model with ``flip_tta``: its figures choose the
    epoch and rank a sweep's trials, and at full size the single pass's FAR@100%R ranked trials the
    way the holdout does far better than the four-flip mean (Spearman 0.50 vs -0.08, regret 0.19 vs
    5.51 FAR points over 8 sweeps; bench/results/sweep_objective_value.json), at a quarter of the
    cost. Flip TTA stays where a score ships: KPI, threshold, RCA, mining and the audit."""
    t0 = time.perf_counter()
    try:
        scores, logits = predict(model, val_set, device, precision=precision, tta=False)
        m = scored_metrics(val_set, scores, logits, seed=seed, classes=classes)
    except DataError as err:  # NaN scores: the weights blew up without a NaN loss
        raise TrainingError(f"training diverged in epoch {epoch}: {err}") from None
    m["val_seconds"] = round(time.perf_counter() - t0, 3)
    return m, scores


def later_epoch_replaces(is_defect: np.ndarray, later: np.ndarray, in_hand: np.ndarray | None, *,
                         seed: int = 0) -> bool:
    """Does a later epoch (its validation scores ``later``) replace the epoch in hand (``in_hand``)?

    Yes unless the one in hand beats it beyond the validation set's noise: the selection rule's paired
    bootstrap, with the later epoch as the incumbent. A lower FAR@100%R alone is not enough. On
    DeepPCB's folds the validation set is one board group whose FAR@100%R sits at 0 % for every epoch
    or swings by tens of points between epochs. The old rule (lowest ``far_pct``, ties by
    ``val_loss``) then often kept an earlier, unannealed epoch: in 18 full-size trainings where it
    did, the last epoch was lower on held-out boards in 16, and the mean holdout FAR@100%R went from
    18.05 % to 7.52 % with this rule (27.90 → 10.35 % on the 11 not looked at when it was written;
    docs/model.md, "Which epoch a training delivers").
    """
    if in_hand is None:
        return True
    if figures(is_defect, in_hand)[RULE_FIGURE] >= figures(is_defect, later)[RULE_FIGURE]:
        return True  # not lower on the set, so not better beyond its noise: no bootstrap needed
    return not challenge(is_defect, later, in_hand, seed=seed).replaces


def _prune(out_dir: Path, keep: set[str]) -> None:
    for p in out_dir.glob("model_epoch_*_step_*.pth"):
        if p.name not in keep:
            p.unlink(missing_ok=True)


def train_model(spec: Spec, train_csv: str | Path, val_csv: str | Path, out_dir: str | Path, *,
                pretrained: str | Path | None = None, epoch_callback: EpochCallback | None = None,
                progress: Any = None) -> TrainResult:
    """Train the siamese classifier; see :meth:`deftpipe.model.ModelAdapter.train`."""
    t0 = time.perf_counter()
    progress = progress or NullProgress()
    tr, out_dir = spec.train, Path(out_dir)
    classes = class_names(spec)
    cfg = NetConfig.from_spec(spec)
    # everything that can fail on bad input fails here, before anything is written
    train_set = load_pair_set(train_csv, spec, classes)
    val_set = load_pair_set(val_csv, spec, classes)
    if not val_set.is_defect.any() or val_set.is_defect.all():
        raise DataError(f"validation set {val_csv} needs both PASS and defect rows to select a checkpoint "
                        f"by far_pct (found {int(val_set.is_defect.sum())} defects of {len(val_set)})")
    val_stamp = csv_stamp(val_csv)  # which validation file the kept best-epoch scores belong to
    init = pretrained or tr.pretrained_model_path
    init_ckpt = read_checkpoint(init) if init else None
    device = pick_device(tr.device)
    created = not out_dir.exists()
    try:
        return _train(spec, out_dir, cfg, classes, train_set, val_set, val_stamp, init, init_ckpt, device,
                      epoch_callback, progress, t0)
    except LockedError:
        raise  # another process holds the folder's lock: its files are not ours to mark
    except BaseException as exc:
        _record_failure(out_dir, created, exc)
        raise


def _initial_model(cfg: NetConfig, init_ckpt: dict[str, Any] | None, init: Any, device: torch.device) -> SiameseChangeNet:
    """The network (after the seed is set), warm-started from ``init_ckpt``'s weights (not its optimiser)
    when given, channels-last on ``device``: that lets oneDNN vectorise conv/BN/pool over channels
    (~1.8x faster on CPU)."""
    model = SiameseChangeNet(cfg)
    if init_ckpt is not None:
        load_weights(model, init_ckpt["state_dict"], init)
    return model.to(device, memory_format=torch.channels_last)


def _train(spec, out_dir, cfg, classes, train_set, val_set, val_stamp, init, init_ckpt, device, epoch_callback,
           progress, t0) -> TrainResult:
    tr = spec.train
    with torch_threads(tr.num_threads), run_lock(out_dir, what="training"):
        torch.manual_seed(tr.seed)
        gen = torch.Generator().manual_seed(tr.seed)
        model = _initial_model(cfg, init_ckpt, init, device)
        optimizer = make_optimizer(model, tr.optim)
        weight = class_weight(train_set, cfg.num_outputs, tr.class_balance)
        weight = weight.to(device) if weight is not None else None
        steps_per_epoch = math.ceil(len(train_set) / tr.batch_size)
        total, warmup = steps_per_epoch * tr.num_epochs, int(tr.optim.warmup_epochs * steps_per_epoch)
        precision = resolve_precision(tr.precision, device)
        progress.start(tr.num_epochs, steps_per_epoch)

        step, history, best, best_scores, kept, stopped = 0, [], None, None, [], False
        try:
            for epoch in range(1, tr.num_epochs + 1):
                model.train()
                order, losses, t_epoch = (epoch_order(train_set, tr.class_balance, gen, tr.added_rows_weight), [],
                                           time.perf_counter())
                noise = NoiseBank(gen, tr.batch_size * train_set.images[0].numel()) if tr.augment.noise > 0 else None
                for i in range(steps_per_epoch):
                    if i % RESHARE_STEPS == 0:
                        retake_threads(tr.num_threads)
                    idx = order[i * tr.batch_size:(i + 1) * tr.batch_size]
                    x = augment(train_set.images[idx], tr.augment, gen, noise).to(device)
                    y = train_set.targets[idx].to(device)
                    lr = lr_at(step, total, warmup, tr.optim)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    with autocast(precision, device):
                        logits = model(x)  # the head runs in fp32 (SiameseChangeNet.logits)
                    loss = loss_fn(logits, y, weight, tr.focal_gamma)
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"training diverged in epoch {epoch} (step {step + 1}): the loss is {loss.item()}; "
                            f"the learning rate is the likely cause (train.optim.lr={tr.optim.lr:g}, now {lr:g}) "
                            "— lower it 10x or add train.optim.warmup_epochs")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    losses.append(loss.item())
                    progress.batch(epoch, i + 1, losses[-1])
                m, val_scores = _validate_epoch(model, val_set, device, precision, epoch, seed=tr.seed,
                                                classes=classes if cfg.num_outputs > 1 else None)
                m.update(epoch=epoch, step=step, train_loss=float(np.mean(losses)), lr=lr,
                         epoch_seconds=round(time.perf_counter() - t_epoch, 3))  # training + validation
                history.append(m)
                name = checkpoint_name(epoch, step)
                save_checkpoint(out_dir / name, model, spec, m, epoch=epoch, step=step)
                if later_epoch_replaces(val_set.is_defect, val_scores, best_scores, seed=tr.seed):
                    best, best_name, best_scores = m, name, val_scores
                    if not cfg.flip_tta:  # kept for RCA only when they are the scores inference gives
                        save_val_scores(out_dir, name, val_stamp, val_scores)
                m["kept_epoch"] = best["epoch"]  # the epoch in hand after this one (a sweep reports its figure)
                kept = (kept + [name])[-tr.keep_checkpoints:]
                _prune(out_dir, set(kept) | {best_name})
                atomic_write_json(out_dir / "metrics.json", {
                    "best_checkpoint": best_name, "best_epoch": best["epoch"], "best": best,
                    "history": history, "spec": spec_to_dict(spec), "precision": precision, "status": "running"})
                progress.epoch_end(epoch, m)
                if epoch_callback is not None and epoch_callback(epoch, m):
                    stopped = True
                    break
        finally:
            progress.close()

    seconds = time.perf_counter() - t0
    atomic_write_json(out_dir / "metrics.json", {
        "best_checkpoint": best_name, "best_epoch": best["epoch"], "best": best, "history": history,
        "spec": spec_to_dict(spec), "precision": precision, "status": "stopped_early" if stopped else "complete",
        "seconds": round(seconds, 2)})
    return TrainResult(best_checkpoint=out_dir / best_name, best_epoch=best["epoch"], best_step=best["step"],
                       metrics=best, history=history, epochs_run=len(history), stopped_early=stopped,
                       seconds=seconds)


__all__ = ["NullProgress", "forward_rows", "later_epoch_replaces", "lr_at", "predict", "scored_metrics", "torch_threads", "train_model",
           "validate"]
