"""`dvc plots show` draws the grid's curves: a tiny grid trains, `glocal report` writes the plot data, DVC renders it.

dvc.yaml's top-level ``plots:`` point at ``results/plots/<quantity>/`` (glocal_cli/report/plots.py); a
tiny LeNet grid (none / glocal, two seeds in one program each, 2 windows on 352 random images)
is trained into a copy of the repository's DVC files, reported, and rendered by DVC itself.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from glocal_cli.config import from_mapping
from glocal_cli.report import build_report
from glocal_cli.report.collect import Group, Run
from glocal_cli.report.plots import curve_rows, setting_name
from glocal_cli.train import run_seeds, seed_configs

REPO = Path(__file__).resolve().parents[1]
METHODS = ("none", "glocal")  # local: the same curves, a forward-mode compile more (~20 s)


def _dvc() -> str:
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None or not shutil.which("git"):
        pytest.skip("dvc or git not installed (pip install -e '.[pipeline]')")
    return dvc


def test_curves_are_the_seeds_mean_min_max_per_step():
    def run(seed, lrs):
        hist = {"step": np.array([10.0, 20.0, 30.0]), "lr": np.array(lrs)}
        return Run(Path(f"s{seed}"), "lenet", {"config": {"seed": seed}}, hist)

    g = Group("lenet", "fashion_mnist", 0.001, "glocal", (), [run(0, [1.0, 2.0, math.nan]), run(1, [3.0, 4.0, 5.0])])
    assert curve_rows(g, "lr") == [[10.0, 2.0, 1.0, 3.0], [20.0, 3.0, 2.0, 4.0], [30.0, 5.0, 5.0, 5.0]]
    assert curve_rows(g, "no_such_column") == []
    assert setting_name(g) == "fashion_mnist-lr0.001-glocal"
    assert setting_name(Group("ablation", "mnist", 0.1, "glocal", (6, 3))) == "mnist-lr0.1-glocal-sigma6-m3"


@pytest.mark.e2e
def test_dvc_plots_show_renders_learning_rate_curves_of_a_tiny_grid(tmp_path, tiny_data):
    dvc = _dvc()
    repo = tmp_path / "repo"
    for rel in ("dvc.yaml", "params.yaml", ".dvc/config"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, repo / rel)
    runs = repo / "data" / "runs"
    for method in METHODS:  # the grid's layout: data/runs/lenet/<dataset>-lr<lr0>-<method>/seed<k>
        base = dict(dataset="fashion_mnist", method=method, steps=20, tau=10, sigma=6, m=3, batch_size=32, lr0=0.1,
                    val_fraction=0.01, eval_every=1, checkpoint_every=0, data_dir=".",
                    out=str(runs / "lenet" / f"fashion_mnist-lr0.1-{method}" / "seed{seed}"))
        metrics = run_seeds(seed_configs(from_mapping(base), [0, 1]))
        assert [m["status"] for m in metrics] == ["complete", "complete"]
    build_report(runs, repo / "results")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny grid"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)

    res = subprocess.run([dvc, "plots", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    shown = json.loads(res.stdout)["data"]
    for method in METHODS:
        key = f"results/plots/learning_rate/lenet/fashion_mnist-lr0.1-{method}.csv"
        assert key in shown, sorted(shown)
        spec = shown[key][0]
        assert spec["type"] == "vega" and spec["revisions"] == ["workspace"]
        points = spec["content"]["data"]["values"]
        assert {p["field"] for p in points} == {"mean", "min", "max"}
        steps = sorted({float(p["step"]) for p in points})
        assert steps == [10.0, 20.0]
        lrs = {float(p["dvc_inferred_y_value"]) for p in points if p["field"] == "mean"}
        if method == "none":  # a fixed learning rate: one value
            assert len(lrs) == 1 and lrs.pop() == pytest.approx(0.1)
        else:  # tuned: it moved
            assert len(lrs) == 2
    for quantity in ("val_loss", "test_accuracy"):
        assert f"results/plots/{quantity}/lenet/fashion_mnist-lr0.1-glocal.csv" in shown

    out = tmp_path / "html"  # and the HTML page a user opens
    res = subprocess.run([dvc, "plots", "show", "-o", str(out)], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    page = (out / "index.html").read_text()
    assert all(f"learning_rate/lenet/fashion_mnist-lr0.1-{m}.csv" in page for m in METHODS)
