#!/usr/bin/env python3
"""The paper's results at the paper's scale: one prepared device job (issue 18), run part by part.

Every training part runs the pipeline's own paper-profile command, the line that
`dvc exp run -S grid.evidence.profile=paper` runs for a stage of `evidence`::

    glocal train --params params.yaml --missing-ok --task optimizer --model lenet --dataset fashion_mnist
      --lr0 LR0 --seeds 0,1,2,3,4 -P paper --method METHOD [--estimator E] --data-dir DATA
      --out RUNS/evidence/fashion_mnist-lrLR0-VARIANT/seed{seed} --seeds-summary RUNS/evidence/.../seeds.json

(Fashion-MNIST, LeNet, T = 20 000, τ 50, σ 20, m 10, batch 128, 10 % validation; params.yaml's
`profiles.paper`). After each command the results so far are written to OUT, so a time-out
keeps everything before it:

    OUT/paper_scale.json  the record of every finished run (glocal_cli.report.paper_scale)
    OUT/paper_scale.md    its table: per-seed accuracies, glocal − local and its standard error
    OUT/runs.tar.gz       each run's metrics.json, history.csv, dmd.npz and the seeds summaries
    OUT/bench.json, OUT/verify.json, OUT/verify.md   part c
    OUT/baselines.md      part d: the What-should-I-use table (with part a's none / local / glocal)
    OUT/log.txt           the commands, their output, nvidia-smi, times

Parts, in order, with the device time each is expected to take (from the H200 window times of
docs/performance.md, issue 13: 0.0104 / 0.0385 / 0.074-0.092 s a window of one seed for none /
local / glocal; five seeds in one program 2.35x / 3.0x / 4.3x that; plus about 30 s of start-up
and compilation a command; an H100 is extrapolated at about 1.3x an H200):

    part  what                                                        H200     H100
    a     lr0 1e-3, 5 seeds: none, local, glocal, glocal-mean         ~8 min   ~10 min
            (none 0.7, local 1.5, glocal 3, glocal-mean 3)
    b     lr0 5e-3 and 0.1, 3 seeds: none, local, glocal              ~5 min   ~6.5 min
    c     glocal bench (Table 4, paper settings) + reduced paper      ~5 min   ~6.5 min
            verify (LeNet, T = 20 000, seed 0, lr0 1e-3 and 0.1,
            expected-global reference)
    d     baselines at T = 20 000: the `baselines` stage's lines      ~12 min  ~16 min
            (dvc.yaml, grid.baselines) at the paper profile, 5 seeds,
            every variant but none / local / glocal (18 commands, ~40 s
            each): a command of its own (`--parts d --budget 560`)

A device command may run 10 minutes and the first must end within 9: run part a alone first
(`--parts a --budget 520`), then `--parts b,c` in a second command with what is left. Each part
is skipped (and said so) when its estimate does not fit the remaining --budget; a started
command is cut at the budget's end (its run folder keeps its checkpoint).

On the device (bare machine, no network; the dataset files carried in the git-ignored .devdata/):

    GLOCAL_GIT_COMMIT=<sha here> python3 scripts/gpu/paper.py --parts a --data-dir .devdata --out $OUT --budget 520

Python packages missing there (see the device README) travel as wheels in .whl/: the script
installs them into /tmp/site first. On a CPU, `--dry-run` runs every part at a tiny T (the
test tests/test_gpu_paper.py does, with params.yaml's quick profile, T = 40, so the job cannot rot
between device sessions).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATASET = "fashion_mnist"

#: part -> [(name, seconds expected on an H200, argv after `glocal`)]; built by :func:`plan`.
ESTIMATES_H200 = {
    ("a", "none"): 45, ("a", "local"): 95, ("a", "glocal"): 185, ("a", "glocal-mean"): 185,
    ("b", "none"): 25, ("b", "local"): 45, ("b", "glocal"): 90,
    ("c", "bench"): 120, ("c", "verify"): 180,
}
#: part d: each baselines command (method none, a fixed inner optimizer, 5 seeds): start-up and compile + 400 windows
BASELINE_ESTIMATE_H200 = 40
VARIANTS = {"none": ("none", None), "local": ("local", None), "glocal": ("glocal", "glocal"),
            "glocal-mean": ("glocal", "mean")}


def train_argv(variant: str, lr0: float, seeds: str, data: str, runs: Path, dry: bool) -> list:
    """The evidence stage's command at the paper profile (dry run: params.yaml's quick profile, T = 40)."""
    method, estimator = VARIANTS[variant]
    name = f"{DATASET}-lr{lr0:g}-{variant}"
    argv = ["train", "--params", "params.yaml", "--missing-ok", "--task", "optimizer", "--model", "lenet",
            "--dataset", DATASET, "--lr0", f"{lr0:g}", "--seeds", seeds, "-P", "quick" if dry else "paper", "--method", method]
    if estimator is not None:
        argv += ["--estimator", estimator]
    argv += ["--data-dir", data, "--out", str(runs / "evidence" / name / "seed{seed}"),
             "--seeds-summary", str(runs / "evidence" / name / "seeds.json")]
    return argv


def plan(parts, data: str, runs: Path, out: Path, dry: bool) -> list:
    """``[(part, name, argv)]`` in running order."""
    seeds_a, seeds_b = ("0,1", "0") if dry else ("0,1,2,3,4", "0,1,2")
    steps = []
    if "a" in parts:
        steps += [("a", v, train_argv(v, 1e-3, seeds_a, data, runs, dry)) for v in ("none", "local", "glocal", "glocal-mean")]
    if "b" in parts:
        for lr0 in (5e-3, 0.1):
            steps += [("b", v, train_argv(v, lr0, seeds_b, data, runs, dry)) for v in ("none", "local", "glocal")]
    if "c" in parts:
        bench = ["bench", "--data-dir", data, "--out", str(out / "bench.json")]
        bench += ["--quick", "--steps", "20", "--seed-counts", "0", "--train-windows", "0"] if dry else \
                 ["--steps", "1000", "--seed-counts", "1,5", "--train-windows", "20"]
        verify = ["verify", "--data-dir", data, "--out", str(runs.parent / "verify")]
        verify += ["--profile", "quick"] if dry else \
                  ["--profile", "paper", "--seeds", "0", "--windows-per-seed", "3", "--lr0s", "0.001,0.1"]
        steps += [("c", "bench", bench), ("c", "verify", verify)]
    if "d" in parts:
        steps += [("d", name, argv) for name, argv in baselines_plan(data, runs, dry)]
    return steps


def baselines_plan(data: str, runs: Path, dry: bool) -> list:
    """Part d: the `baselines` stage's own lines (dvc.yaml, grid.baselines) at the paper profile (issue 19).

    Every variant except none / local / glocal (part a runs those at the same setting), in
    params.yaml's order, 5 seeds in one program each (dry run: the quick profile, one seed).
    ``[(name, argv after `glocal`)]``; a tuned grid's lr0s are separate commands.
    """
    import yaml

    sys.path.insert(0, str(ROOT))
    from glocal_cli.params import stage_command

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    grid = params["grid"]["baselines"]
    grid.update(profile="quick" if dry else "paper", seeds="0" if dry else "0,1,2,3,4")
    params["data"]["raw_dir"] = data
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["baselines"]["cmd"]
    steps = []
    for v in grid["variants"]:
        if v["name"] in ("none", "local", "glocal"):
            continue
        argv = stage_command(cmd, params, {"variant": v})[1:]
        argv = [a.replace("data/runs/", str(runs) + "/", 1) if a.startswith("data/runs/") else a for a in argv]
        steps.append((f"{v['name']}-lr{v['lr0']}", argv))
    return steps


def baselines_markdown(runs: Path) -> str:
    """The report's "What should I use?" table from part d's runs and part a's none / local / glocal at lr0 1e-3."""
    from glocal_cli.report import baselines
    from glocal_cli.report.collect import collect_runs, group_runs

    found, _ = collect_runs(runs)
    groups = [g for g in group_runs(found).values() if g.family == "baselines" or
              (g.family == "evidence" and g.lr0 == 1e-3 and g.method in ("none", "local", "glocal"))]
    text, _ = baselines.baselines_table(groups)
    return text


