"""glocal report: figures, tables and summary.json from fake run directories (fast, no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from glocal_cli.cli import main
from glocal_cli.errors import UserError
from glocal_cli.report import build_report, collect_runs, group_runs
from glocal_cli.dmd import hankel_dmd_fit


def _hypergrads(windows: int, sigma: int, q: int, seed: int) -> np.ndarray:
    """Local hypergradients converging geometrically to a steady state (what DMD assumes)."""
    rng = np.random.default_rng(seed)
    t = np.arange(sigma)[:, None]
    out = []
    for _ in range(windows):
        c, a, b = rng.normal(size=(3, q))
        out.append(c + a * 0.7**t + b * 0.4**t)
    return np.stack(out)


def make_run(root: Path, family: str, dataset: str, method: str, seed: int, lr0: float = 1e-3,
             status: str = "complete", windows: int = 4, tau: int = 10, sigma: int = 6, m: int = 3,
             steps: int = 40) -> Path:
    name = f"{dataset}-lr{lr0:g}-{method}-seed{seed}" + ("" if family != "ablation" else f"-s{sigma}m{m}")
    run = root / family / name
    run.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    acc = 0.6 + 0.1 * rng.random() + (0.05 if method == "glocal" else 0.0)
    cfg = dict(dataset=dataset, method=method, seed=seed, lr0=lr0, task="optimizer", model="lenet", tau=tau,
               sigma=sigma, m=m, steps=steps, dmd_tol=0.05, dmd_rank_rtol=1e-10)
    diverged = status == "diverged"
    metrics = {
        "status": status,
        "failure": "non-finite parameters" if diverged else "",
        "test_accuracy": math.nan if diverged else acc,
        "test_loss": 1.0,
        "val_accuracy": acc,
        "val_loss": 1.0,
        "wall_s": 10.0 + seed + (20 if method == "glocal" else 0),
        "compile_s": 2.0,
        "train_s": 8.0 + seed,
        "outer_steps": windows,
        "inner_steps": windows * (steps if method == "global" else tau),
        "dmd_fallbacks": 1 if method == "glocal" else 0,
        "hyperparams": {"lr": lr0},
        "device": "cpu",
        "config": cfg,
    }
    (run / "metrics.json").write_text(json.dumps(metrics).replace("NaN", "null"))
    with open(run / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["outer_step", "step", "val_loss", "lr", "momentum", "weight_decay", "h_used_norm",
                    "test_accuracy", "dmd_n_unit", "dmd_reason"])
        for k in range(1, windows + 1):
            bad = diverged and k == windows
            w.writerow([k, k * tau, "nan" if bad else 2.0 / k, lr0 * (1 + 0.1 * k), 0.1, 1e-3, 0.1 * k,
                        "" if bad else acc * k / windows, 1 if method == "glocal" else "", ""])
    if method == "glocal":
        hg = _hypergrads(windows, sigma, 3, seed)
        np.savez(run / "dmd.npz", eigenvalues=np.ones((windows, 2), complex), hypergrads=hg)
    return run


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        for method in ("none", "local", "glocal"):
            make_run(root, "lenet", "fashion_mnist", method, seed)
    make_run(root, "lenet", "mnist", "glocal", 0, lr0=0.1)
    make_run(root, "global", "fashion_mnist", "global", 0, lr0=1e-3, status="diverged", windows=2)
    make_run(root, "ablation", "fashion_mnist", "glocal", 0, sigma=6, m=2)
    make_run(root, "ablation", "fashion_mnist", "glocal", 0, sigma=6, m=3)
    (root / "lenet" / "broken").mkdir()
    (root / "lenet" / "broken" / "metrics.json").write_text("{not json")
    return root


def test_collect_and_group(runs_dir):
    runs, notes = collect_runs(runs_dir)
    assert len(runs) == 10
    assert len(notes) == 1 and "broken" in notes[0]
    groups = group_runs(runs)
    g = groups[("lenet", "fashion_mnist", 1e-3, "glocal")]
    mean, std, n = g.stat("test_accuracy")
    assert n == 2 and math.isfinite(mean) and math.isfinite(std)
    assert ("ablation", "fashion_mnist", 1e-3, "glocal", 6, 2) in groups


def test_report_outputs(runs_dir, tmp_path):
    out = tmp_path / "results"
    rep = build_report(runs_dir, out)
    names = {p.name for p in rep.figures}
    assert {"lenet_fashion_mnist_lr0.001.png", "lenet_mnist_lr0.1.png", "dmd_eigenvalues.png",
            "ablation_sigma_m.png", "divergence.png"} <= names
    for p in rep.figures:
        assert p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in summary.values())
    assert summary["lenet/fashion_mnist/lr0.001/glocal/n_seeds"] == 2
    assert 0.6 < summary["lenet/fashion_mnist/lr0.001/glocal/test_accuracy_mean"] < 0.8
    assert summary["runs/diverged"] == 1
    assert "ablation/fashion_mnist/lr0.001/sigma6_m3/test_accuracy_mean" in summary
    acc = (out / "tables" / "accuracy_lenet.md").read_text()
    assert "| fashion_mnist | 0.001 |" in acc and "(n=2)" in acc and "not run" in acc
    t3 = (out / "tables" / "table3_imbalanced.md").read_text()
    assert "0.710" in t3 and "not run" in t3
    t4 = (out / "tables" / "table4_runtime.md").read_text()
    assert "4681.1" in t4 and "66.7" in t4
    readme = (out / "README.md").read_text()
    assert "figures/dmd_eigenvalues.png" in readme and "Table 3" in readme
    # no temporary files left behind by the atomic writes
    assert not list(out.rglob("*.tmp"))


def test_report_tolerates_empty_runs_dir(tmp_path):
    (tmp_path / "runs").mkdir()
    rep = build_report(tmp_path / "runs", tmp_path / "out")
    assert rep.runs == 0 and rep.figures == []
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == {"runs/diverged": 0, "runs/total": 0}
    assert "no lenet runs" in (tmp_path / "out" / "README.md").read_text()


def test_dmd_fit_recovers_unit_eigenvalue():
    h = _hypergrads(1, 12, 3, 0)[0]
    fit = hankel_dmd_fit(h, 3, rank_rtol=1e-10)
    assert np.min(np.abs(fit.eigenvalues - 1)) < 1e-6


def test_missing_runs_dir_is_user_error(tmp_path):
    with pytest.raises(UserError):
        build_report(tmp_path / "nope", tmp_path / "out")


def test_cli_missing_runs_dir_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --runs") and "\n" not in err


def test_evidence_table_paired_differences(tmp_path):
    """Variants of glocal (by estimator) are told apart; the paired difference and its SE are computed exactly."""
    from glocal_cli.report.tables import evidence_tables

    root = tmp_path / "runs"
    acc = {"local": [0.70, 0.72, 0.71], "glocal": [0.71, 0.74, 0.71], "glocal-mean": [0.69, 0.72, 0.70]}
    for variant, accs in acc.items():
        for seed, a in enumerate(accs):
            run = make_run(root, "evidence", "fashion_mnist", variant, seed)
            metrics = json.loads((run / "metrics.json").read_text())
            method, est = ("glocal", "mean") if variant == "glocal-mean" else (variant, "glocal")
            metrics["config"].update(method=method, estimator=est)
            metrics.update(test_accuracy=a, dmd_fallbacks=1 if method == "glocal" else 0)
            (run / "metrics.json").write_text(json.dumps(metrics))
    runs, _ = collect_runs(root)
    groups = list(group_runs(runs).values())
    assert sorted(g.method for g in groups) == ["glocal", "glocal-mean", "local"]
    text, numbers = evidence_tables(groups)
    d = np.array(acc["glocal"]) - np.array(acc["local"])
    assert numbers["glocal-local/diff_mean"] == pytest.approx(d.mean())
    assert numbers["glocal-local/diff_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert numbers["glocal-local/n_pairs"] == 3
    assert numbers["glocal/fallback_fraction"] == pytest.approx(3 / 12)
    assert "glocal − local" in text and "| glocal-mean |" in text
    rep = build_report(root, tmp_path / "results")
    assert (tmp_path / "results" / "tables" / "evidence.md").is_file()
    assert "evidence/fashion_mnist/lr0.001/glocal-local/diff_mean" in rep.summary

    # the report's record of this table: every seed's values, from which the published pages compute the same
    from glocal_cli.report import records

    rec = records.load(tmp_path / "results" / "records" / "evidence_fashion_mnist_lr0.001.json", "evidence")
    assert list(rec["variants"]) == ["local", "glocal", "glocal-mean"] and rec["pm"] == records.CONVENTION
    assert rec["variants"]["glocal"]["test_accuracy"] == acc["glocal"] and rec["variants"]["glocal"]["seeds"] == [0, 1, 2]
    assert ["glocal", "local"] in rec["pairs"] and rec["setting"]["steps"] == 40 and rec["seeds"] == [0, 1, 2]
    v = rec["variants"]
    mean, se, n = records.paired(records.by_seed(v["glocal"]), records.by_seed(v["local"]))
    assert (mean, se, n) == (pytest.approx(numbers["glocal-local/diff_mean"]),
                             pytest.approx(numbers["glocal-local/diff_se"]), 3)
    mean, std, n = records.mean_std(v["glocal"]["test_accuracy"])
    assert (mean, std) == (pytest.approx(np.mean(acc["glocal"])), pytest.approx(np.std(acc["glocal"], ddof=1)))
    # these fake runs' history.csv has no estimator columns: no window split is claimed
    assert "dmd_windows" not in rec["variants"]["glocal"]


def test_every_table_std_is_the_sample_std():
    """Group.stat (every report table's ±) is the sample standard deviation (ddof 1), as the README states."""
    from glocal_cli.report.collect import Group, Run

    runs = [Run(Path(f"r{i}"), "lenet", {"test_accuracy": a, "config": {"seed": i}}, {}) for i, a in
            enumerate([0.5, 0.7, 0.9])]
    mean, std, n = Group("lenet", "d", 0.1, "glocal", (), runs).stat("test_accuracy")
    assert (mean, std, n) == (pytest.approx(0.7), pytest.approx(0.2), 3)
    assert Group("lenet", "d", 0.1, "glocal", (), runs[:1]).stat("test_accuracy")[1] != Group(
        "lenet", "d", 0.1, "glocal", (), runs[:1]).stat("test_accuracy")[1]  # one seed: NaN, printed without ±
    from glocal_cli.report.tables import fmt_stat

    assert fmt_stat(0.7, math.nan, 1) == "0.700 (n=1)" and fmt_stat(0.7, 0.2, 3) == "0.700 ± 0.200 (n=3)"


def test_table3b_long_tailed(tmp_path):
    """Table 3b: balanced accuracy per (dataset, factor) and method; a collapsed run is counted, not averaged."""
    root = tmp_path / "runs"
    for seed, (method, status) in enumerate([("none", "complete"), ("local", "complete"), ("sgld", "complete"),
                                             ("sgld", "collapsed"), ("glocal", "complete")]):
        run = make_run(root, "lt", "fashion_mnist", method, seed, status=status)
        m = json.loads((run / "metrics.json").read_text())
        m["config"].update(task="reweight", imbalance_factor=50.0)
        m["test_balanced_accuracy"] = None if status != "complete" else 0.5 + 0.01 * seed
        if status != "complete":
            m["test_accuracy"] = None
        (run / "metrics.json").write_text(json.dumps(m))
    wd = make_run(root, "lt_wd", "fashion_mnist", "sgld", 0, lr0=0.05)
    m = json.loads((wd / "metrics.json").read_text())
    m["hyperparams"] = {"lr": 0.05, "weight_decay": 2e-3}
    (wd / "metrics.json").write_text(json.dumps(m))
    out = tmp_path / "results"
    rep = build_report(root, out)
    text = (out / "tables" / "table3b_long_tailed.md").read_text()
    assert "| fashion_mnist | 50 | 0.500 (n=1) | 0.510" in text
    assert "0.520 (n=1), 1 collapsed" in text  # the sgld group: one finished, one collapsed
    assert "| fashion_mnist | 0.05 | sgld |" in text and "0.002" in text
    assert "Table 3b" in (out / "README.md").read_text() and "Table 3:" in (out / "README.md").read_text()
    assert rep.summary["lt/fashion_mnist/lt50/sgld/n_collapsed"] == 1


def _paper_scale_groups(T: int = 20000, tau: int = 50, eval_every: int = 20):
    """none / local / glocal, two seeds each, with history columns as glocal train writes them at T = 20 000."""
    from glocal_cli.report.collect import Group, Run

    windows = np.arange(1, T // tau + 1)
    groups = []
    for method in ("none", "local", "glocal"):
        runs = []
        for seed in (0, 1):
            hist = {"outer_step": windows.astype(float), "step": windows * float(tau),
                    "lr": 1e-3 * np.exp(-windows / 200), "momentum": 0.9 + 0 * windows,
                    "weight_decay": 1e-4 + 0 * windows, "val_loss": 1.0 / windows,
                    "test_accuracy": np.where(windows % eval_every == 0, 0.8 + 0.001 * seed, np.nan)}
            runs.append(Run(Path(f"{method}/seed{seed}"), "lenet", {"config": {"method": method, "seed": seed}}, hist))
        groups.append(Group("lenet", "fashion_mnist", 1e-3, method, runs=runs))
    return groups


@pytest.mark.parametrize("panel_inches", [3.0, 4.0, 4.75, 5.0, 6.0, 8.0])
def test_fig2_step_labels_do_not_collide_at_t_20000(panel_inches):
    """Fig. 2 at T = 20 000: the x tick labels of every panel stay apart, whatever the panel's width
    (matplotlib's default put nine labels 0, 2500, ..., 20000 on a panel of about 5 inches, touching)."""
    import matplotlib.pyplot as plt

    from glocal_cli.report import figures
    from tick_labels import colliding_x_labels

    fig = figures.trajectory_plot(_paper_scale_groups(), "Fig. 2")
    try:
        fig.set_size_inches(panel_inches * len(fig.axes), 3.4)
        fig.tight_layout()
        assert colliding_x_labels(fig) == []
    finally:
        plt.close(fig)


def test_fig2_step_labels_are_short_round_steps():
    """At its own size the Fig. 2 panels label the step axis 0, 5k, 10k, 15k, 20k."""
    import matplotlib.pyplot as plt

    from glocal_cli.report import figures
    from tick_labels import x_tick_labels

    fig = figures.trajectory_plot(_paper_scale_groups(), "Fig. 2")
    try:
        fig.canvas.draw()
        for ax in fig.axes:
            assert [t for t, _ in x_tick_labels(ax, fig.canvas.get_renderer())] == ["0", "5k", "10k", "15k", "20k"]
    finally:
        plt.close(fig)
    assert [figures.short_number(x) for x in (0, 600, 2500, 20000, 1.2e6)] == ["0", "600", "2.5k", "20k", "1.2M"]
