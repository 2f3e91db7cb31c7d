"""End to end: `dvc repro` of the quick profile in a copy of the repository (Fashion-MNIST only).

Copies the git-tracked files into a temporary folder, makes it a fresh git + DVC
repository, shrinks the grid (1 seed, 1 initial lr, methods none / local / glocal,
20 inner steps) in the copied params.yaml, reproduces the download, the three
training stages and the report with `dvc repro`, and checks the figures, the tables
and summary.json. About 2-4 minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import shared_datasets

REPO = Path(__file__).resolve().parents[1]
METHODS = ("none", "local", "glocal")


def _run(cmd, cwd, env, timeout=600):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_dvc_repro_quick_fashion_mnist(tmp_path):
    data = shared_datasets()
    if data is None or not (data / "fashion_mnist").is_dir():
        pytest.skip("../shared/datasets/fashion_mnist not found (set GLOCAL_SHARED_DATASETS)")
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None or not shutil.which("git"):
        pytest.skip("dvc or git not installed (pip install -e '.[pipeline]')")

    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    assert (repo / "dvc.yaml").is_file() and (repo / ".dvc" / "config").is_file()

    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["profile"] == "quick"
    params["data"]["source"] = str(data)
    params["data"]["datasets"] = ["fashion_mnist"]
    params["grid"].update(seeds=[0], methods=list(METHODS))
    params["grid"]["lenet"].update(datasets=["fashion_mnist"], lr0s=[0.001])
    params["profiles"]["quick"].update(steps=20, tau=10, sigma=6, m=3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)  # the copy's code, not an editable install elsewhere
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "copy"], repo, env)

    # The report also depends on the global and ablation folders: leave them empty here
    # (-s: reproduce exactly the named stages, in order, without their other upstream stages).
    for family in ("global", "ablation", "lt", "lt_wd"):
        (repo / "data" / "runs" / family).mkdir(parents=True, exist_ok=True)
    stages = ["download@fashion_mnist"] + [f"train@fashion_mnist-{m}-0-0.001" for m in METHODS] + ["report"]
    _run([dvc, "repro", "-s", *stages], repo, env)

    runs = repo / "data" / "runs" / "lenet"
    for m in METHODS:
        metrics = json.loads((runs / f"fashion_mnist-lr0.001-{m}-seed0" / "metrics.json").read_text())
        assert metrics["status"] == "complete"
    assert (runs / "fashion_mnist-lr0.001-glocal-seed0" / "dmd.npz").is_file()

    results = repo / "results"
    summary = json.loads((results / "summary.json").read_text())
    assert summary and all(isinstance(v, (int, float)) and math.isfinite(v) for v in summary.values())
    for m in METHODS:
        acc = summary[f"lenet/fashion_mnist/lr0.001/{m}/test_accuracy_mean"]
        assert 0.0 < acc <= 1.0
    figs = {p.name for p in (results / "figures").glob("*.png")}
    assert {"lenet_fashion_mnist_lr0.001.png", "dmd_eigenvalues.png"} <= figs
    table = (results / "tables" / "accuracy_lenet.md").read_text()
    assert "fashion_mnist" in table and "(n=1)" in table
    assert "figures/lenet_fashion_mnist_lr0.001.png" in (results / "README.md").read_text()

    # DVC sees the report's metrics; a second repro has nothing to do.
    shown = json.loads(_run([dvc, "metrics", "show", "--json"], repo, env).stdout)
    assert "results/summary.json" in json.dumps(shown)
    again = _run([dvc, "status", *stages], repo, env).stdout
    assert "changed" not in again, again
