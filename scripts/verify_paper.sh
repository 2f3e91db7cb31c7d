#!/usr/bin/env bash
# The paper-scale `glocal verify` protocol: LeNet on Fashion-MNIST, T = 20 000, tau = 50, sigma = 20, m = 10,
# batch 128, 10 % validation, seeds 0 and 1, 16 windows per seed, lr0 1e-3 and 0.1, every estimator, truncated
# 2tau/4tau look-aheads, and the batch-size noise study (128/512/2048, 8 orders, window 20).
# A GPU job: about 640 000 inner steps with tangents for the truths, estimated 15-25 min on one H100;
# days on a 2-core CPU. Usage: scripts/verify_paper.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
DATA_DIR=${1:-data/raw}
OUT_DIR=${2:-results/verify_paper}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jaxcache}
python -c "import jax, sys; d = jax.default_backend(); print('backend:', d); sys.exit(0 if d != 'cpu' or '${ALLOW_CPU:-0}' == '1' else 'no accelerator (set ALLOW_CPU=1 to run anyway)')"
time glocal verify --profile paper --data-dir "$DATA_DIR" --out "$OUT_DIR"
