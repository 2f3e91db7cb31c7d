"""The paper-scale CPU campaign (issue 30): Fig. 2's setting, seeds 0-4 of none / local / glocal, unit by unit.

Every run of the campaign trains with the code of ONE commit (``pinned_commit`` in the plan),
checked out as a git worktree outside this checkout, with its own locked virtual environment;
so the table pairs runs of one training code, whatever main does meanwhile. Checkpoints stay
in the campaign folder (outside the work tree: a machine that is kept resumes them); each
finished unit's records (``metrics.json``, ``history.csv``, ``dmd.npz`` per seed) are copied to
``docs/records/paper_scale_cpu/<variant>/seed<k>/``, the variant's ``seeds.json`` (its seeds so far)
is rewritten, and both are committed at once, so a fresh machine loses nothing but the unit in progress.

The plan (committed): ``docs/records/paper_scale_cpu/campaign.json``: the pinned commit, the
command, the units in order and, for each finished unit, its wall time and the machine's load
while it ran (the 1-minute load average sampled every minute).

Usage (from the repository root, any Python 3.9+; the worktree's venv is made with uv)::

    python scripts/campaign.py status          # which units are done, running, left
    python scripts/campaign.py run             # run the units left, one after the other (resumes)
    python scripts/campaign.py run --one       # only the next unit
    nohup python scripts/campaign.py run > ../campaign/driver.log 2>&1 &

``--dir`` (default ``../campaign``) holds ``code/`` (the worktree), ``runs/<unit>/seed<k>/`` and
``logs/``. A unit whose folders are locked by a running ``glocal train`` is waited for, not started
twice. A unit is "done" when its records are in ``docs/records`` with a status a run ends with (``complete``,
``diverged`` or ``collapsed``: a numerical failure is a result, recorded). A unit may carry ``"set"`` (options
that replace the plan's, ``{"--lr0": "0.1"}``), ``"records"`` (a subfolder for that other setting, ``"lr0.1"``) and
``"variant"`` (the folder name of a variant other than its method: ``prodigy``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "records" / "paper_scale_cpu"
PLAN = RECORDS / "campaign.json"
RECORD_FILES = ("metrics.json", "history.csv", "dmd.npz")
LOAD_EVERY_S = 60.0


def load_plan() -> dict:
    return json.loads(PLAN.read_text())


def save_plan(plan: dict) -> None:
    tmp = PLAN.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(plan, indent=1) + "\n")
    os.replace(tmp, PLAN)


#: How a run that ended may end: its record is a result (a diverged run is one: numerical failure is recorded).
FINAL = ("complete", "diverged", "collapsed")


def variant_dir(unit: dict) -> Path:
    """``docs/records/paper_scale_cpu[/<records>]/<variant>``: a unit with ``"records"`` (a setting other than the
    plan's, e.g. ``"lr0.1"`` with ``"set": {"--lr0": "0.1"}``) keeps its runs in that subfolder; ``<variant>``: the
    unit's ``"variant"`` (``prodigy`` for ``--method none`` with ``"set": {"--inner-optimizer": "prodigy"}``, the
    name the report gives such runs), else its method."""
    return RECORDS / unit.get("records", "") / (unit.get("variant") or unit["method"])


def record_dir(unit: dict, seed: int) -> Path:
    return variant_dir(unit) / f"seed{seed}"


def ended(folder: Path) -> bool:
    """Whether the run in ``folder`` (a run folder or its copied record) ended: its metrics.json has a FINAL status."""
    m = folder / "metrics.json"
    return m.is_file() and json.loads(m.read_text()).get("status") in FINAL


def seed_done(unit: dict, seed: int) -> bool:
    return ended(record_dir(unit, seed))


def unit_done(unit: dict) -> bool:
    return all(seed_done(unit, s) for s in unit["seeds"])


def run_folder(base: Path, unit: dict, seed: int) -> Path:
    return base / "runs" / unit["name"] / f"seed{seed}"


def locked(folder: Path) -> bool:
    """Whether a running ``glocal train`` holds ``folder``'s lock (it is released when the process dies)."""
    lock = folder / ".glocal.lock"
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def ensure_code(base: Path, commit: str) -> Path:
    """The worktree at the pinned commit with its locked virtual environment; returns its ``glocal``."""
    code = base / "code"
    if not (code / ".git").exists():
        base.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(code), commit], cwd=ROOT, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True, check=True).stdout.strip()
    if head != commit:
        raise SystemExit(f"error: {code} is at {head}, the plan pins {commit}; remove the worktree or fix the plan")
    glocal = code / ".venv" / "bin" / "glocal"
    if not glocal.exists():
        subprocess.run([sys.executable, "-m", "venv", ".venv"], cwd=code, check=True)
        py = code / ".venv" / "bin" / "python"
        subprocess.run([str(py), "-m", "pip", "install", "-q", "uv>=0.13"], cwd=code, check=True)
        subprocess.run([str(code / ".venv" / "bin" / "uv"), "sync", "--locked", "--inexact", "--active", "--extra", "all",
                        "-q"], cwd=code, check=True, env={**os.environ, "VIRTUAL_ENV": str(code / ".venv")})
    return glocal


