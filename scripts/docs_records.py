"""The records behind the measured numbers of docs/sgld.md and docs/method.md, written from run folders.

Each record is a JSON file under docs/records/ (:mod:`glocal_cli.report.records`: provenance, setting, the
commands, every seed's values); the pages' cog blocks (:mod:`glocal_cli.report.published_docs`) print it.

To re-measure and rewrite them (about 25 minutes on a 2-core CPU shared with other work; RUNS is any scratch folder)::

    D=../shared/datasets; RUNS=/tmp/docs-runs
    LT="--params params.yaml --missing-ok -P lt_quick --task reweight --model lenet --dataset fashion_mnist
        --imbalance-factor 50 --seeds 0,1,2 --data-dir $D"          # the train_lt stage of dvc.yaml, one cell
    glocal train $LT --method none   --out $RUNS/lt/none/seed{seed}
    glocal train $LT --method local  --out $RUNS/lt/local/seed{seed}
    glocal train $LT --method glocal --out $RUNS/lt/glocal/seed{seed}
    glocal train $LT --method glocal --estimator glocal-strict --out $RUNS/lt/glocal-strict/seed{seed}
    glocal train $LT --method sgld   --out $RUNS/lt/sgld/seed{seed}
    glocal train $LT --method sgld --sgld-persist-z --out $RUNS/lt/sgld-persist-z/seed{seed}
    # docs/sgld.md "Collapse detection, measured": the issue's command, then with the default outer lr
    C="--dataset fmnist --task reweight --imbalance-factor 50 --method local --steps 40 --tau 10 --sigma 6 --m 3
       --data-dir $D"
    glocal train $C --outer-lr 0.1 --out $RUNS/collapse/outer-lr0.1
    glocal train $C --out $RUNS/collapse/default
    # docs/method.md "Near 1": the evidence run's glocal seed 0 and the README quick start
    glocal train --params params.yaml --missing-ok --task optimizer --model lenet --dataset fashion_mnist
        --lr0 0.001 --seeds 0 -P evidence --method glocal --estimator glocal --data-dir $D --out $RUNS/evidence/seed{seed}
    glocal train --dataset fmnist --data-dir $D --steps 500 --tau 20 --sigma 10 --m 4 --lr0 0.05 --val-fraction 0.02
        --out $RUNS/quickstart
    glocal train --dataset fmnist --data-dir $D --steps 500 --tau 20 --sigma 10 --m 4 --lr0 0.05 --val-fraction 0.02
        --estimator glocal-strict --out $RUNS/quickstart-strict
    PYTHONPATH=. python scripts/docs_records.py $RUNS      # writes the three records, copies the two runs' dmd.npz
    python -m glocal_cli.report.published                  # regenerates the pages' blocks

The near-one record's first row reads the CPU campaign's glocal runs (docs/records/paper_scale_cpu/glocal/seed*),
which the campaign itself commits; this script only names them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from glocal_cli import atomic
from glocal_cli.report import records
from glocal_cli.report.collect import read_run

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "records"

LT = ("glocal train --params params.yaml --missing-ok -P lt_quick --task reweight --model lenet --dataset fashion_mnist "
      "--imbalance-factor 50 --seeds 0,1,2 --data-dir ../shared/datasets")
LT_VARIANTS = {  # variant: its flags after LT
    "none": "--method none", "local": "--method local", "glocal": "--method glocal",
    "glocal-strict": "--method glocal --estimator glocal-strict", "sgld": "--method sgld",
    "sgld-persist-z": "--method sgld --sgld-persist-z",
}
COLLAPSE = ("glocal train --dataset fmnist --task reweight --imbalance-factor 50 --method local --steps 40 --tau 10 "
            "--sigma 6 --m 3 --data-dir ../shared/datasets")


def _runs(folder: Path) -> list:
    return [read_run(p.parent, folder) for p in sorted(folder.glob("*/metrics.json"))] or (
        [read_run(folder, folder)] if (folder / "metrics.json").is_file() else [])


def _outer_lr(run) -> float:
    """The outer Adam lr the run used: its config's, or the task default it resolved to."""
    from glocal_cli.config import from_mapping

    return from_mapping(run.config).resolved_outer_lr()


def _window_columns(run) -> dict:
    """Per window: the used hypergradient's norm and, for reweighting, the meta MLP's weights at the probe losses."""
    h = run.history
    out = {"h_used_norm": [float(x) for x in h.get("h_used_norm", [])]}
    for k in ("w(L=0.1)", "w(L=1)", "w(L=3)"):
        if k in h:
            out[k] = [float(x) for x in h[k]]
    return out


def lt_record(runs_dir: Path) -> dict:
    variants, all_runs = {}, []
    for name, flags in LT_VARIANTS.items():
        runs = sorted(_runs(runs_dir / "lt" / name), key=lambda r: r.seed)
        if not runs:
            raise SystemExit(f"no runs in {runs_dir / 'lt' / name}")
        all_runs += runs
        v = records.variant_values(runs)
        v["command"] = f"{LT} {flags}"
        v["test_balanced_accuracy"] = [records._num(r.metrics.get("test_balanced_accuracy")) for r in runs]
        v["windows"] = [_window_columns(r) for r in runs]
        variants[name] = v
    rec = records.new_record("lt_rerun", "docs/sgld.md Table 3b's Fashion-MNIST / 50 cell re-run (none, local, glocal "
                             "with the paper's estimator and with the strict rules, sgld with z reset and persistent)",
                             all_runs, "see scripts/docs_records.py")
    rec["setting"].update(task="reweight", imbalance_factor=50, profile="lt_quick", outer_lr=_outer_lr(all_runs[0]))
    rec["metric"] = "balanced test accuracy (mean per-class recall on the official test set)"
    rec["variants"] = variants
    return rec


