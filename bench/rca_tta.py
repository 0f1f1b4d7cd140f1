"""Does flip TTA change what the RCA finds? (issue 26, item 3: "TTA only where it changes a decision")

The loop's RCA scores the validation set with the model's own scoring (the mean over four flips for a
``flip_tta`` model) and calls the rows that fail at the operating point escapes / false alarms. Training
already scored the same set with the unflipped pass alone after every epoch, so the RCA could reuse those
scores and skip its four passes, if the failures they name were the same. This script measures that on
the checkpoints of a finished DEFT run: for each iteration's model and each FAR target, the failure set
(kind and row) from the unflipped pass against the one from the four-flip mean.

    python bench/rca_tta.py --run RESULTS/run_... --val WS/train/base/validation_set.csv --tag s20

Stored in ``bench/results/speed.json`` under ``rca_tta/<tag>``. Not timed; runs beside other work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_speed import _store  # bench/ is this script's folder (sys.path[0]): speed.json's one writer

TARGETS = (5.0, 1.0, 0.0)  # the default KPI target, a strict one, and the loop cell's "never met"


def failure_sets(checkpoint: Path, val_csv: Path) -> dict[str, dict]:
    from deftpipe.data import read_dataset
    from deftpipe.deft._rca import find_failures
    from deftpipe.model._torch_adapter import TorchAdapter
    from deftpipe.model._train import forward_rows, torch_threads

    with torch_threads():
        model, spec, _, data, device = TorchAdapter()._load(checkpoint, val_csv)
        one, _, _ = forward_rows(model, data, device, precision=spec.train.precision, tta=False)
        four, _, _ = forward_rows(model, data, device, precision=spec.train.precision, tta=True)
    rows = read_dataset(val_csv)
    out = {}
    for target in TARGETS:
        a, _, _ = find_failures(rows, one, target)
        b, _, _ = find_failures(rows, four, target)
        sa, sb = set(zip(a["kind"], a.index, strict=True)), set(zip(b["kind"], b.index, strict=True))
        out[f"far_target_{target:g}"] = {
            "failures_one_pass": len(sa), "failures_four_flips": len(sb), "in_both": len(sa & sb),
            "jaccard": round(len(sa & sb) / max(len(sa | sb), 1), 3),
            "kinds_one_pass": a["kind"].value_counts().to_dict(), "kinds_four_flips": b["kind"].value_counts().to_dict()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished run folder (results/run_*)")
    ap.add_argument("--val", type=Path, required=True, help="the validation CSV the run used")
    ap.add_argument("--tag", required=True)
    args = ap.parse_args()
    state = json.loads((args.run / "deft_state.json").read_text())
    cell = {label: failure_sets(Path(it["best_ckpt_path"]), args.val)
            for label, it in state["iterations"].items() if it.get("best_ckpt_path")}
    from deftpipe.data import read_dataset

    cell["validation_rows"] = len(read_dataset(args.val))
    _store(f"rca_tta/{args.tag}", cell)
    print(json.dumps(cell, indent=1))


if __name__ == "__main__":
    main()
