"""GPU job: the seeds' convolutions batched block-diagonally (models.conv.seed_conv) instead of grouped.

1. seeds in one program (S = 1, 5; none / local / glocal; cuDNN convolutions): conv_batching grouped vs blockdiag;
2. the same 2-seed group trained with either on the GPU: the learned hyperparameters agree.
Writes OUT_DIR/conv_batching.json after every part (a cut job keeps what it measured).

(Issue 13 measured, with the registry rule that seed_conv replaced at 82e2d69, a third part: the σ recorded
validations of one seed batched block-diagonally; slower than grouped, and seed_conv batches seeds only.)

Usage: PYTHONPATH=. python3 scripts/gpu/conv_batching.py DATA_DIR OUT_DIR [WINDOWS] [quick] [seeds] [check]
("quick": the bench's small settings and S = 1, 2: a check of the script on a CPU; seeds / check: only
those parts, default both)
"""
import dataclasses
import json
import sys
import time

import jax
import numpy as np

from glocal_cli import bench

data, out = sys.argv[1], sys.argv[2]
windows = int(sys.argv[3]) if len(sys.argv) > 3 else 6
flags = set(sys.argv[4:])
quick = "quick" in flags
parts = (flags & {"seeds", "check"}) or {"seeds", "check"}
counts = (1, 2) if quick else (1, 5)
dev = jax.devices()[0]
res = {"device": f"{dev.platform}:{dev.device_kind}", "jax": jax.__version__, "windows": windows}
t0 = time.time()


def save(msg):
    res["elapsed_s"] = time.time() - t0
    with open(f"{out}/conv_batching.json", "w") as f:
        json.dump(res, f, indent=1)
    print(f"[{time.time() - t0:5.0f}s] {msg}", flush=True)


# 1. seeds in one program, the two rules (cuDNN convolutions, the accelerator default val_grad=forward)
res["seeds"] = {}
for mode in ("blockdiag", "grouped") if "seeds" in parts else ():
    s = bench.bench_settings(quick, data_dir=data, windows=windows, seed_counts=counts, conv_impl="lax",
                             conv_batching=mode)
    r = bench.time_seed_groups(s)
    res["seeds"][mode] = r
    save(f"seeds {mode}: window_s {json.dumps(r['window_s'])} t(S)/t1 {json.dumps(r['time_over_one'])} "
         f"errors {r['errors']}")

if "check" not in parts:
    sys.exit(0)

# 2. the same 2-seed glocal group, grouped and block-diagonal: learned hyperparameters after 3 windows
from glocal_cli.runner import SeedGroupRunner  # noqa: E402
from glocal_cli.tasks import build_task  # noqa: E402
from glocal_cli.train import load_splits  # noqa: E402

s = bench.bench_settings(quick, data_dir=data, windows=3, conv_impl="lax")
phis = {}
for mode in ("grouped", "blockdiag"):
    tasks, datasets = [], {}
    for seed in (0, 1):
        cfg = dataclasses.replace(s.train, hpo=dataclasses.replace(s.train.hpo, seed=seed, steps=3 * s.train.hpo.tau,
                                                                   method="glocal"))
        tasks.append((cfg, build_task(cfg, load_splits(cfg, datasets))))
    group = SeedGroupRunner([t.problem for _, t in tasks], [c.resolved_hpo() for c, _ in tasks], mode)
    state = group.init([t.phi0 for _, t in tasks])
    for _ in range(3):
        state, _ = group.run_window(state)
    phis[mode] = np.asarray(jax.device_get(state.phi))
rel = float(np.max(np.abs(phis["blockdiag"] - phis["grouped"]) / (np.abs(phis["grouped"]) + 1e-12)))
res["group_check"] = {"phi_grouped": phis["grouped"].tolist(), "phi_blockdiag": phis["blockdiag"].tolist(),
                      "max_rel_diff": rel}
save(f"group check: phi max relative difference {rel:.2e}")
