"""The two hand-offs of the three-phase run (docs/contracts.md §9); each step is idempotent for resume.

Phase 1 → 2: the winner's tuned values are deep-merged onto the hand-written spec (the epoch budget
stays the spec's own), its checkpoint is copied into ``RESULTS_DIR/baseline/train/`` and verified,
and the loop's state is pre-seeded so the loop starts at baseline inference.

Phase 2 → 3: the loop's best iteration (the selection rule, never ``final_automl``) gives the
warm-start checkpoint, its last iteration's ``train_combined_iter<N>.csv`` the training set.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from deftpipe import deft
from deftpipe._faults import fault_point
from deftpipe._fs import atomic_path, atomic_write_text
from deftpipe._yaml import load_yaml_file
from deftpipe.config import PipelineConfig
from deftpipe.errors import CheckpointError, StateError
from deftpipe.spec import deep_merge, dump_spec, spec_from_dict

MERGED_SPEC_NAME = "baseline_spec_automl.yaml"
BUDGET_KEYS = {"num_epochs"}  # fidelity budget: never merged onto the hand-written spec
_CKPT_NAME = re.compile(r"model_epoch_(\d+)_step_(\d+)\.pth$")


def strip_budget(specs: dict[str, Any], budget: dict[str, Any] | None = None) -> dict[str, Any]:
    """``specs`` without budget keys (``num_epochs`` and whatever ``observed_budget`` names), any depth."""
    drop = BUDGET_KEYS | set(budget or {})
    out: dict[str, Any] = {}
    for k, v in specs.items():
        if k in drop:
            continue
        out[k] = strip_budget(v, budget) if isinstance(v, dict) else v
    return out


def merge_winner_spec(ws: Path, cfg: PipelineConfig, best: dict[str, Any], run_copy: Path) -> Path:
    """Write ``<ws>/specs/baseline_spec_automl.yaml`` (+ an absolute-path copy in the run folder).

    The workspace file keeps the user's relative paths (it sits next to ``baseline_spec.yaml``); the
    run folder's copy is what the loop and Phase 3 use, so a later run cannot change this one.

    Returns:
        The run folder's copy.
    """
    base_path = cfg.path(ws, cfg.data.spec)
    raw = load_yaml_file(base_path, "spec file")
    merged = deep_merge(raw, strip_budget(best.get("specs") or {}, best.get("observed_budget")))
    spec = spec_from_dict(merged, base_dir=base_path.parent, where=f"{base_path} + Phase 1 winner")
    header = (f"# Phase 1 winner ({best.get('rec_id')}, score {best.get('score')}) deep-merged onto "
              f"{base_path.name} by deftpipe; epoch budget kept from {base_path.name}.\n")
    atomic_write_text(base_path.parent / MERGED_SPEC_NAME, header + yaml.safe_dump(merged, sort_keys=False))
    return dump_spec(spec, run_copy)


def checkpoint_epoch_step(best: dict[str, Any]) -> tuple[int, int]:
    epoch, step = best.get("checkpoint_epoch"), best.get("checkpoint_step")
    if epoch is None or step is None:
        m = _CKPT_NAME.search(str(best.get("checkpoint_uri", "")))
        if not m:
            raise CheckpointError(f"best_rec has no checkpoint_epoch/step and its checkpoint_uri "
                                  f"{best.get('checkpoint_uri')!r} is not model_epoch_<EEE>_step_<SSS>.pth")
        epoch, step = int(m.group(1)), int(m.group(2))
    return int(epoch), int(step)


def copy_checkpoint(src: str | Path, dest_dir: Path, epoch: int, step: int) -> Path:
    """Copy ``src`` to ``dest_dir/model_epoch_<EEE>_step_<SSS>.pth`` atomically; verify it is non-empty.

    Raises:
        CheckpointError: the source is missing or empty, or the copy differs in size.
    """
    src = Path(str(src).removeprefix("file://"))
    if not src.is_file() or src.stat().st_size == 0:
        raise CheckpointError(f"winning checkpoint {src} is missing or empty; the sweep's retention may have "
                              "deleted it — rerun the phase (its storage keeps the trials) or raise keep_checkpoints")
    dest = dest_dir / f"model_epoch_{epoch:03d}_step_{step:03d}.pth"
    size = src.stat().st_size
    if dest.is_file() and dest.stat().st_size == size:
        return dest  # copied by an earlier attempt
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        if tmp.stat().st_size != size or size == 0:
            raise CheckpointError(f"copying {src} to {dest} gave {tmp.stat().st_size} bytes, expected {size}")
    return dest


def handoff_1_to_2(ws: Path, cfg: PipelineConfig, results_dir: Path, best_rec: dict[str, Any],
                   winner: dict[str, Any], reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merged spec → copied checkpoint → pre-seeded ``deft_state.json`` (skipped when already there)
    → the user's spec trained once (``reference``) recorded as the candidate every deliverable must beat."""
    spec_path = merge_winner_spec(ws, cfg, winner, results_dir / "automl" / "phase1" / MERGED_SPEC_NAME)
    fault_point("handoff12.spec")
    epoch, step = checkpoint_epoch_step(winner)
    ckpt = copy_checkpoint(winner["checkpoint_uri"], results_dir / "baseline" / "train", epoch, step)
    fault_point("handoff12.checkpoint")
    score = winner.get("score")
    train_metric = float(score) if score is not None else None  # the winner's validation metric
    if not _already_preseeded(results_dir, ckpt):
        deft.preseed_baseline(results_dir, workspace=ws, config=cfg, spec_path=spec_path, checkpoint=ckpt,
                              train_metric=train_metric, source="automl_phase1",
                              kpi_scores=winner.get("kpi_inference_csv"))
    if reference:
        deft.record_user_spec(results_dir, checkpoint=reference["checkpoint"],
                              inference_csv=reference["inference_csv"], metrics=reference,
                              spec_path=cfg.path(ws, cfg.data.spec), rec_id=reference.get("rec_id"))
    fault_point("handoff12.preseeded")
    return {"user_spec_handed_over": bool(winner.get("user_spec")),
            "spec": str(spec_path), "workspace_spec": str(cfg.path(ws, cfg.data.spec).parent / MERGED_SPEC_NAME),
            "checkpoint": str(ckpt), "checkpoint_bytes": ckpt.stat().st_size, "train_metric": train_metric}


