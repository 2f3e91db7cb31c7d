"""The DVC pipeline: dvc.yaml as DVC parses it, and `dvc repro` in a copy of the repository.

The end-to-end test copies the git-tracked files into a temporary folder, makes it a
fresh git + DVC repository, shrinks the grid (2 seeds in one program, 1 initial lr,
methods none / local / glocal, 20 inner steps) in the copied params.yaml, reproduces
the download, the three training stages and the report with `dvc repro`, and checks
the figures, the tables and summary.json. About 2-4 minutes on a 2-core CPU.
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


#: Stages that train every seed of a setting in one command: stage -> (seeds param, run family).
SEED_GROUPS = {
    "train": ("grid.seeds", "lenet"),
    "evidence": ("grid.evidence.seeds", "evidence"),
    "train_cifar": ("grid.seeds", "cifar"),
    "train_reweight": ("grid.seeds", "reweight"),
    "train_lt": ("grid.seeds", "lt"),
    "train_lt_wd": ("grid.seeds", "lt_wd"),
    "baselines": ("grid.baselines.seeds", "baselines"),
}


def _parsed_stages(repo: Path) -> dict:
    """``{address: stage}`` of dvc.yaml in ``repo`` as DVC itself renders it (templating, matrix)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return {st.name: st for st in dvc_repo.index.stages}


