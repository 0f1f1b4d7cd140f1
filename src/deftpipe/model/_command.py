"""The "command" adapter: the same contract backed by an external trainer (a TAO container, any
script) driven by argv templates in the spec's ``adapter`` section.

Placeholders in a template (``str.format`` style, each argv item formatted on its own):

========== ================================================================================
{python}    this Python interpreter (``sys.executable``)
{spec}      a YAML copy of the spec (its ``adapter`` section reset, so a deftpipe trainer
            reading it runs the built-in model instead of calling back into this adapter)
{train_csv} {val_csv} {out_dir} {epochs} {pretrained}      (train; {pretrained} = "" if none)
{checkpoint} {csv}                                          (evaluate, infer, embed)
{out_csv} {out_npy} {out_json}                              (infer, embed, evaluate)
========== ================================================================================

What each program must leave behind:

* train: ``model_epoch_<EEE>_step_<SSS>.pth`` file(s) in ``{out_dir}``; optionally
  ``{out_dir}/metrics.json`` with ``best_checkpoint``, ``best`` (metrics) and ``history``.
  Without metrics.json the newest checkpoint is taken and evaluated on ``{val_csv}``.
* evaluate (optional): a JSON object with at least ``far_pct`` on stdout or in ``{out_json}``.
  Without an evaluate template, ``infer`` is run and the metrics are computed here.
* infer: ``{out_csv}`` with the input rows plus a ``score`` column (``prediction`` is added at the
  threshold when missing).
* embed: ``{out_npy}``, a ``(rows, dim)`` array.

``epoch_callback`` is called once per epoch of the history after the program ends (an external
run cannot be stopped mid-way); its answer is recorded as ``stopped_early``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deftpipe._argv import run_template
from deftpipe._fs import atomic_path
from deftpipe.errors import CheckpointError, DataError, SpecError, TrainingError
from deftpipe.metrics import FAIL, PASS, compute_metrics
from deftpipe.model._adapter import EpochCallback, ModelAdapter, TrainResult
from deftpipe.model._checkpoint_names import NAME_RE
from deftpipe.spec import Spec, dump_spec, load_spec, spec_from_dict, spec_to_dict

#: Every placeholder a template may use (pre-flight refuses any other before a run starts).
PLACEHOLDERS = ("python", "spec", "train_csv", "val_csv", "out_dir", "epochs", "pretrained", "checkpoint", "csv",
                "out_csv", "out_npy", "out_json")

CKPT_GLOB = "model_epoch_*_step_*.pth"


def _as_spec(spec: Any) -> Spec:
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, (str, Path)):
        return load_spec(spec)
    return spec_from_dict(spec)


class CommandAdapter(ModelAdapter):
    """Run external programs through ``spec.adapter`` argv templates (see the module docstring).

    Args:
        spec: the spec whose ``adapter`` section holds the templates (Spec, mapping or YAML path);
            ``train`` may pass another one.
        progress: ignored (the external program reports its own progress on stderr).
    """

    def __init__(self, spec: Any = None, *, progress: Any = None):
        self.spec = spec
        self.progress = progress

    # -- helpers ---------------------------------------------------------------------------
    def _spec(self, spec: Any = None) -> Spec:
        s = spec if spec is not None else self.spec
        if s is None:
            raise SpecError("the command adapter needs a spec with adapter.train/evaluate/infer/embed "
                            "templates; pass --spec")
        return _as_spec(s)

    def _template(self, spec: Spec, kind: str) -> list[str] | None:
        return getattr(spec.adapter, kind)

    def _run(self, spec: Spec, kind: str, values: dict[str, Any], *, log: Path | None = None,
             error: type[Exception] = DataError) -> str:
        argv_t = self._template(spec, kind)
        if not argv_t:
            raise SpecError(f"adapter.{kind} is not set in the spec; add an argv template such as "
                            f"['my_trainer', '{kind}', '--csv', '{{csv}}'] (see docs/model.md)")
        values = {"python": sys.executable, **{k: ("" if v is None else str(v)) for k, v in values.items()}}
        return run_template(argv_t, values, what=f"adapter.{kind}", timeout_s=spec.adapter.timeout_s,
                            timeout_name="adapter.timeout_s", log=log, error=error)

    def _spec_file(self, spec: Spec, folder: Path, **train_overrides: Any) -> Path:
        data = spec_to_dict(spec)
        data.pop("adapter", None)  # the external program trains; it must not call back into us
        data["train"].update(train_overrides)
        return dump_spec(data, folder / "spec.yaml")

    # -- the contract ----------------------------------------------------------------------
    def train(self, spec: Any, train_csv: str | Path, val_csv: str | Path, out_dir: str | Path,
              pretrained: str | Path | None = None, epoch_callback: EpochCallback | None = None) -> TrainResult:
        t0 = time.perf_counter()
        s = self._spec(spec)
        self.spec = s
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pre = pretrained or s.train.pretrained_model_path
        spec_file = self._spec_file(s, out_dir, pretrained_model_path=str(pre) if pre else None)
        self._run(s, "train", {"spec": spec_file, "train_csv": train_csv, "val_csv": val_csv,
                               "out_dir": out_dir, "epochs": s.train.num_epochs, "pretrained": pre},
                  log=out_dir / "command_train.log", error=TrainingError)
        ckpts = sorted(out_dir.glob(CKPT_GLOB))
        if not ckpts:
            raise TrainingError(f"adapter.train finished but wrote no {CKPT_GLOB} in {out_dir}; "
                                f"see {out_dir / 'command_train.log'}")
        history: list[dict[str, Any]] = []
        metrics_file = out_dir / "metrics.json"
        if metrics_file.is_file():
            rec = json.loads(metrics_file.read_text(encoding="utf-8"))
            best_ckpt = out_dir / rec["best_checkpoint"]
            metrics, history = rec.get("best", {}), rec.get("history", [])
        else:
            best_ckpt = max(ckpts, key=lambda p: p.stat().st_mtime)
            metrics = self.evaluate(best_ckpt, val_csv)
        stopped = False
        if epoch_callback is not None:
            for m in history or [metrics]:
                if epoch_callback(int(m.get("epoch", 1)), m):
                    stopped = True
                    break
        match = NAME_RE.search(best_ckpt.name)
        epoch, step = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        return TrainResult(best_checkpoint=best_ckpt, best_epoch=epoch, best_step=step, metrics=metrics,
                           history=history, epochs_run=len(history), stopped_early=stopped,
                           seconds=time.perf_counter() - t0)

    def evaluate(self, checkpoint: str | Path, csv: str | Path, *, threshold: float | None = None) -> dict[str, Any]:
        s = self._spec()
        if not Path(checkpoint).is_file():
            raise CheckpointError(f"checkpoint {checkpoint} does not exist")
        with tempfile.TemporaryDirectory(prefix="deftpipe-cmd-") as tmp:
            tmp = Path(tmp)
            if not self._template(s, "evaluate"):
                scored = pd.read_csv(self.infer(checkpoint, csv, tmp / "scores.csv", threshold=threshold),
                                     dtype={"label": str}, keep_default_na=False)
                defect = scored["label"].astype(str).str.strip().str.upper() != PASS
                scores = scored["score"].astype(float).to_numpy()
                m = compute_metrics(defect.to_numpy(), scores, labels=scored["label"].tolist(), threshold=threshold)
                p = np.clip(scores, 1e-7, 1 - 1e-7)
                m["val_loss"] = float(-np.mean(np.where(defect, np.log(p), np.log(1 - p))))
                return m
            out_json = tmp / "metrics.json"
            stdout = self._run(s, "evaluate", {"spec": self._spec_file(s, tmp), "checkpoint": checkpoint,
                                               "csv": csv, "out_json": out_json})
            text = out_json.read_text(encoding="utf-8") if out_json.is_file() else stdout
        try:
            m = json.loads(text)
        except json.JSONDecodeError:
            raise DataError("adapter.evaluate printed no JSON object; make it print the metrics as JSON on "
                            "stdout (e.g. `deftpipe model evaluate --json`) or write {out_json}") from None
        if not isinstance(m, dict) or "far_pct" not in m:
            raise DataError("adapter.evaluate's JSON has no far_pct; it must report FAR at 100% recall")
        return m

    def infer(self, checkpoint: str | Path, csv: str | Path, out_csv: str | Path, *,
              threshold: float | None = None) -> Path:
        s = self._spec()
        rows = len(pd.read_csv(csv, dtype=str))
        with tempfile.TemporaryDirectory(prefix="deftpipe-cmd-") as tmp:
            produced = Path(tmp) / "inference.csv"
            self._run(s, "infer", {"spec": self._spec_file(s, Path(tmp)), "checkpoint": checkpoint, "csv": csv,
                                   "out_csv": produced})
            if not produced.is_file():
                raise DataError(f"adapter.infer finished but wrote no CSV at {{out_csv}} ({produced})")
            df = pd.read_csv(produced, dtype=str, keep_default_na=False)
        if "score" not in df.columns or len(df) != rows:
            raise DataError(f"adapter.infer's CSV must have the {rows} input rows and a score column "
                            f"(found {len(df)} rows, columns {', '.join(df.columns)})")
        if "prediction" not in df.columns:
            t = 0.5 if threshold is None else threshold
            df["prediction"] = np.where(df["score"].astype(float) >= t, FAIL, PASS)
        with atomic_path(out_csv) as tmp_csv:
            df.to_csv(tmp_csv, index=False)
        return Path(out_csv)

    def embed(self, checkpoint: str | Path, csv: str | Path) -> np.ndarray:
        s = self._spec()
        rows = len(pd.read_csv(csv, dtype=str))
        with tempfile.TemporaryDirectory(prefix="deftpipe-cmd-") as tmp:
            out_npy = Path(tmp) / "embeddings.npy"
            self._run(s, "embed", {"spec": self._spec_file(s, Path(tmp)), "checkpoint": checkpoint, "csv": csv,
                                   "out_npy": out_npy})
            if not out_npy.is_file():
                raise DataError(f"adapter.embed finished but wrote no array at {{out_npy}} ({out_npy})")
            emb = np.load(out_npy, allow_pickle=False)
        if emb.ndim != 2 or emb.shape[0] != rows:
            raise DataError(f"adapter.embed's array must be ({rows}, dim); found shape {emb.shape}")
        return emb.astype(np.float32, copy=False)


__all__ = ["CommandAdapter"]
