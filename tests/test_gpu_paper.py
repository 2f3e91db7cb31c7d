"""The paper-scale device job (scripts/gpu/paper.py) and its record (glocal_cli.report.paper_scale).

The job runs on a GPU only in some sessions; its `--dry-run` runs every part at a tiny T on
the CPU here, so it cannot rot between them.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glocal_cli.report import paper_scale, paper_scale_page

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_paper", ROOT / "scripts" / "gpu" / "paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(root: Path, variant: str, seed: int, acc: float, lr0: float = 1e-3, steps: int = 20000) -> None:
    method, estimator = {"none": ("none", "glocal"), "local": ("local", "glocal"), "glocal": ("glocal", "glocal"),
                         "glocal-mean": ("glocal", "mean")}[variant]
    run = root / f"fashion_mnist-lr{lr0:g}-{variant}-seed{seed}"
    run.mkdir(parents=True)
    cfg = {"dataset": "fashion_mnist", "method": method, "estimator": estimator, "seed": seed, "lr0": lr0,
           "steps": steps, "tau": 50, "sigma": 20, "m": 10, "batch_size": 128, "val_fraction": 0.1}
    metrics = {"status": "complete", "test_accuracy": acc, "test_loss": 0.4, "wall_s": 60.0, "window_s": 0.1,
               "dmd_fallbacks": 0, "outer_steps": 400, "hyperparams": {"lr": 0.01 + seed * 1e-3},
               "seeds_in_program": 5, "config": cfg,
               "provenance": {"jax": "0.11.2", "jaxlib": "0.11.2", "flax": "0.12", "optax": "0.2.8",
                              "device_kind": "NVIDIA H200", "commit": "a" * 40, "dirty": False}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "history.csv").write_text("outer_step,step,lr,val_loss,test_accuracy\n")


def test_record_pairs_seeds_and_names_device_versions_settings(tmp_path):
    local = [0.84, 0.85, 0.83, 0.86, 0.84]
    glocal = [0.845, 0.851, 0.829, 0.866, 0.842]
    for s in range(5):
        _fake_run(tmp_path, "local", s, local[s])
        _fake_run(tmp_path, "glocal", s, glocal[s])
        _fake_run(tmp_path, "none", s, 0.80)
        _fake_run(tmp_path, "local", s, 0.88, lr0=0.1)
    rec = paper_scale.collect(tmp_path, date="2026-12-01")
    assert rec["device"] == "NVIDIA H200" and rec["date"] == "2026-12-01" and rec["versions"]["jax"] == "0.11.2"
    assert {k: rec["settings"][k] for k in ("steps", "tau", "sigma", "m", "batch_size", "val_fraction", "lr0", "dataset")} \
        == {"steps": 20000, "tau": 50, "sigma": 20, "m": 10, "batch_size": 128, "val_fraction": 0.1, "lr0": 0.001,
            "dataset": "fashion_mnist"}
    assert list(rec["variants"]) == ["none", "local", "glocal"]
    assert rec["variants"]["glocal"]["seeds"] == [0, 1, 2, 3, 4]
    assert [r["test_accuracy"] for r in rec["variants"]["glocal"]["runs"]] == glocal
    (pair,) = [p for p in rec["paired"] if (p["a"], p["b"]) == ("glocal", "local")]
    d = [g - l for g, l in zip(glocal, local)]
    mean = sum(d) / 5
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 4) / math.sqrt(5)
    assert pair["n"] == 5 and pair["mean"] == pytest.approx(mean) and pair["se"] == pytest.approx(se)
    assert [o["settings"]["lr0"] for o in rec["other_lr0s"]] == [0.1]
    text = paper_scale_page.markdown(rec)
    assert "NVIDIA H200" in text and "glocal − local" in text and f"{mean:+.4f} ± {se:.4f}" in text
    json.dumps(rec)


def test_record_refuses_mixed_settings(tmp_path):
    _fake_run(tmp_path, "local", 0, 0.8)
    _fake_run(tmp_path, "glocal", 0, 0.8, steps=600)
    with pytest.raises(ValueError, match="different settings"):
        paper_scale.collect(tmp_path)
    with pytest.raises(ValueError, match="no finished runs"):
        paper_scale.collect(tmp_path / "empty")


def test_the_job_runs_the_pipelines_paper_profile_commands():
    """Part a is the dvc `evidence` stage's command with the paper profile (variants as in params.yaml)."""
    import yaml

    gp = _script()
    steps = gp.plan(["a", "b", "c"], "DATA", Path("RUNS"), Path("OUT"), dry=False)
    assert [(p, n) for p, n, _ in steps][:4] == [("a", "none"), ("a", "local"), ("a", "glocal"), ("a", "glocal-mean")]
    argv = steps[2][2]
    assert argv[:3] == ["train", "--params", "params.yaml"] and argv[argv.index("-P") + 1] == "paper"
    assert argv[argv.index("--seeds") + 1] == "0,1,2,3,4" and argv[argv.index("--lr0") + 1] == "0.001"
    assert "--steps" not in argv  # T, tau, sigma, m, batch, validation: the profile's
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["profiles"]["paper"]["steps"] == 20000
    evidence = {v["name"]: v for v in params["grid"]["evidence"]["variants"]}
    for _, name, argv in steps[:4]:
        method = argv[argv.index("--method") + 1]
        assert method == evidence[name]["method"]
        assert " ".join(argv[argv.index("--method") + 2: argv.index("--data-dir")]) == evidence[name]["args"]
    assert {lr for _, _, a in steps if a[0] == "train" for lr in [a[a.index("--lr0") + 1]]} == {"0.001", "0.005", "0.1"}
    assert sum(gp.ESTIMATES_H200[("a", n)] for n in ("none", "local", "glocal", "glocal-mean")) <= 540


