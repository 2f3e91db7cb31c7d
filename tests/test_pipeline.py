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
    --seeds, --out is <setting>/seed{seed} and --seeds-summary <setting>/seeds.json, and the stage's
    one output is the setting's folder, cached (it travels with queued experiments and dvc push) and
    persistent (a killed run's checkpoints survive for the resume). A YAML list in params.yaml would be
    refused by DVC."""
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
            assert out.startswith(f"data/runs/{family}/") and out.endswith("/seed{seed}"), out
            setting = out[: -len("/seed{seed}")]
            assert summary == setting + "/seeds.json", (out, summary)
            assert [o.def_path for o in st.outs] == [setting] and st.outs[0].use_cache and st.outs[0].persist
            declared = st.params[0].params  # a change of the seeds re-runs the stage
            assert any(key == k or key.startswith(k + ".") for k in declared), (name, declared)
    cmd = stages["train@fashion_mnist-glocal-0.001"].cmd.split()
    assert cmd[cmd.index("--out") + 1].replace("{seed}", "5") == "data/runs/lenet/fashion_mnist-lr0.001-glocal/seed5"
    for name in ("global", "ablation@4-2"):  # single-seed stages: the run folder, cached and persistent
        out = stages[name].cmd.split()[stages[name].cmd.split().index("--out") + 1]
        assert [o.def_path for o in stages[name].outs] == [out] and stages[name].outs[0].persist
    assert stages["report"].deps[0].def_path == "data/runs/lenet"  # the report reads every seed folder below
    # the baselines (hours on a CPU) are a separate target: `dvc repro report` does not run them
    assert not any(d.def_path.startswith("data/runs/baselines") for d in stages["report"].deps)

    # Why grid.seeds is a string: DVC 3 does not interpolate a list into a command.
    params["grid"]["seeds"] = [0, 1, 2]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res = subprocess.run([_dvc(), "stage", "list"], cwd=repo, capture_output=True, text=True)
    assert res.returncode != 0 and "Cannot interpolate data of type 'list'" in res.stderr, res.stderr


@pytest.mark.slow  # ~3 min; default: the rendered stages, every variant's command, params tests
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
    res = _run([dvc, "repro", "-s", *stages], repo, env)
    assert "warning:" not in res.stdout + res.stderr  # the stages pass no setting their method ignores

    # One command per method trained both seeds in one program, into the per-seed folders.
    runs = repo / "data" / "runs" / "lenet"
    for m in METHODS:
        for seed in (0, 1):
            metrics = json.loads((runs / f"fashion_mnist-lr0.001-{m}" / f"seed{seed}" / "metrics.json").read_text())
            assert metrics["status"] == "complete" and metrics["config"]["seed"] == seed
            assert metrics["seeds_in_program"] == [0, 1]
        summary = json.loads((runs / f"fashion_mnist-lr0.001-{m}" / "seeds.json").read_text())
        assert summary["seeds"] == [0, 1] and [r["status"] for r in summary["runs"]] == ["complete"] * 2
        assert summary["runs"][1]["run_dir"] == f"data/runs/lenet/fashion_mnist-lr0.001-{m}/seed1"
    assert (runs / "fashion_mnist-lr0.001-glocal" / "seed1" / "dmd.npz").is_file()

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
    params["grid"]["evidence"].update(seeds="0", variants=params["grid"]["evidence"]["variants"][:3])
    params["profiles"]["evidence"].update(steps=40)
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
    assert "warning:" not in res.stdout + res.stderr  # the grid passes no setting its method ignores
    for rel in ("data/runs/cifar/cifar10-lr0.01-local/seed0", "data/runs/reweight/cifar10-lt50-local/seed0"):
        metrics = json.loads((repo / rel / "metrics.json").read_text())
        assert metrics["status"] == "not run" and "put cifar-10-python.tar.gz there" in metrics["failure"]
    assert "not run" in (repo / "results" / "tables" / "table3_imbalanced.md").read_text()
    assert "not run" in (repo / "results" / "tables" / "accuracy_cifar.md").read_text()
    assert json.loads((repo / "results" / "metrics.json").read_text())["not_run"] == 2
    assert json.loads((repo / "data" / "runs" / "lenet" / "fashion_mnist-lr0.001-none" / "seed0" / "metrics.json")
                      .read_text())["status"] == "complete"
    assert "changed" not in _run([dvc, "status"], repo, env).stdout

    # The files arrive: the downloads (which read the folder) are stale, the LeNet runs are not.
    (src / "cifar-10-python.tar.gz").write_bytes(b"placeholder")
    stale = json.loads(_run([dvc, "status", "--json"], repo, env).stdout)
    assert "download@cifar10" in stale
    assert not any(name.startswith(("train@", "ablation", "global")) for name in stale), stale


@pytest.mark.slow  # two training stages and two downloads in DVC's queue: minutes on a 2-core CPU
@pytest.mark.e2e
@pytest.mark.realdata
def test_dvc_queue_with_two_workers_keeps_every_cell(tmp_path, shared_data):
    """Two grid cells queued as experiments (`dvc exp run --queue`) and run by two workers (`dvc queue start -j 2`),
    each in its own copy under .dvc/tmp/exps: both succeed, and each cell's folder (every seed's metrics.json and
    seeds.json) comes back from the cache (`dvc get . <folder> --rev <experiment>`). The default relative data.source (../shared/datasets) does not
    resolve in those copies: an experiment queued without an absolute one fails, naming the missing folder."""
    import time

    dvc = _dvc()
    repo = _copy_repo(tmp_path)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "datasets").symlink_to(shared_data)  # ../shared/datasets beside the repository, as here
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"]["source"] == "../shared/datasets"
    params["data"]["datasets"] = ["fashion_mnist"]
    params["grid"].update(seeds="0,1", methods=["none", "local"])
    params["grid"]["lenet"].update(datasets=["fashion_mnist"], lr0s=[0.001])
    params["profiles"]["quick"].update(steps=20, tau=10, sigma=6, m=3)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _git_commit_env(repo)

    source = str((repo / params["data"]["source"]).resolve())
    cells = {m: f"train@fashion_mnist-{m}-0.001" for m in ("none", "local")}
    for m, stage in cells.items():
        _run([dvc, "exp", "run", "--queue", "-n", f"cell-{m}", "-S", f"data.source={source}", stage], repo, env)
    _run([dvc, "exp", "run", "--queue", "-n", "relative", cells["none"]], repo, env)
    try:
        started = _run([dvc, "queue", "start", "-j", "2"], repo, env)
        assert "Started '2' new experiments task queue workers" in started.stdout, started.stdout
        deadline = time.monotonic() + 1800
        while True:
            status = _run([dvc, "queue", "status"], repo, env).stdout
            if not any(word in status for word in ("Queued", "Running")) or time.monotonic() > deadline:
                break
            time.sleep(5)
    finally:
        subprocess.run([dvc, "queue", "stop", "--kill"], cwd=repo, env=env, capture_output=True, timeout=120)
    rows = {line.split()[1]: line.split()[-1] for line in status.splitlines() if line.split()[1:2] in
            (["cell-none"], ["cell-local"], ["relative"])}
    assert rows == {"cell-none": "Success", "cell-local": "Success", "relative": "Failed"}, status
    log = " ".join(_run([dvc, "queue", "logs", "relative"], repo, env).stdout.split())
    assert "shared/datasets" in log and ".dvc/tmp/exps" in log, log[-2000:]

    refs = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo, env).stdout.split()
    for m in cells:  # each experiment's cell folder, from the cache (docs/scale_out.md gathers cells this way)
        rel = f"data/runs/lenet/fashion_mnist-lr0.001-{m}"
        ref = next(r for r in refs if r.endswith(f"/cell-{m}"))
        _run([dvc, "get", ".", rel, "--rev", ref, "-o", rel], repo, env)
        cell = repo / rel
        for seed in (0, 1):
            metrics = json.loads((cell / f"seed{seed}" / "metrics.json").read_text())
            assert metrics["status"] == "complete" and metrics["seeds_in_program"] == [0, 1]
            assert metrics["config"]["method"] == m and (cell / f"seed{seed}" / "history.csv").is_file()
        summary = json.loads((cell / "seeds.json").read_text())
        assert [r["status"] for r in summary["runs"]] == ["complete", "complete"]


@pytest.mark.parametrize("stage", ["evidence", "baselines"])
def test_every_variant_command_parses_and_passes_no_flag_its_method_ignores(stage, monkeypatch):
    """Each variant of the grid's stage builds its config through `glocal train`'s own parsing, without a warning."""
    from glocal_cli import cli
    from glocal_cli.params import stage_command

    monkeypatch.chdir(REPO)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    variants = params["grid"][stage]["variants"]
    assert len(variants) >= 5
    for v in variants:
        argv = stage_command(spec["cmd"], params, {"variant": v})
        assert argv[:2] == ["glocal", "train"]
        assert cli.check_command(argv[1:]) == [], (v, argv)