def _already_preseeded(results_dir: Path, ckpt: Path) -> bool:
    if not (results_dir / "deft_state.json").is_file():
        return False
    base = deft.load_state(results_dir)["iterations"].get("baseline", {})
    return base.get("source") == "automl_phase1" and Path(base.get("best_ckpt_path", "")) == ckpt


def _iter_number(label: str) -> int | None:
    m = re.fullmatch(r"iter(\d+)", label)
    return int(m.group(1)) if m else None


def best_iteration(state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The loop's best iteration (baseline or iter<N>; never ``final_automl``): ``deft.loop_best``.

    Raises StateError when no iteration was evaluated.
    """
    choice = deft.loop_best(state)
    label = choice.kept.label if choice else None
    if label is None:
        raise StateError("the loop's state has no evaluated iteration with a checkpoint; Phase 3 needs the "
                         "loop's best checkpoint — rerun `deftpipe run WS` to finish Phase 2")
    return label, state["iterations"][label]


def final_training_csv(state: dict[str, Any], base_train: Path) -> tuple[str, Path]:
    """``train_combined_iter<N_final>.csv`` of the last loop iteration with one, else the base train set."""
    numbered = sorted(((n, lab) for lab in state["iterations"] if (n := _iter_number(lab)) is not None),
                      reverse=True)
    for _, label in numbered:
        csv = state["iterations"][label].get("combined_training_csv")
        if csv and Path(csv).is_file():
            return label, Path(csv)
    return "base", base_train


def handoff_2_to_3(state: dict[str, Any], base_train: Path) -> dict[str, Any]:
    label, it = best_iteration(state)
    ckpt = Path(it["best_ckpt_path"])
    if not ckpt.is_file() or ckpt.stat().st_size == 0:
        raise CheckpointError(f"the loop's best checkpoint {ckpt} ({label}) is missing or empty; Phase 3 "
                              "cannot warm-start from it")
    data_label, train_csv = final_training_csv(state, base_train)
    return {"warm_start_iteration": label, "warm_start_checkpoint": str(ckpt),
            "warm_start_far_pct": it.get("far_pct"), "train_csv": str(train_csv), "train_from": data_label}


__all__ = ["best_iteration", "copy_checkpoint", "final_training_csv", "handoff_1_to_2", "handoff_2_to_3",
           "merge_winner_spec", "strip_budget"]
