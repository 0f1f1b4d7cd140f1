"""A stand-in for ``visual_changenet train|evaluate|inference -e SPEC [key=value ...]``: TAO's file contract.

It is what the ``virtualenv`` platform runs by default, so the TAO backend is tested end to end with
no container and no GPU. It is **not** TAO's model: it trains deftpipe's built-in siamese CNN (real
PyTorch training on the spec's CSVs and images) and writes what TAO writes:

* ``<results_dir>/train/status.json``: one JSON object per line; epoch lines carry ``kpi``
  (``val_loss``, ``val_fpr``, ``val_acc``);
* ``<results_dir>/train/model_epoch_EEE_step_SSSSS.pth``: Lightning-style checkpoints (0-based
  epoch, weights under ``state_dict`` with a ``model.`` prefix, ``epoch``, ``global_step``,
  ``hyper_parameters``);
* ``<results_dir>/inference/inference.csv``: the input CSV's columns plus ``siamese_score``
  (higher = more defective).

The stand-in trains at the images' own size (TAO resizes to ``image_width``); TAO's backbone, loss,
margins and augmentation keys are read but have no effect here.

Usage: ``python -m deftpipe.tao.standin train|evaluate|inference -e SPEC.yaml [dotted.key=value ...]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

PREFIX = "model."


def _status(folder: Path, **entry: Any) -> None:
    now = time.gmtime()
    line = {"date": time.strftime("%m/%d/%Y", now), "time": time.strftime("%H:%M:%S", now), **entry}
    with open(folder / "status.json", "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def tao_checkpoint_name(epoch0: int, step: int) -> str:
    return f"model_epoch_{epoch0:03d}_step_{step:05d}.pth"


def _deftpipe_spec(doc: dict[str, Any], source: Path):
    """The deftpipe spec the stand-in trains: the TAO spec translated, run by the built-in model."""
    from PIL import Image

    from deftpipe.data import ImageLayout, read_dataset
    from deftpipe.tao._spec import spec_from_tao

    spec = spec_from_tao(doc, source=source)
    spec.adapter.kind = "torch"
    spec.adapter.tao = None
    spec.tao = None
    spec.dataset.classify.test_csv = None
    csv = doc["dataset"]["classify"].get("train_dataset", {}).get("csv_path") or \
        doc["dataset"]["classify"]["infer_dataset"]["csv_path"]
    row = read_dataset(csv).iloc[0]
    with Image.open(ImageLayout.from_spec(spec).files(row["input_path"], row["object_name"])[0]) as im:
        spec.model.input_size = int(im.size[0])
    return spec


def _to_lightning(ckpt: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    return {"epoch": int(ckpt["epoch"]) - 1, "global_step": int(ckpt["step"]),
            "pytorch-lightning_version": "deftpipe-standin",
            "state_dict": {PREFIX + k: v for k, v in ckpt["state_dict"].items()},
            "hyper_parameters": {"experiment_spec": doc, "deftpipe_spec": ckpt["spec"]}}


def _from_lightning(path: str | Path) -> dict[str, Any]:
    """A deftpipe checkpoint dict from a stand-in (Lightning-style) checkpoint."""
    import torch

    from deftpipe.model import CHECKPOINT_FORMAT as FORMAT
    from deftpipe.model import CHECKPOINT_VERSION as VERSION

    lk = torch.load(path, map_location="cpu", weights_only=True)
    return {"format": FORMAT, "version": VERSION, "spec": lk["hyper_parameters"]["deftpipe_spec"],
            "state_dict": {k[len(PREFIX):]: v for k, v in lk["state_dict"].items() if k.startswith(PREFIX)},
            "metrics": {}, "epoch": int(lk["epoch"]) + 1, "step": int(lk["global_step"])}


def train(doc: dict[str, Any], source: Path) -> None:
    import torch

    from deftpipe.model import train_model

    out = Path(doc["train"]["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    _status(out, status="STARTED", verbosity="INFO", message="Starting Visual ChangeNet classify training (stand-in)")
    spec = _deftpipe_spec(doc, source)
    spec.train.keep_checkpoints = spec.train.num_epochs  # TAO keeps every checkpoint_interval epoch
    c = doc["dataset"]["classify"]
    n = spec.train.num_epochs

    def on_epoch(epoch: int, m: dict[str, Any]) -> bool:
        fpr = (m.get("pred_counts") or {})
        _status(out, status="RUNNING", verbosity="INFO", epoch=epoch - 1, max_epoch=n,
                message=f"Epoch {epoch - 1} done", kpi={"val_loss": m.get("val_loss"),
                                                        "val_fpr": m.get("far_pct", 0.0) / 100.0,
                                                        "val_auroc": m.get("auroc"), "pred_counts": fpr})
        return False

    with tempfile.TemporaryDirectory(prefix="standin_") as tmp:
        pre = spec.train.pretrained_model_path
        if pre:  # a stand-in checkpoint (TAO layout) -> deftpipe's own layout for the warm start
            spec.train.pretrained_model_path = str(Path(tmp) / "pretrained.pth")
            torch.save(_from_lightning(pre), spec.train.pretrained_model_path)
        train_model(spec, c["train_dataset"]["csv_path"], c["validation_dataset"]["csv_path"], Path(tmp) / "run",
                    epoch_callback=on_epoch)
        for p in sorted((Path(tmp) / "run").glob("model_epoch_*_step_*.pth")):
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
            target = out / tao_checkpoint_name(int(ckpt["epoch"]) - 1, int(ckpt["step"]))
            torch.save(_to_lightning(ckpt, doc), target.with_suffix(".tmp"))
            target.with_suffix(".tmp").replace(target)
    _status(out, status="SUCCESS", verbosity="INFO", message="Training finished successfully")


def _scores(doc: dict[str, Any], action: str, split: str) -> Any:
    """The ``split`` CSV's rows + ``siamese_score`` from ``<action>.checkpoint``."""
    import pandas as pd
    import torch

    from deftpipe.model import TorchAdapter

    csv = doc["dataset"]["classify"][split]["csv_path"]
    with tempfile.TemporaryDirectory(prefix="standin_") as tmp:
        ckpt = Path(tmp) / "model_epoch_001_step_001.pth"
        torch.save(_from_lightning(doc[action]["checkpoint"]), ckpt)
        scored = pd.read_csv(TorchAdapter().infer(ckpt, csv, Path(tmp) / "scores.csv"), dtype=str,
                             keep_default_na=False)
    rows = pd.read_csv(csv, dtype=str, keep_default_na=False)
    rows["siamese_score"] = scored["score"].astype(float).to_numpy()
    return rows


