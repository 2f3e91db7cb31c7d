"""Cost of the baselines variants in inner-step equivalents, timed round-robin in one process (issue 19).

The table's cost column (`glocal report`, glocal_cli/report/baselines.py) comes from each
run's steady window time, measured hours apart on a shared CPU. This script is the
cross-check: every variant of params.yaml `grid.baselines` (one per method / inner
optimizer / schedule; lr0 does not change the work) is built through the product's code
(`load_splits`, `build_task`, `SeedGroupRunner`, the seeds in one program), compiled, and
then timed one window at a time in round-robin order, so that load from other processes
hits every variant alike. Reported: the median window per variant, and its cost in inner
steps of `none` (median window / none's median window × τ, times the run's windows).

Usage: PYTHONPATH=. python scripts/baselines_cost.py DATA_DIR OUT_JSON [ROUNDS] [SEEDS]
(dvc.yaml stage ``baselines_cost`` writes data/runs/baselines/cost.json, which `glocal report` reads;
SEEDS default "0": every variant stays in memory, about 0.4 GB each with one seed, 2 GB with five.)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import jax
import yaml

from glocal_cli import atomic
from glocal_cli.cli import parse_train
from glocal_cli.params import stage_command
from glocal_cli.runner import SeedGroupRunner
from glocal_cli.tasks import build_task
from glocal_cli.train import load_splits, seed_configs


def main(data_dir: str, rounds: int = 3, seeds: str = "0") -> dict:
    params = yaml.safe_load(open("params.yaml"))
    params["data"]["raw_dir"] = data_dir
    cmd = yaml.safe_load(open("dvc.yaml"))["stages"]["baselines"]["cmd"]
    seeds_ = [int(s) for s in seeds.split(",")]
    runners = {}
    for v in params["grid"]["baselines"]["variants"]:
        # the stage's own line, parsed as `glocal train` parses it (params file, profile, flags)
        cfg = parse_train(stage_command(cmd, params, {"variant": v})[2:])[0]
        cfgs = seed_configs(cfg, seeds_)
        name = cfgs[0].variant  # the report's label: none, local, glocal, prodigy, sgd-cosine, ...
        if name in runners:  # another lr0 of a grid: the same work per window
            continue
        datasets: dict = {}
        tasks = [build_task(c, load_splits(c, datasets)) for c in cfgs]
        runner = SeedGroupRunner([t.problem for t in tasks], [c.resolved_hpo() for c in cfgs])
        gs = runner.init([t.phi0 for t in tasks])
        t0 = time.perf_counter()
        gs, _ = runner.run_window(gs)
        jax.block_until_ready(gs)
        print(f"{name}: compiled and ran one window in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        runners[name] = [runner, gs, []]
    h = runners["none"][0].cfg  # the profile's τ and T, the same for every variant (none's step time is the unit)
    tau, windows = h.tau, h.steps // h.tau
    rounds = max(1, min(rounds, windows - 1))  # windows of one run: the compiling one + rounds
    for r in range(rounds):
        for name, entry in runners.items():
            runner, gs, times = entry
            t0 = time.perf_counter()
            gs, _ = runner.run_window(gs)
            jax.block_until_ready(gs)
            times.append(time.perf_counter() - t0)
            entry[1] = gs
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    step_s = statistics.median(runners["none"][2]) / tau
    out = {"device": jax.devices()[0].device_kind, "seeds": seeds_, "rounds": rounds, "tau": tau,
           "windows": windows, "none_step_s": step_s, "variants": {}}
    for name, (_, _, times) in runners.items():
        med = statistics.median(times)
        out["variants"][name] = {"window_s": times, "median_window_s": med,
                                 "inner_steps_per_window": med / step_s, "cost_inner_steps": med * windows / step_s}
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    result = main(args[0], *(int(args[2]),) if len(args) > 2 else (), *args[3:4])
    Path(args[1]).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(Path(args[1]), result)