def unit_args(plan: dict, unit: dict) -> List[str]:
    """The plan's ``args`` with the unit's ``"set"`` applied: ``{"--lr0": "0.1"}`` replaces the value after
    ``--lr0`` (or appends the option when the plan does not give it)."""
    args = list(plan["args"])
    for flag, value in (unit.get("set") or {}).items():
        if flag in args:
            args[args.index(flag) + 1] = str(value)
        else:
            args += [flag, str(value)]
    return args


def command(plan: dict, unit: dict, base: Path, glocal: Path, data_dir: Path) -> List[str]:
    """The unit's ``glocal train`` line: its seeds in one program, each in ``runs/<unit>/seed<k>`` (the ``{seed}``
    template: a one-seed run given a plain ``--out`` would write into that folder itself)."""
    return [str(glocal), "train", *unit_args(plan, unit), "--method", unit["method"],
            "--seeds", ",".join(map(str, unit["seeds"])), "--data-dir", str(data_dir),
            "--out", str(base / "runs" / unit["name"] / "seed{seed}")]


def write_seeds_summary(unit: dict) -> Path:
    """``<variant_dir>/seeds.json``: every seed of the unit's variant (and setting) committed so far, whichever
    unit ran it, each with its record folder (from the repository root), status and test accuracy; the layout of
    ``glocal train --seeds-summary`` (which writes one program's seeds; a variant's seeds span units here)."""
    folder = variant_dir(unit)
    seeds = sorted(int(d.name[len("seed"):]) for d in folder.glob("seed*")
                   if d.name[len("seed"):].isdigit() and (d / "metrics.json").is_file())
    runs = []
    for s in seeds:
        m = json.loads((record_dir(unit, s) / "metrics.json").read_text())
        runs.append({"seed": s, "run_dir": os.path.relpath(record_dir(unit, s), ROOT), "status": m.get("status"),
                     "test_accuracy": m.get("test_accuracy")})
    path = folder / "seeds.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"seeds": seeds, "runs": runs}, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def adopt(unit: dict, base: Path) -> List[Path]:
    """Copy a finished unit's per-seed records into docs/records and rewrite the variant's ``seeds.json``;
    returns the paths to commit."""
    out = []
    for s in unit["seeds"]:
        src = run_folder(base, unit, s)
        metrics = json.loads((src / "metrics.json").read_text())
        if metrics.get("status") not in FINAL:
            raise SystemExit(f"error: {src} ended {metrics.get('status')!r}: {metrics.get('failure')}")
        dst = record_dir(unit, s)
        dst.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        out.append(dst)
    return out + [write_seeds_summary(unit)]


def rebuild_pages() -> List[Path]:
    """What the records feed, rebuilt before the commit so that the pages never lag their records: the
    paper-scale record, figure and page (docs/paper_scale_cpu.*), then every generated block of README.md
    and docs/*.md; with the checkout's own venv (``.venv``). The files it changed, or [] (with a line saying
    why) when it cannot."""
    py = ROOT / ".venv" / "bin" / "python"
    if not py.exists():
        print("no .venv in the checkout: the paper-scale docs are not rebuilt (run python -m "
              "glocal_cli.report.paper_scale and python -m glocal_cli.report.published)", flush=True)
        return []
    for args in (["-m", "glocal_cli.report.paper_scale"], ["-m", "glocal_cli.report.published"]):
        done = subprocess.run([str(py), *args], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-300:]}", flush=True)
            return []
    changed = subprocess.run(["git", "status", "--porcelain", "--", "README.md", "docs"], cwd=ROOT,
                             capture_output=True, text=True).stdout.splitlines()
    return [ROOT / line[3:] for line in changed if not line[3:].startswith("docs/records/")]