def _log(out: Path, text: str) -> None:
    print(text, flush=True)
    with open(out / "log.txt", "a") as f:
        f.write(text + "\n")


def save_results(runs: Path, out: Path, device: str, note: str) -> None:
    """paper_scale.json / .md from the finished runs, and a tarball of the runs' small files (never raises)."""
    sys.path.insert(0, str(ROOT))
    try:
        from glocal_cli.report import paper_scale, paper_scale_page

        evidence = runs / "evidence"
        if evidence.is_dir():
            record = paper_scale.collect(evidence, device=device, note=note)
            (out / "paper_scale.json").write_text(paper_scale.to_json(record))
            (out / "paper_scale.md").write_text(paper_scale_page.markdown(record))
    except Exception as e:  # noqa: BLE001 (a partial result must not stop the job)
        _log(out, f"paper_scale: not written ({type(e).__name__}: {e})")
    try:
        if (runs / "baselines").is_dir():
            (out / "baselines.md").write_text(baselines_markdown(runs) + "\n")
    except Exception as e:  # noqa: BLE001
        _log(out, f"baselines.md: not written ({type(e).__name__}: {e})")
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for p in sorted(runs.rglob("*")):
            if p.is_file() and (p.name in ("metrics.json", "history.csv", "dmd.npz", "verify.json", "verify.md")
                                or p.name.endswith("seeds.json")):
                tar.add(p, arcname=str(p.relative_to(runs.parent)))
    for name in ("verify.json", "verify.md"):
        src = runs.parent / "verify" / name
        if src.is_file():
            shutil.copy(src, out / name)


