#!/usr/bin/env bash
# Issue 13's GPU measurements in one job (about 6 min on one H100 / H200):
#   1. `glocal bench` at the paper's settings (τ 50, σ 20, m 10, batch 128, 6 000 validation examples):
#      Table 4, S = 1 and 5 seeds in one program, `glocal train` against the bench (T = 5 000 per method),
#      and the validation-cost variants of glocal windows;
#   2. two seeds in one program against two single runs on the GPU (same metrics to float tolerance).
# Usage: scripts/gpu/bench.sh [DATA_DIR] [OUT_DIR]   (DATA_DIR: a folder with fashion_mnist/ original files)
set -uo pipefail
DATA_DIR=${1:-data/raw}
OUT_DIR=${2:-results/gpu}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
GLOCAL="python3 -m glocal_cli.cli"
nvidia-smi -L || true
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"

echo "== 1. bench (paper settings) =="
time timeout ${BENCH_TIMEOUT:-300} $GLOCAL bench --data-dir "$DATA_DIR" --steps ${BENCH_STEPS:-1000} --seed-counts 1,5 \
  --train-windows ${TRAIN_WINDOWS:-100} \
  --variant "val_chunk=6000" --variant "val_precision=bfloat16" --variant "val_grad=forward" \
  --variant "val_precision=bfloat16;val_grad=forward" --variant "val_batch=5" --variant "val_batch=0" \
  --out "$OUT_DIR/bench.json" || echo "bench FAILED"

echo "== 2. two seeds in one program vs two single runs =="
time timeout ${SEEDS_TIMEOUT:-90} python3 - "$DATA_DIR" "$OUT_DIR" "${SEEDS_STEPS:-200}" <<'EOF' || echo "seed check FAILED"
import json, sys
from glocal_cli.config import from_mapping
from glocal_cli.train import run_seeds, run_training, seed_configs

data, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
res = {}
for method in ("local", "glocal"):
    base = dict(dataset="fashion_mnist", method=method, steps=steps, tau=20, sigma=10, m=4, batch_size=128, lr0=0.001,
                data_dir=data, eval_every=5, checkpoint_every=5)
    singles = [run_training(from_mapping(dict(base, seed=s, out=f"/tmp/single-{method}-{s}"))) for s in (0, 1)]
    group = run_seeds(seed_configs(from_mapping(dict(base, out=f"/tmp/group-{method}-{{seed}}")), [0, 1]))
    res[method] = [{k: (a[k], b[k]) for k in ("test_accuracy", "test_loss", "val_loss", "window_s")} | {"hyperparams": (a["hyperparams"], b["hyperparams"])}
                   for a, b in zip(singles, group)]
    for s, (a, b) in enumerate(zip(singles, group)):
        print(method, "seed", s, "single", a["test_accuracy"], a["test_loss"], "group", b["test_accuracy"], b["test_loss"],
              "window_s single/group", a["window_s"], b["window_s"])
json.dump(res, open(f"{out}/seeds_check.json", "w"), indent=1)
EOF
echo "== 3. validation options, sigma = 20 snapshots (times, h error, peak memory) =="
time timeout ${VAL_TIMEOUT:-90} python3 scripts/gpu/val_options.py --data-dir "$DATA_DIR" --snapshots 20 > "$OUT_DIR/val_options.txt" 2>&1 \
  || echo "val options FAILED or cut"
tail -40 "$OUT_DIR/val_options.txt"
ls -la "$OUT_DIR"
