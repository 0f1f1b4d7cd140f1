#!/usr/bin/env bash
# Real minutes per epoch of DeepPCB model variants: one epoch of `deftpipe model train` on a fold's
# full training set (bench_generalisation.py's fold CSVs), both cores, quiet box. Each variant is a
# workspace spec; the epoch's seconds (training + validation, decode excluded) go to
# bench/results/epoch_cost.json.
# Usage: [FOLD=f3_0] bench/bench_epoch_cost.sh WS_ROOT WS/SPEC:LABEL... (see docs/model.md)
#   e.g. bench/bench_epoch_cost.sh /tmp/model/ws base/baseline_spec:context1 \
#        ctx2/baseline_spec:context2 ctx2/mconv_spec:context2_conv
set -euo pipefail
root=$1; fold=${FOLD:-f3_0}; shift
out=$(cd "$(dirname "$0")" && pwd)/results/epoch_cost.json
for v in "$@"; do
  spec=${v%%:*}; label=${v##*:}; ws=$root/${spec%%/*}
  run=$(mktemp -d)/run
  deftpipe model train --spec "$ws/specs/${spec##*/}.yaml" --train "$ws/folds/$fold/train.csv" \
    --val "$ws/folds/$fold/val.csv" --out "$run" --epochs 1 --json >/dev/null 2>&1
  python3 - "$run/metrics.json" "$out" "$label" "$fold" <<'PY'
import json, sys, os
m = json.load(open(sys.argv[1])); out = sys.argv[2]
data = json.load(open(out)) if os.path.exists(out) else {}
h = m["history"][0]
data[f"{sys.argv[4]}/{sys.argv[3]}"] = {"epoch_seconds": h["epoch_seconds"], "threads": os.cpu_count(),
    "context": m["spec"]["model"]["context"], "fusion": m["spec"]["model"]["fusion"],
    "flip_tta": m["spec"]["model"].get("flip_tta", False), "load_avg": float(open("/proc/loadavg").read().split()[0])}
open(out, "w").write(json.dumps(data, indent=2) + "\n")
print(sys.argv[3], h["epoch_seconds"])
PY
done
