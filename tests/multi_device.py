"""Runs in a subprocess with several fake CPU devices (``tests/test_seed_devices.py`` starts it).

``XLA_FLAGS=--xla_force_host_platform_device_count=N`` only takes effect before JAX
starts its CPU backend, so the checks that need N devices run here, in a fresh
interpreter, and hand their results back as a JSON file; the test asserts on them.

    python tests/multi_device.py runner OUT.json     # SeedGroupRunner on 1, 2, 4 devices
    python tests/multi_device.py cli DATA_DIR OUT METHOD [GROUPS]  # `glocal train --seeds ...` (the CLI entry point)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def runner(out: str) -> None:
    """local and glocal on the float64 quadratic: 4 seeds on 1, 2, 4 devices; 3 seeds on 1 and 2 (padded to 4).

    (none's sharded window: the CLI test, which trains with --method none.)"""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from glocal_cli.hpo import HPOConfig
    from glocal_cli.runner import SeedGroupRunner
    from test_seeds import _quadratic

    results = {"n_devices": len(jax.devices()), "runs": []}
    for method in ("local", "glocal"):
        for n_seeds, device_counts in ((4, (1, 2, 4)), (3, (1, 2))):
            cfgs = [HPOConfig(method=method, steps=30, tau=10, sigma=8, m=3, outer_lr=0.05, seed=s)
                    for s in range(n_seeds)]
            problems = [_quadratic(s) for s in range(n_seeds)]
            for n_dev in device_counts:
                group = SeedGroupRunner(problems, cfgs, devices=jax.devices()[:n_dev])
                gs = group.init([np.zeros(2)] * n_seeds)
                val, used, n_est = [], [], []
                while not group.done(gs):
                    gs, win = group.run_window(gs)
                    a = jax.device_get(win)
                    val.append(a.val_loss.tolist())
                    used.append(a.hypergrad_used.tolist())
                    n_est.append(None if win.dmd is None else len(win.dmd))
                spread = {len(x.sharding.device_set) for x in jax.tree_util.tree_leaves((gs.inner, gs.phi, gs.outer))}
                results["runs"].append({
                    "method": method, "n_seeds": n_seeds, "devices_given": n_dev,
                    "n_devices": group.n_devices, "n_padded": group.n_padded,
                    "state_devices": sorted(spread),
                    "inner": [np.asarray(group.slice(gs, s).inner).tolist() for s in range(n_seeds)],
                    "phi": [np.asarray(group.slice(gs, s).phi).tolist() for s in range(n_seeds)],
                    "val_loss": val, "hypergrad_used": used, "n_estimates": n_est,
                })
    Path(out).write_text(json.dumps(results))


def cli(data_dir: str, out: str, method: str, groups: str = "one,all,padded") -> None:
    """``glocal train`` runs into ``out/<group>/s<seed>``: ``one``: ``--seeds 0,1,2,3`` on one device; ``all``: the
    same on every device (4); ``padded``: ``--seeds 0,1,2`` on 2 devices (padded to 4)."""
    from glocal_cli.cli import main

    common = ["train", "--method", method, "--lr0", "0.001", "--steps", "20", "--tau", "10", "--sigma", "6",
              "--m", "3", "--batch-size", "32", "--val-fraction", "0.05", "--eval-every", "1",
              "--checkpoint-every", "1", "--data-dir", data_dir]
    runs = {
        "one": ["--seeds", "0,1,2,3", "--seed-devices", "1"],
        "all": ["--seeds", "0,1,2,3"],
        "padded": ["--seeds", "0,1,2", "--seed-devices", "2"],
    }
    for name in groups.split(","):
        main([*common, *runs[name], "--out", f"{out}/{name}/s{{seed}}"])


if __name__ == "__main__":
    {"runner": runner, "cli": cli}[sys.argv[1]](*sys.argv[2:])