def collapse_record(runs_dir: Path) -> dict:
    runs = {"outer_lr_0.1": _runs(runs_dir / "collapse" / "outer-lr0.1")[0],
            "default": _runs(runs_dir / "collapse" / "default")[0]}
    rec = records.new_record("collapse_probe", "docs/sgld.md 'Collapse detection, measured': the issue's command "
                             "with outer lr 0.1, and with the default outer lr", list(runs.values()),
                             "see scripts/docs_records.py")
    rec["runs"] = {}
    for name, r in runs.items():
        m = r.metrics
        rec["runs"][name] = {
            "command": COLLAPSE + (" --outer-lr 0.1" if name == "outer_lr_0.1" else ""),
            "status": m.get("status"), "failure": m.get("failure"), "outer_steps": m.get("outer_steps"),
            "test_accuracy": records._num(m.get("test_accuracy")), "hyperparams": m.get("hyperparams") or {},
            "outer_lr": _outer_lr(r), "steps": r.config.get("steps"), "windows": _window_columns(r),
            "commit": (m.get("provenance") or {}).get("commit"), "dirty": (m.get("provenance") or {}).get("dirty"),
        }
    return rec


def near_one_record(runs_dir: Path) -> dict:
    """Rows of windows whose DMD eigenvalues the table reads (folders with a dmd.npz, relative to the record)."""
    rows = [{"label": "σ = 20, m = 10, lr0 1e-3, τ = 50, T = 20 000: the CPU campaign's glocal runs",
             "runs": ["paper_scale_cpu/glocal/seed*"],  # every seed the campaign has committed
             "source": "paper_scale_cpu/campaign.json (docs/paper_scale_cpu.md)"}]
    copies = {"evidence_glocal_seed0": (runs_dir / "evidence" / "seed0",
                                        "σ = 10, m = 4, lr0 1e-3, τ = 20, T = 200 (the evidence run's `glocal`, seed 0)",
                                        "glocal train --params params.yaml --missing-ok --task optimizer --model lenet "
                                        "--dataset fashion_mnist --lr0 0.001 --seeds 0 -P evidence --method glocal "
                                        "--estimator glocal --data-dir ../shared/datasets"),
              "quickstart": (runs_dir / "quickstart",
                             "σ = 10, m = 4, lr0 0.05, τ = 20, T = 500 (README quick start, seed 0)",
                             "glocal train --dataset fmnist --data-dir ../shared/datasets --steps 500 --tau 20 "
                             "--sigma 10 --m 4 --lr0 0.05 --val-fraction 0.02"),
              "quickstart_strict": (runs_dir / "quickstart-strict", None,
                                    "glocal train --dataset fmnist --data-dir ../shared/datasets --steps 500 --tau 20 "
                                    "--sigma 10 --m 4 --lr0 0.05 --val-fraction 0.02 --estimator glocal-strict")}
    runs = []
    for name, (src, label, command) in copies.items():
        dst = RECORDS / "near_one" / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("dmd.npz", "history.csv", "metrics.json"):
            shutil.copy2(src / f, dst / f)
        run = read_run(dst, dst)
        runs.append(run)
        row = {"label": label, "runs": [f"near_one/{name}"], "command": command,
               "commit": (run.metrics.get("provenance") or {}).get("commit"),
               "dirty": (run.metrics.get("provenance") or {}).get("dirty"),
               "test_accuracy": records._num(run.metrics.get("test_accuracy"))}
        if label is not None:  # the strict quick start is not a row of the eigenvalue table, only of "DMD use"
            rows.append(row)
    rec = records.new_record("near_one", "docs/method.md 'Near 1': the DMD eigenvalues of real LeNet / Fashion-MNIST "
                             "windows (batch 128, exact DMD, RMS scaling)", runs, "see scripts/docs_records.py")
    rec["setting"] = {"model": "lenet", "dataset": "fashion_mnist", "batch_size": 128}
    rec["tols"] = [0.02, 0.05, 0.1, 0.2]
    rec["quantiles"] = [0.1, 0.5, 0.9]
    rec["rows"] = rows
    # docs/method.md "DMD use, README quick start": the two runs' metrics.json (copied beside the record)
    rec["dmd_use"] = [{"label": "strict rules (the default before issue 9)", "run": "near_one/quickstart_strict"},
                      {"label": "`glocal` (paper, tol 0.1 + nearest)", "run": "near_one/quickstart"}]
    return rec


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__)
        return 2
    runs_dir = Path(argv[0])
    for name, build in (("lt_fmnist50.json", lt_record), ("collapse_probe.json", collapse_record),
                        ("near_one.json", near_one_record)):
        rec = build(runs_dir)
        atomic.write_text(RECORDS / name, json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {RECORDS / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