@pytest.mark.parametrize("dry", [False, True])
def test_every_command_of_the_job_parses_and_builds_its_config(dry):
    """`--check`: the device job's commands (and the dry run's) start, with no ignored-setting warning."""
    args = [sys.executable, str(ROOT / "scripts" / "gpu" / "paper.py"), "--check", "--parts", "a,b,c,d"]
    res = subprocess.run(args + (["--dry-run"] if dry else []), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert all(line.endswith(" ok") for line in lines), res.stdout
    parts = [line[1] for line in lines]
    variants = yaml.safe_load((ROOT / "params.yaml").read_text())["grid"]["baselines"]["variants"]
    # part d: every baselines variant but those part a runs (none, local, glocal), one command each
    assert parts == ["a"] * 4 + ["b"] * 6 + ["c"] * 2 + ["d"] * (len(variants) - 3), res.stdout


@pytest.mark.slow
@pytest.mark.realdata
def test_dry_run_runs_every_part_on_the_cpu(tmp_path, shared_data):
    """Every part at T = 40 (params.yaml's quick profile): about 5 min on a free 2-core CPU."""
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu" / "paper.py"), "--dry-run", "--parts", "a,b,c",
                          "--data-dir", str(shared_data), "--out", str(out), "--budget", "3000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rec = json.loads((out / "paper_scale.json").read_text())
    assert rec["settings"]["steps"] == 40 and rec["note"].startswith("dry run")
    assert set(rec["variants"]) == {"none", "local", "glocal", "glocal-mean"}
    assert all(len(v["seeds"]) == 2 for v in rec["variants"].values())
    assert [o["settings"]["lr0"] for o in rec["other_lr0s"]] == [0.005, 0.1]
    assert (out / "paper_scale.md").is_file() and (out / "runs.tar.gz").is_file()
    assert json.loads((out / "bench.json").read_text())["provenance"]["backend"] == "cpu"
    verify = json.loads((out / "verify.json").read_text())
    assert verify["summary"] and verify["provenance"]["backend"] == "cpu"
    assert len([p for p in out.iterdir()]) <= 8  # what a device run can bring back
    assert "warning:" not in (out / "log.txt").read_text()  # the commands pass no setting their method ignores