def test_dvc_renders_one_stage_per_setting_with_every_seed_in_its_command(tmp_path):
    """DVC's parser: no seed axis in the matrices; each setting's command trains all seeds with
    --seeds, --out holds {seed} (the per-seed run folders keep their names) and the stage's
    output is the --seeds-summary file. A YAML list in params.yaml would be refused by DVC."""
    pytest.importorskip("dvc.repo")
    _dvc()
    repo = _copy_repo(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["grid"]["seeds"] == "0,1,2" and params["grid"]["evidence"]["seeds"] == "0,1,2,3,4"
    assert params["grid"]["baselines"]["seeds"] == "0,1,2,3,4"
    params["grid"]["seeds"] = "3,5"  # what `dvc exp run -S "grid.seeds='3,5'"` writes
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = _parsed_stages(repo)

    grid = params["grid"]
    expected = {
        "train": len(grid["lenet"]["datasets"]) * len(grid["methods"]) * len(grid["lenet"]["lr0s"]),
        "evidence": len(grid["evidence"]["variants"]),
        "train_cifar": len(grid["cifar"]["datasets"]) * len(grid["cifar"]["methods"]) * len(grid["cifar"]["lr0s"]),
        "train_reweight": len(grid["reweight"]["settings"]) * len(grid["reweight"]["methods"]),
        "train_lt": len(grid["lt"]["datasets"]) * len(grid["lt"]["factors"]) * len(grid["lt"]["methods"]),
        "train_lt_wd": len(grid["lt_wd"]["methods"]),
        "baselines": len(grid["baselines"]["variants"]),
    }
    for name, (key, family) in SEED_GROUPS.items():
        group = [st for addr, st in stages.items() if addr.split("@")[0] == name]
        assert len(group) == expected[name], (name, sorted(stages))
        seeds = "3,5" if key == "grid.seeds" else "0,1,2,3,4"
        for st in group:
            argv = st.cmd.split()
            assert argv[:2] == ["glocal", "train"] and "--seed" not in argv, st.cmd
            assert argv[argv.index("--seeds") + 1] == seeds, st.cmd
            out = argv[argv.index("--out") + 1]
            summary = argv[argv.index("--seeds-summary") + 1]
            assert out.startswith(f"data/runs/{family}/") and out.endswith("-seed{seed}"), out
            assert summary == out[: -len("-seed{seed}")] + "-seeds.json", (out, summary)
            assert [o.def_path for o in st.outs] == [summary] and not st.outs[0].use_cache
            declared = st.params[0].params  # a change of the seeds re-runs the stage
            assert any(key == k or key.startswith(k + ".") for k in declared), (name, declared)
    cmd = stages["train@fashion_mnist-glocal-0.001"].cmd.split()
    assert cmd[cmd.index("--out") + 1].replace("{seed}", "5") == "data/runs/lenet/fashion_mnist-lr0.001-glocal-seed5"
    assert stages["report"].deps[0].def_path == "data/runs/lenet"  # the report reads every seed folder below
    # the baselines (hours on a CPU) are a separate target: `dvc repro report` does not run them
    assert not any(d.def_path.startswith("data/runs/baselines") for d in stages["report"].deps)

    # Why grid.seeds is a string: DVC 3 does not interpolate a list into a command.
    params["grid"]["seeds"] = [0, 1, 2]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res = subprocess.run([_dvc(), "stage", "list"], cwd=repo, capture_output=True, text=True)
    assert res.returncode != 0 and "Cannot interpolate data of type 'list'" in res.stderr, res.stderr


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
    params["grid"].update(seeds="0,1", methods=list(METHODS))
    params["grid"]["lenet"].update(datasets=["fashion_mnist"], lr0s=[0.001])
    params["profiles"]["quick"].update(steps=20, tau=10, sigma=6, m=3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = _git_commit_env(repo)

    # The report also depends on the other run families: leave them empty here
    # (-s: reproduce exactly the named stages, in order, without their other upstream stages).
    for family in ("global", "ablation", "cifar", "reweight", "evidence", "lt", "lt_wd"):
        (repo / "data" / "runs" / family).mkdir(parents=True, exist_ok=True)
    stages = ["download@fashion_mnist"] + [f"train@fashion_mnist-{m}-0.001" for m in METHODS] + ["report"]
    _run([dvc, "repro", "-s", *stages], repo, env)

    # One command per method trained both seeds in one program, into the per-seed folders.
    runs = repo / "data" / "runs" / "lenet"
    for m in METHODS:
        for seed in (0, 1):
            metrics = json.loads((runs / f"fashion_mnist-lr0.001-{m}-seed{seed}" / "metrics.json").read_text())
            assert metrics["status"] == "complete" and metrics["config"]["seed"] == seed
            assert metrics["seeds_in_program"] == [0, 1]
        summary = json.loads((runs / f"fashion_mnist-lr0.001-{m}-seeds.json").read_text())
        assert summary["seeds"] == [0, 1] and [r["status"] for r in summary["runs"]] == ["complete"] * 2
        assert summary["runs"][1]["run_dir"] == f"data/runs/lenet/fashion_mnist-lr0.001-{m}-seed1"
    assert (runs / "fashion_mnist-lr0.001-glocal-seed1" / "dmd.npz").is_file()

    results = repo / "results"
    summary = json.loads((results / "summary.json").read_text())
    assert summary and all(isinstance(v, (int, float)) and math.isfinite(v) for v in summary.values())
    for m in METHODS:
        acc = summary[f"lenet/fashion_mnist/lr0.001/{m}/test_accuracy_mean"]
        assert 0.0 < acc <= 1.0
    figs = {p.name for p in (results / "figures").glob("*.png")}
    assert {"lenet_fashion_mnist_lr0.001.png", "dmd_eigenvalues.png"} <= figs
    table = (results / "tables" / "accuracy_lenet.md").read_text()
    assert "fashion_mnist" in table and "(n=2)" in table
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
    params["grid"].update(seeds="0", methods=["none"])
    params["grid"]["lenet"].update(datasets=["fashion_mnist"], lr0s=[0.001])
    params["grid"]["global"].update(outer_steps=1)
    params["grid"]["ablation"].update(sigmas=[6], ms=[3])
    params["grid"]["cifar"].update(datasets=["cifar10"], methods=["local"])
    params["grid"]["reweight"].update(settings=[{"dataset": "cifar10", "factor": 50}], methods=["local"])
    params["grid"]["evidence"].update(seeds="0", variants=params["grid"]["evidence"]["variants"][:3], steps=40)
    params["grid"]["lt"].update(datasets=["fashion_mnist"], factors=[50], methods=["none"])
    params["grid"]["lt_wd"].update(methods=["local"])
    params["grid"]["baselines"].update(seeds="0", steps=40, variants=[
        v for v in params["grid"]["baselines"]["variants"] if v["name"] in ("none", "prodigy")])
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
