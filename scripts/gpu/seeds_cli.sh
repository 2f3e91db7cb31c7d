#!/usr/bin/env bash
# Issue 13: `glocal train --seeds 0,1,2,3,4` on a GPU with conv_batching auto (blockdiag there) and grouped, and one
# seed alone: steady window (metrics.json window_s) and test accuracy per seed.
# Usage: scripts/gpu/seeds_cli.sh DATA_DIR OUT_DIR [STEPS] [METHODS]
set -uo pipefail
DATA=$1 OUT=$2 STEPS=${3:-2500} METHODS=${4:-"local glocal"}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
run() { python3 -m glocal_cli.cli train --dataset fmnist --data-dir "$DATA" --steps "$STEPS" "$@" 2>&1 | tail -2; }
for m in $METHODS; do
  for cb in auto grouped; do
    echo "== $m, 5 seeds, conv_batching $cb"; run --method "$m" --seeds 0,1,2,3,4 --conv-batching "$cb" --out "$OUT/$m-$cb/seed{seed}"
  done
  echo "== $m, seed 0 alone"; run --method "$m" --out "$OUT/$m-single/seed0"
done
mkdir -p "$OUT"
python3 - "$OUT" <<'PY'
import glob, json, sys
rows = {}
for f in sorted(glob.glob(f"{sys.argv[1]}/*/seed*/metrics.json")):
    m = json.load(open(f))
    rows.setdefault(f.split("/")[-3], []).append((m["window_s"], m["test_accuracy"], m["status"]))
for k, v in rows.items():
    print(k, "window_s", [round(x[0], 4) for x in v], "test_acc", [round(x[1], 4) for x in v], {x[2] for x in v})
json.dump(rows, open(f"{sys.argv[1]}/seeds_cli.json", "w"), indent=1)
PY
