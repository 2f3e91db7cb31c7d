#!/usr/bin/env bash
# The paper-scale `glocal verify` protocol: LeNet on Fashion-MNIST, T = 20 000, tau = 50, sigma = 20, m = 10,
# batch 128, 10 % validation, seeds 0 and 1, 16 windows per seed, lr0 1e-3 and 0.1, every estimator (and glocal
# with if_empty zero / local), truncated 2tau/4tau look-aheads, both references (the single-order true global
# hypergradient and the expected global: its mean over K = --expected-orders minibatch orders, default 4), and
# the batch-size noise study (128/512/2048, 8 orders, window 20).
#
# Usage: scripts/gpu/verify_paper.sh [DATA_DIR] [OUT_DIR] [more `glocal verify` flags, which override the profile's]
#
# Cost: a checked window w costs (K + 1) runs with tangents from w to T = 400 windows of 50 steps, (K + 1) * 200
# windows on average over windows spread evenly; the glocal run up to the last checked window is ~400 windows.
# Sizing from the H200 measurements of issue 13 (docs/performance.md; one seed: 0.0385 s per 50-step window with
# tangents, 0.074-0.092 s per glocal window), K = 4:
#   per checked window   ~ 5 * 200 * 0.0385 s ~ 40 s
#   per (seed, lr0)      ~ 35 s (glocal run) + N * 40 s, plus about a minute of compilation per lr0
# so the full protocol (2 seeds x 16 windows x 2 lr0s) is ~45 min on an H200, and the reduced run that fits one
# 9-minute command is
#   scripts/gpu/verify_paper.sh DATA_DIR OUT_DIR --seeds 0 --windows-per-seed 4 --lr0s 0.001,0.1 --expected-orders 4
# (~2 x (35 + 4 x 40) s + compilation ~ 7-8 min on an H200; an H100 is about 1.3x slower: use 3 windows).
# verify.json / verify.md are rewritten after every checked window ("complete": false until the end), so a
# run stopped by a time limit keeps the windows it finished. Days on a 2-core CPU; ALLOW_CPU=1 with a tiny
# --steps checks the script there (e.g. --steps 100 --seeds 0 --windows 1 --lr0s 0.1 --problems classifier).
set -euo pipefail
DATA_DIR=${1:-data/raw}
OUT_DIR=${2:-results/verify_paper}
shift $(( $# < 2 ? $# : 2 ))
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jaxcache}
python -c "import jax, sys; d = jax.default_backend(); print('backend:', d); sys.exit(0 if d != 'cpu' or '${ALLOW_CPU:-0}' == '1' else 'no accelerator (set ALLOW_CPU=1 to run anyway)')"
time glocal verify --profile paper --data-dir "$DATA_DIR" --out "$OUT_DIR" "$@"
