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
from data_fixtures import real_data_dir

REPO = Path(__file__).resolve().parents[1]
METHODS = ("none", "local", "glocal")


def _run(cmd, cwd, env, timeout=600):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _dvc() -> str:
    """The dvc executable beside this interpreter (or on PATH); skips when dvc or git is missing."""
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None or not shutil.which("git"):
        pytest.skip("dvc or git not installed (pip install -e '.[pipeline]')")
    return dvc


def _copy_repo(tmp_path: Path) -> Path:
    """The tracked files of this repository, copied to ``tmp_path/repo``."""
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, repo / rel)
    assert (repo / "dvc.yaml").is_file() and (repo / ".dvc" / "config").is_file()
    return repo


def _git_commit_env(repo: Path) -> dict:
    """Commit the copy as a git repository; the environment runs the copy's code (not an editable install)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        _run(cmd, repo, env)
    return env


@pytest.mark.e2e
@pytest.mark.realdata
def test_dvc_repro_quick_fashion_mnist(tmp_path, shared_data):
    data = shared_data
    dvc = _dvc()
    repo = _copy_repo(tmp_path)

    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["profile"] == "quick"
    params["data"]["source"] = str(data)
    params["data"]["datasets"] = ["fashion_mnist"]
    params["grid"].update(seeds=[0], methods=list(METHODS))
    params["grid"]["lenet"].update(datasets=["fashion_mnist"], lr0s=[0.001])
    params["profiles"]["quick"].update(steps=20, tau=10, sigma=6, m=3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = _git_commit_env(repo)

    # The report also depends on the other run families: leave them empty here
    # (-s: reproduce exactly the named stages, in order, without their other upstream stages).
    for family in ("global", "ablation", "cifar", "reweight", "evidence", "lt", "lt_wd"):
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

    # DVC sees the report's few headline metrics, and nothing else; a second repro has nothing to do.
    shown = _run([dvc, "metrics", "show"], repo, env)
    assert "results/metrics.json" in shown.stdout and "acc_glocal" in shown.stdout
    assert "failed" not in (shown.stdout + shown.stderr).lower()
    assert max(len(line) for line in shown.stdout.splitlines()) < 120, shown.stdout
    again = _run([dvc, "status", *stages], repo, env).stdout
    assert "changed" not in again, again


@pytest.mark.slow
def test_dvc_repro_everything_offline_records_not_run(tmp_path):
    """Plain `dvc repro` (every stage) completes offline; CIFAR stages record "not run";
    adding the files to the source folder later makes exactly the download stages stale.
    A reduced grid; several minutes on a 2-core CPU (bench --quick alone takes about 2)."""
    data = real_data_dir()
    if data is None or not (data / "fashion_mnist").is_dir():
        pytest.skip("../shared/datasets/fashion_mnist not found (set GLOCAL_SHARED_DATASETS)")
    dvc = _dvc()
    repo = _copy_repo(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "fashion_mnist").symlink_to(data / "fashion_mnist")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(source=str(src), datasets=["fashion_mnist", "cifar10"])
    params["grid"].update(seeds=[0], methods=["none"])
    params["grid"]["lenet"].update(datasets=["fashion_mnist"], lr0s=[0.001])
    params["grid"]["global"].update(outer_steps=1)
    params["grid"]["ablation"].update(sigmas=[6], ms=[3])
    params["grid"]["cifar"].update(datasets=["cifar10"], methods=["local"])
    params["grid"]["reweight"].update(settings=[{"dataset": "cifar10", "factor": 50}], methods=["local"])
    params["grid"]["evidence"].update(seeds=[0], variants=params["grid"]["evidence"]["variants"][:3], steps=40)
    params["grid"]["lt"].update(datasets=["fashion_mnist"], factors=[50], methods=["none"])
    params["grid"]["lt_wd"].update(methods=["local"])
    params["profiles"]["quick"].update(steps=20, tau=10, sigma=6, m=3)
    params["profiles"]["lt_quick"].update(steps=40)
    params["verify"]["profile"] = "quick"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = _git_commit_env(repo)

    res = _run([dvc, "repro"], repo, env, timeout=1800)
    assert "not run: cifar10 not found in" in " ".join(res.stdout.split())
    for rel in ("data/runs/cifar/cifar10-lr0.01-local-seed0", "data/runs/reweight/cifar10-lt50-local-seed0"):
        metrics = json.loads((repo / rel / "metrics.json").read_text())
        assert metrics["status"] == "not run" and "put cifar-10-python.tar.gz there" in metrics["failure"]
    assert "not run" in (repo / "results" / "tables" / "table3_imbalanced.md").read_text()
    assert "not run" in (repo / "results" / "tables" / "accuracy_cifar.md").read_text()
    assert json.loads((repo / "results" / "metrics.json").read_text())["not_run"] == 2
    assert json.loads((repo / "data" / "runs" / "lenet" / "fashion_mnist-lr0.001-none-seed0" / "metrics.json")
                      .read_text())["status"] == "complete"
    assert "changed" not in _run([dvc, "status"], repo, env).stdout

    # The files arrive: the downloads (which read the folder) are stale, the LeNet runs are not.
    (src / "cifar-10-python.tar.gz").write_bytes(b"placeholder")
    stale = json.loads(_run([dvc, "status", "--json"], repo, env).stdout)
    assert "download@cifar10" in stale
    assert not any(name.startswith(("train@", "ablation", "global")) for name in stale), stale