def inference(doc: dict[str, Any], source: Path) -> None:
    out = Path(doc["inference"]["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    _status(out, status="STARTED", verbosity="INFO", message="Starting inference (stand-in)")
    rows = _scores(doc, "inference", "infer_dataset")
    tmp_csv = out / "inference.csv.tmp"
    rows.to_csv(tmp_csv, index=False)
    tmp_csv.replace(out / "inference.csv")
    _status(out, status="SUCCESS", verbosity="INFO", message="Inference finished successfully")


def evaluate(doc: dict[str, Any], source: Path) -> None:
    """TAO's evaluate: the test set at ``model.classify.eval_margin`` (a pair is flagged when its
    siamese_score exceeds the margin), KPIs test_acc/test_fpr/test_fnr/defect_acc in status.json."""
    out = Path(doc["evaluate"]["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    _status(out, status="STARTED", verbosity="INFO", message="Starting evaluation (stand-in)")
    rows = _scores(doc, "evaluate", "test_dataset")
    margin = float(doc.get("model", {}).get("classify", {}).get("eval_margin", 0.5))
    flagged = rows["siamese_score"].astype(float) > margin
    defect = rows["label"].str.strip().str.upper() != "PASS"
    n_def, n_pass = int(defect.sum()), int((~defect).sum())
    kpi = {"test_acc": float((flagged == defect).mean()),
           "test_fpr": float((flagged & ~defect).sum() / max(n_pass, 1)),
           "test_fnr": float((~flagged & defect).sum() / max(n_def, 1)),
           "defect_acc": float((flagged & defect).sum() / max(n_def, 1))}
    _status(out, status="RUNNING", verbosity="INFO", message="Test metrics generated.", kpi=kpi)
    _status(out, status="SUCCESS", verbosity="INFO", message="Evaluation finished successfully")


def _override(doc: dict[str, Any], assignment: str) -> None:
    """A Hydra-style ``dotted.key=value`` override (TAO's CLI takes them after the spec)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise SystemExit(f"override {assignment!r} is not key=value")
    node = doc
    *parents, leaf = key.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["train", "evaluate", "inference"])
    ap.add_argument("-e", "--experiment_spec", required=True)
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the spec (as TAO's CLI)")
    args = ap.parse_intermixed_args(argv)  # ACTION -e SPEC k=v …: positionals on both sides of -e
    spec_file = Path(args.experiment_spec)
    doc = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    for o in args.overrides:
        _override(doc, o)
    {"train": train, "evaluate": evaluate, "inference": inference}[args.action](doc, spec_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
