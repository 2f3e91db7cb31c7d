"""Issue 13: where the time of S vmapped seeds goes on a GPU (perfetto traces of none / local windows, S = 1 and 5).

Usage: PYTHONPATH=. python3 scripts/gpu/seed_profile.py DATA_DIR OUT_DIR [CONV_BATCHING [METHODS]]
(CONV_BATCHING: grouped (default) | blockdiag; METHODS: comma-separated, default none,local)
Writes OUT_DIR/trace_<method>_S<n>.json.gz (perfetto) and prints the wall time per window.
"""
import dataclasses
import glob
import os
import shutil
import sys
import tempfile
import time

import jax

from glocal_cli import bench
from glocal_cli.runner import SeedGroupRunner
from glocal_cli.tasks import build_task
from glocal_cli.train import load_splits

data, out = sys.argv[1], sys.argv[2]
conv_batching = sys.argv[3] if len(sys.argv) > 3 else "grouped"
methods = sys.argv[4].split(",") if len(sys.argv) > 4 else ("none", "local")
s = bench.bench_settings(data_dir=data, windows=3)
tasks = []
for seed in range(5):
    cfg = bench._lenet_cfg(s, 50 * 20, seed=seed)
    tasks.append((cfg, build_task(cfg, load_splits(cfg))))
for method in methods:
    for n in (1, 5):
        cfgs = [dataclasses.replace(c.resolved_hpo(), method=method) for c, _ in tasks[:n]]
        group = SeedGroupRunner([t.problem for _, t in tasks[:n]], cfgs, conv_batching)
        gs = group.init([t.phi0 for _, t in tasks[:n]])
        for _ in range(2):
            gs, _ = group.run_window(gs)
        jax.block_until_ready(gs)
        tdir = tempfile.mkdtemp(prefix=f"trace_{method}_{n}_")  # fresh: a glob below must find this trace only
        t0 = time.perf_counter()
        with jax.profiler.trace(tdir, create_perfetto_trace=True):
            for _ in range(3):
                gs, _ = group.run_window(gs)
            jax.block_until_ready(gs)
        print(method, n, f"{(time.perf_counter() - t0) / 3:.4f} s/window (traced)", flush=True)
        for f in glob.glob(f"{tdir}/**/*perfetto_trace.json.gz", recursive=True):
            shutil.copy(f, os.path.join(out, f"trace_{method}_S{n}.json.gz"))
            print(f, os.path.getsize(f))