def commit_records(unit: dict, paths: List[Path], info: dict) -> None:
    """Commit the unit's records, the plan and the pages rebuilt from them (only those paths; whatever else
    is staged stays staged)."""
    rel = [str(p.relative_to(ROOT)) for p in paths + [PLAN] + rebuild_pages()]
    subprocess.run(["git", "add", "--", *rel], cwd=ROOT, check=True)
    load = ("load not sampled" if info["load_mean"] is None
            else f"load {info['load_mean']:.1f} (max {info['load_max']:.1f})")
    setting = "".join(f", {k} {v}" for k, v in (unit.get("set") or {}).items())
    statuses = sorted({json.loads((p / "metrics.json").read_text()).get("status") for p in paths if p.is_dir()})
    msg = (f"campaign: unit {unit['name']} ({unit['method']}{setting}, seeds {','.join(map(str, unit['seeds']))}; "
           f"{' / '.join(statuses)}) at the pinned commit: {info['wall_s'] / 60:.0f} min, {load}")
    done = subprocess.run(["git", "commit", "-q", "-m", msg, "--only", "--", *rel], cwd=ROOT)
    print("committed" if done.returncode == 0 else "could not commit (commit the records by hand)", rel, flush=True)


def run_unit(plan: dict, unit: dict, base: Path, glocal: Path, data_dir: Path) -> None:
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    folders = [run_folder(base, unit, s) for s in unit["seeds"]]
    loads: List[float] = []
    if any(locked(f) for f in folders):
        print(f"{unit['name']}: already running; waiting for it", flush=True)
        while any(locked(f) for f in folders):
            loads.append(os.getloadavg()[0])
            time.sleep(LOAD_EVERY_S)
    if not all(ended(f) for f in folders):
        cmd = command(plan, unit, base, glocal, data_dir)
        print(f"{unit['name']}: {' '.join(cmd)}", flush=True)
        with open(logs / f"{unit['name']}.log", "a") as log:
            proc = subprocess.Popen(cmd, cwd=glocal.parent.parent.parent, stdout=log, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                loads.append(os.getloadavg()[0])
                try:
                    proc.wait(timeout=LOAD_EVERY_S)
                except subprocess.TimeoutExpired:
                    pass
        if proc.returncode != 0:
            raise SystemExit(f"error: {unit['name']} exited {proc.returncode} (log {logs / (unit['name'] + '.log')})")
    walls = [json.loads((f / "metrics.json").read_text())["wall_s"] for f in folders]
    info = {"wall_s": max(walls), "load_mean": sum(loads) / len(loads) if loads else None,  # None: not sampled
            "load_max": max(loads) if loads else None, "load_samples": len(loads),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count()}
    paths = adopt(unit, base)
    plan = load_plan()
    plan.setdefault("finished", {})[unit["name"]] = info
    save_plan(plan)
    commit_records(unit, paths, info)


def status(plan: dict, base: Path) -> List[Dict]:
    rows = []
    for u in plan["units"]:
        folders = [run_folder(base, u, s) for s in u["seeds"]]
        if unit_done(u):
            state = "done"
        elif any(locked(f) for f in folders):
            state = "running"
        else:
            state = "left"
        where = ""
        ck = folders[0] / "checkpoint.json"
        if state != "done" and ck.is_file():
            where = f" (checkpoint at window {json.loads(ck.read_text())['outer_step']})"
        rows.append({"unit": u["name"], "state": state, "detail": where, **plan.get("finished", {}).get(u["name"], {})})
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("status", "run"))
    ap.add_argument("--dir", type=Path, default=ROOT.parent / "campaign", help="campaign folder (outside the work tree)")
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--one", action="store_true", help="run only the next unit")
    a = ap.parse_args(argv)
    plan = load_plan()
    base = a.dir.resolve()
    if a.action == "status":
        rows = status(plan, base)
        width = max((len(r["unit"]) for r in rows), default=0)
        for r in rows:
            load = "not sampled" if r.get("load_mean") is None else f"{r['load_mean']:.1f}"
            wall = f"  {r['wall_s'] / 60:.0f} min, load {load}" if "wall_s" in r else ""
            print(f"{r['unit']:>{width}}  {r['state']}{r['detail']}{wall}")
        return 0
    glocal = ensure_code(base, plan["pinned_commit"])
    for unit in plan["units"]:
        if unit_done(unit):
            continue
        run_unit(plan, unit, base, glocal, a.data_dir.resolve())
        if a.one:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