def device_name() -> str:
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return "cpu"


def install_carried_wheels(env: dict, out: Path) -> None:
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    if not wheels:
        return
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--target", "/tmp/site", *map(str, wheels)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    _log(out, f"carried wheels: {len(wheels)} ({'installed' if res.returncode == 0 else res.stderr[-500:]})")
    env["PYTHONPATH"] = "/tmp/site" + os.pathsep + env.get("PYTHONPATH", "")


def check(parts, data: str, dry: bool) -> int:
    """Parse every planned command as `glocal` would (options, values, params.yaml, profile); run nothing."""
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    from glocal_cli import cli

    bad = 0
    for part, name, argv in plan(parts, data, Path("/tmp/gpu_paper_check/runs"), Path("/tmp/gpu_paper_check"), dry):
        try:
            warnings = cli.check_command(argv)
        except Exception as e:  # noqa: BLE001 (report every command's problem, then fail)
            warnings, bad = [f"error: {type(e).__name__}: {e}"], bad + 1
        print(f"[{part}/{name}] {'ok' if not warnings else '; '.join(warnings)}")
        bad += any(w.startswith("warning:") for w in warnings)
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="a", help="comma-separated parts, in order: a,b,c,d (default a)")
    ap.add_argument("--data-dir", default=".devdata", help="a folder with fashion_mnist/ original files, or data/raw")
    ap.add_argument("--out", default=os.environ.get("OUT", "results/gpu_paper"), help="results folder ($OUT on the device)")
    ap.add_argument("--work", default=None, help="run folders (default: OUT/../gpu_paper_runs, outside OUT)")
    ap.add_argument("--budget", type=float, default=520.0, help="seconds this command may use in all")
    ap.add_argument("--dry-run", action="store_true", help="every part at a tiny T on the CPU (minutes)")
    ap.add_argument("--check", action="store_true",
                    help="parse every command of the parts and build its config, run nothing (seconds)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in "abcd" or len(p) != 1]
    if bad:
        print(f"error: --parts {args.parts!r}: choose from a, b, c, d", file=sys.stderr)
        return 2
    if args.check:
        return check(parts, args.data_dir, args.dry_run)
    t0 = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(args.work).resolve() if args.work else out.parent / f"{out.name}_runs" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.dry_run:
        env.setdefault("JAX_PLATFORMS", "cpu")
    install_carried_wheels(env, out)
    device = device_name()
    speed = 0.0 if args.dry_run else (1.3 if "H100" in device else 1.0)  # dry runs: no estimates
    _log(out, f"gpu_paper: parts {','.join(parts)} on {device}, budget {args.budget:.0f} s, dry-run {args.dry_run}")
    version = subprocess.run([sys.executable, "-m", "glocal_cli.cli", "--version"], cwd=ROOT, env=env,
                             capture_output=True, text=True)
    _log(out, version.stdout + version.stderr)
    note = ("dry run: tiny T on the CPU, not a result" if args.dry_run else
            f"scripts/gpu/paper.py --parts {args.parts}")
    failures = 0
    for part, name, cmd in plan(parts, args.data_dir, runs, out, args.dry_run):
        left = args.budget - (time.monotonic() - t0)
        need = ESTIMATES_H200.get((part, name), BASELINE_ESTIMATE_H200) * speed
        if need > left:
            _log(out, f"[{part}/{name}] skipped: expected {need:.0f} s, {left:.0f} s left of the budget")
            continue
        _log(out, f"[{part}/{name}] glocal {' '.join(cmd)}")
        t1 = time.monotonic()
        try:
            res = subprocess.run([sys.executable, "-m", "glocal_cli.cli", *cmd], cwd=ROOT, env=env, capture_output=True,
                                 text=True, timeout=max(1.0, left - 15))
            code, text = res.returncode, (res.stdout[-4000:] + res.stderr[-4000:])
        except subprocess.TimeoutExpired as e:
            code, text = 124, f"cut at the budget's end ({e.timeout:.0f} s)"
        failures += code != 0
        _log(out, f"[{part}/{name}] exit {code} in {time.monotonic() - t1:.0f} s\n{text}")
        save_results(runs, out, device, note)
    _log(out, f"gpu_paper: done in {time.monotonic() - t0:.0f} s, {failures} failed command(s)")
    if (out / "paper_scale.md").is_file():
        print((out / "paper_scale.md").read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
