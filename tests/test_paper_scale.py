"""The paper-scale record, figure and page (glocal_cli.report.paper_scale) from small synthetic run folders.

The run folders are written in the real schema: ``history.csv`` by ``glocal train``'s own row
writer (``train.history_row`` / ``rows_to_csv``), ``metrics.json`` with the keys ``train._finish``
writes. Hand computations with numpy are the reference for every statistic.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from glocal_cli import atomic
from glocal_cli.estimators import Estimate
from glocal_cli.methods import WindowRecord
from glocal_cli.report import paper_scale
from glocal_cli.report.paper_scale_page import markdown, summary_line
from glocal_cli.history import history_row, rows_to_csv

T, TAU, EVAL_EVERY = 1000, 50, 4  # 20 windows, test accuracy every 4
SETTINGS = {"dataset": "fashion_mnist", "model": "lenet", "task": "optimizer", "steps": T, "tau": TAU, "sigma": 20,
            "m": 10, "batch_size": 128, "val_fraction": 0.02, "lr0": 0.001, "momentum0": 0.1, "weight_decay0": 0.001,
            "learn": ["lr", "momentum", "weight_decay"], "outer_optimizer": "adam", "outer_lr": None,
            "inner_optimizer": "learnable_sgd", "schedule": "constant", "eval_every": EVAL_EVERY, "estimator": "glocal"}
COMMIT = "6f627efb58956e3bf4ff31ce24e54bd6daa16285"


def _estimate(kind: str) -> Estimate:
    """glocal's estimate of one window: within tol of 1, the nearest eigenvalue, or a fallback."""
    eigs = np.array([0.99 + 0.01j, 0.99 - 0.01j, 0.5])
    selected = np.zeros(0, complex) if kind == "fallback" else eigs[:1 if kind == "nearest" else 2]
    return Estimate(value=np.zeros(3), fallback=kind == "fallback", reason="non_finite_estimate" if kind == "fallback"
                    else "", selected=selected, spectral_radius=0.99, residual=1e-3, rank=3, imag_norm=0.0,
                    eigenvalues=eigs, estimator="glocal", selection="" if kind == "fallback" else kind)


def write_run(root: Path, variant: str, seed: int, acc: float, kinds=None, commit: str = COMMIT, folder=None,
              **config) -> Path:
    """A run folder as ``glocal train`` leaves it: ``history.csv`` (one row a window; test accuracy every
    EVAL_EVERY windows, rising to ``acc``), ``metrics.json``. ``kinds``: glocal's window estimates."""
    run = root / (folder or f"{variant}/seed{seed}")
    run.mkdir(parents=True)
    windows = T // TAU
    kinds = kinds or ["tol"] * windows
    lr = lambda k: 1e-3 * (1 + 0.1 * k + 0.01 * seed) if variant != "none" else 1e-3  # noqa: E731
    rows = []
    for k in range(1, windows + 1):
        rec = WindowRecord(outer_step=k, step=k * TAU, phi=np.zeros(3), phi_next=np.zeros(3), hypergrads=np.zeros((0, 3)),
                           hypergrad_local=np.full(3, 0.1),
                           hypergrad_used=np.full(3, 0.1), val_loss=1.0 / k, finite=True,
                           dmd=_estimate(kinds[k - 1]) if variant == "glocal" else None, seconds=1.0)
        hp = {"lr": lr(k), "momentum": 0.1 + 0.01 * k, "weight_decay": 1e-3}
        rows.append(history_row(rec, hp, acc * k / windows + 0.001 * seed if k % EVAL_EVERY == 0 else None))
    atomic.write_text(run / "history.csv", rows_to_csv(rows))
    fallbacks = ["non_finite_estimate" for x in kinds if x == "fallback"] if variant == "glocal" else []
    cfg = {**SETTINGS, "method": variant, "seed": seed, **config}
    atomic.write_json(run / "metrics.json", {
        "status": "complete", "failure": "", "test_accuracy": acc, "test_balanced_accuracy": acc,
        "test_loss": 1.0 - acc, "val_accuracy": acc, "val_loss": 0.5, "wall_s": 600.0 + seed, "compile_s": 20.0,
        "train_s": 580.0, "window_s": 1.0, "outer_steps": windows, "inner_steps": T, "dmd_fallbacks": len(fallbacks),
        "dmd_fallback_reasons": {x: fallbacks.count(x) for x in set(fallbacks)},
        "hyperparams": {"lr": lr(windows), "momentum": 0.1 + 0.01 * windows, "weight_decay": 1e-3},
        "seeds_in_program": [seed], "seed_devices": 1, "device": "cpu", "config": cfg,
        "provenance": {"backend": "cpu", "commit": commit, "device_count": 1, "device_kind": "cpu", "dirty": False,
                       "flax": "0.12.8", "glocal-cli": "0.1.0", "jax": "0.10.2", "jaxlib": "0.10.2",
                       "numpy": "2.4.6", "optax": "0.2.8", "python": "3.11.7"}})
    return run


ACC = {"none": [0.80, 0.79, 0.81, 0.805, 0.80], "local": [0.844, 0.846, 0.839], "glocal": [0.8347, 0.842, 0.8405]}


def three_seeds(root: Path) -> Path:
    """none seeds 0-4, local and glocal seeds 0-2; glocal seed 1 has nearest / fallback windows."""
    for v, accs in ACC.items():
        for s, a in enumerate(accs):
            kinds = ["tol"] * 14 + ["nearest"] * 4 + ["fallback"] * 2 if (v, s) == ("glocal", 1) else None
            write_run(root, v, s, a, kinds=kinds)
    return root


def test_paired_differences_match_a_hand_computation(tmp_path):
    rec = paper_scale.collect(three_seeds(tmp_path))
    assert list(rec["variants"]) == ["none", "local", "glocal"]
    for a, b in (("glocal", "local"), ("local", "none")):
        (p,) = [p for p in rec["paired"] if (p["a"], p["b"]) == (a, b)]
        d = np.array(ACC[a][:3]) - np.array(ACC[b][:3])  # the seeds both have: 0, 1, 2
        assert p["seeds"] == [0, 1, 2] and p["n"] == 3
        assert p["differences"] == pytest.approx(d.tolist())
        assert p["mean"] == pytest.approx(d.mean())
        assert p["se"] == pytest.approx(np.std(d, ddof=1) / np.sqrt(3))
    s = rec["variants"]["none"]["summary"]["test_accuracy"]
    assert (s["mean"], s["std"], s["n"]) == (pytest.approx(np.mean(ACC["none"])),
                                              pytest.approx(np.std(ACC["none"], ddof=1)), 5)
    d = np.array(ACC["glocal"]) - np.array(ACC["local"])
    assert summary_line(rec) == (f"glocal − local = {d.mean():+.4f} ± {np.std(d, ddof=1) / np.sqrt(3):.4f} "
                                 "(n = 3 paired seeds)").replace("-", "−")
    assert rec["one_commit"] and rec["commits"] == {COMMIT: [f"{v}/seed{s}" for v in ACC for s in range(len(ACC[v]))]}
    assert rec["versions"]["jax"] == "0.10.2" and rec["dirty"] == []


def test_one_seed_has_no_standard_error(tmp_path):
    for v in ("none", "local", "glocal"):
        write_run(tmp_path, v, 0, {"none": 0.8038, "local": 0.8440, "glocal": 0.8347}[v])
    rec = paper_scale.collect(tmp_path)
    (p,) = [p for p in rec["paired"] if (p["a"], p["b"]) == ("glocal", "local")]
    assert p["n"] == 1 and p["se"] is None and p["mean"] == pytest.approx(0.8347 - 0.8440)
    assert rec["variants"]["glocal"]["summary"]["test_accuracy"]["std"] is None
    assert summary_line(rec) == "glocal − local = −0.0093 (n = 1)"
    page = markdown(rec)
    assert "one seed, no standard error" in page and "(1 seed so far)" in page
    assert "| glocal − local | 1 | 0: −0.0093 | −0.0093 | one seed, no standard error |" in page


def test_a_missing_variant(tmp_path):
    for s in (0, 1, 2):
        write_run(tmp_path, "none", s, 0.80 + 0.01 * s)
        write_run(tmp_path, "glocal", s, 0.83 + 0.001 * s)
    (tmp_path / "campaign.json").write_text(json.dumps({
        "pinned_commit": COMMIT, "args": ["--params", "params.yaml", "-P", "paper"],
        "units": [{"name": "glocal-s012", "method": "glocal", "seeds": [0, 1, 2]},
                  {"name": "local-s0", "method": "local", "seeds": [0]},
                  {"name": "none-s012", "method": "none", "seeds": [0, 1, 2]}],
        "finished": {"glocal-s012": {"wall_s": 5400.0, "load_mean": 2.6, "load_max": 3.1, "cpus": 2}}}))
    rec = paper_scale.collect(tmp_path)
    assert list(rec["variants"]) == ["none", "glocal"] and rec["paired"] == []
    assert summary_line(rec) == "glocal − local: no paired seeds yet"
    assert rec["at_pinned_commit"] is True and rec["device"] == "cpu (2 cores)"
    assert [(u["name"], u["done"]) for u in rec["plan"]["units"]] == [("glocal-s012", True), ("local-s0", False),
                                                                        ("none-s012", True)]
    page = markdown(rec)
    assert "seeds so far: none 0, 1, 2; glocal 0, 1, 2; not yet: local" in page
    assert "local – (0 of 1 planned)" in page and "| glocal-s012 | glocal | 0, 1, 2 | done | 90 | 2.6 (max 3.1) |" in page
    assert "glocal train --params params.yaml -P paper --method METHOD --seeds SEEDS" in page


def test_glocal_windows_split_by_how_the_estimate_was_made(tmp_path):
    rec = paper_scale.collect(three_seeds(tmp_path))
    runs = {r["seed"]: r for r in rec["variants"]["glocal"]["runs"]}
    assert runs[0]["windows"] == {"tol": 20, "nearest": 0, "fallback": 0, "total": 20}
    assert runs[1]["windows"] == {"tol": 14, "nearest": 4, "fallback": 2, "total": 20}
    assert rec["variants"]["glocal"]["windows"] == {"tol": 54, "nearest": 4, "fallback": 2, "total": 60}
    assert runs[1]["dmd_fallback_reasons"] == {"non_finite_estimate": 2}  # the metrics agree with the history
    assert all(r["windows"] is None for v in ("none", "local") for r in rec["variants"][v]["runs"])
    page = markdown(rec)
    assert "| glocal | 1 | 14 | 4 | 2 | 20 |" in page and "| glocal | all | **54** | **4** | **2** | **60** |" in page
    assert "14 / 4 / 2 of 20" in page


def test_page_numbers_are_the_records(tmp_path):
    """Every per-seed row, summary and paired difference on the page is the record's value; the page is a
    function of the JSON record alone (a changed record value changes the page)."""
    rec = paper_scale.collect(three_seeds(tmp_path))
    page = markdown(rec)
    for v, e in rec["variants"].items():
        for r in e["runs"]:
            assert f"| {v} | {r['seed']} | complete | {r['test_accuracy']:.4f} | {r['test_loss']:.4f} | " \
                   f"{r['final']['lr']:.3g} |" in page
        s = e["summary"]["test_accuracy"]
        assert f"| {v} | {', '.join(map(str, e['seeds']))} | {s['mean']:.4f} ± {s['std']:.4f} (n = {s['n']}) |" in page
    for p in rec["paired"]:
        row = re.search(rf"\| {p['a']} − {p['b']} \| (\d+) \| [^|]+ \| (\S+) \| (\S+) \|", page)
        assert row and int(row[1]) == p["n"]
        assert float(row[2].replace("−", "-")) == pytest.approx(p["mean"], abs=5e-5)
        assert float(row[3]) == pytest.approx(p["se"], abs=5e-5)
    assert summary_line(rec) in page and summary_line(rec, "local", "none") in page
    back = json.loads(paper_scale.to_json(rec))
    assert markdown(back, figure="f.png") == markdown(rec, figure="f.png")
    back["variants"]["glocal"]["runs"][2]["test_accuracy"] = 0.1234
    assert "| glocal | 2 | complete | 0.1234 |" in markdown(back)


def test_test_accuracy_by_step_is_the_mean_over_seeds(tmp_path):
    rec = paper_scale.collect(three_seeds(tmp_path))
    by = rec["test_accuracy_by_step"]
    assert by["step"] == list(range(EVAL_EVERY * TAU, T + 1, EVAL_EVERY * TAU))
    windows = T // TAU
    k = np.array(by["step"]) // TAU
    expect = np.mean([[a * kk / windows + 0.001 * s for kk in k] for s, a in enumerate(ACC["local"])], axis=0)
    assert by["variants"]["local"]["mean"] == pytest.approx(expect.tolist())
    assert by["variants"]["none"]["n"] == [5] * len(k)


def test_write_makes_the_record_figure_and_page(tmp_path):
    three_seeds(tmp_path / "records")
    rc = paper_scale.main(["--records", str(tmp_path / "records"), "--out", str(tmp_path / "docs")])
    assert rc == 0
    out = tmp_path / "docs"
    png = (out / "paper_scale_cpu.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    rec = json.loads((out / "paper_scale_cpu.json").read_text())
    assert (out / "paper_scale_cpu.md").read_text() == markdown(rec, figure="paper_scale_cpu.png")
    assert "![Fig. 2 at T = 1 000](paper_scale_cpu.png)" in (out / "paper_scale_cpu.md").read_text()
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    paper_scale.main(["--records", str(tmp_path / "records"), "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".png"} == \
        {k: v for k, v in first.items() if not k.endswith(".png")}  # the same records, the same record and page


def test_figure_band_is_the_range_over_seeds_and_labels_stay_apart(tmp_path):
    """Fig. 2 of the page: a mean line and a min–max band per variant; 0, 5k, … 20k on the step axis at T = 20 000."""
    import matplotlib.pyplot as plt

    from glocal_cli.report import figures
    from tick_labels import colliding_x_labels, x_tick_labels

    runs = paper_scale.load(three_seeds(tmp_path)).runs
    curves = {c: paper_scale.curves(runs, c) for c, _, _ in paper_scale.FIGURE_PANELS}
    steps, values = curves["test_accuracy"]["glocal"]
    assert values.shape == (3, T // TAU // EVAL_EVERY)
    fig = figures.seed_band_plot(curves, paper_scale.FIGURE_PANELS, steps=T, band="minmax")
    try:
        ax = fig.axes[-1]  # test accuracy; one line and one band per variant, in the same order
        assert [ln.get_label() for ln in ax.lines] == ["none (5 seeds)", "local (3 seeds)", "glocal (3 seeds)"]
        line, band = ax.lines[2], ax.collections[2]
        assert np.allclose(line.get_ydata(), values.mean(axis=0))
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(values.min()) and ys.max() == pytest.approx(values.max())
        assert colliding_x_labels(fig) == []
    finally:
        plt.close(fig)
    scaled = {c: {v: (s * 20, x) for v, (s, x) in cv.items()} for c, cv in curves.items()}  # T = 20 000
    fig = figures.seed_band_plot(scaled, paper_scale.FIGURE_PANELS, steps=20000)
    try:
        assert colliding_x_labels(fig) == []
        fig.canvas.draw()
        assert [t for t, _ in x_tick_labels(fig.axes[0], fig.canvas.get_renderer())] == ["0", "5k", "10k", "15k", "20k"]
    finally:
        plt.close(fig)


def test_earlier_run_is_kept_as_its_values_and_said_on_the_page(tmp_path):
    """The superseded one-seed record (the former builder's schema) becomes earlier_seed0.json; the page says
    what it was and what seed 0 gives now."""
    old = {"device": "cpu", "date": "2026-11-30", "settings": {"steps": 20000}, "note": "seed 0 only",
           "variants": {v: {"seeds": [0], "test_accuracy": [a], "test_loss": [0.5], "final_lr": [1e-3],
                            "wall_s": [3000.0], "commit": [c], "status": ["complete"]}
                        for v, a, c in (("none", 0.8038, None), ("local", 0.844, "8bacdd4" + "0" * 33),
                                        ("glocal", 0.8347, "711a8da" + "0" * 33))}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    records = tmp_path / "records"
    write_run(records, "glocal", 0, 0.8361)
    paper_scale.main(["--records", str(records), "--keep-earlier", str(tmp_path / "old.json"),
                      "--earlier-source", "docs/paper_scale_cpu.json at 6f627ef"])
    kept = json.loads((records / paper_scale.EARLIER_FILE).read_text())
    assert kept["variants"]["glocal"] == {"seed": 0, "test_accuracy": 0.8347, "test_loss": 0.5, "final_lr": 1e-3,
                                          "wall_s": 3000.0, "commit": "711a8da" + "0" * 33, "status": "complete"}
    rec = paper_scale.collect(records)
    page = markdown(rec)
    assert ("none 0.8038 (commit not recorded); local 0.8440 (commit 8bacdd4); glocal 0.8347 (commit 711a8da), "
            "now 0.8361") in page
    assert "docs/paper_scale_cpu.json at 6f627ef" in page and "0.8347" not in markdown({**rec, "earlier": None})


@pytest.mark.parametrize("case", ["folder", "duplicate", "settings", "empty"])
def test_refuses_what_cannot_be_one_record(tmp_path, case):
    write_run(tmp_path, "glocal", 0, 0.83)
    if case == "folder":
        write_run(tmp_path, "local", 1, 0.84, folder="glocal/seed1")
        match = "holds a local run"
    elif case == "duplicate":
        write_run(tmp_path, "glocal", 0, 0.83, folder="more/glocal0")
        match = r"seed\(s\) \[0\] twice"
    elif case == "settings":
        write_run(tmp_path, "local", 0, 0.84, tau=20)
        match = "different settings: tau"
    else:
        tmp_path = tmp_path / "nothing"
        tmp_path.mkdir()
        match = "no finished runs"
    with pytest.raises(ValueError, match=match):
        paper_scale.collect(tmp_path)
    assert paper_scale.main(["--records", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_convention_is_stated_in_record_and_page(tmp_path):
    rec = paper_scale.collect(three_seeds(tmp_path))
    assert "ddof 1" in rec["convention"] and "standard error" in rec["convention"]
    assert rec["convention"] in markdown(rec)
    assert math.isclose(rec["settings"]["lr0"], 1e-3) and rec["settings"]["steps"] == T


def test_the_readme_answer_follows_the_record(tmp_path):
    """The README's paper-scale row and sentence: a verdict by twice the standard error, the window split;
    one seed: no verdict; no pair yet: what is in."""
    from glocal_cli.report.paper_scale_page import readme_answer, readme_sentence

    rec = paper_scale.collect(three_seeds(tmp_path / "three"))
    d = np.array(ACC["glocal"]) - np.array(ACC["local"])
    se = np.std(d, ddof=1) / np.sqrt(3)
    word = "yes" if d.mean() > 2 * se else "no" if d.mean() >= -2 * se else "no, it does worse"
    answer = readme_answer(rec)
    assert answer.startswith(f"{word}: {summary_line(rec)} in the CPU campaign (T = ")
    assert "glocal's 60 windows: 54 within tol of 1, 4 nearest eigenvalue, 2 fallback to local" in answer
    assert "local − none = " in answer and summary_line(rec) in readme_sentence(rec)

    for v in ("local", "glocal"):
        write_run(tmp_path / "one", v, 0, {"local": 0.8440, "glocal": 0.8347}[v])
    one = paper_scale.collect(tmp_path / "one")
    assert readme_answer(one).startswith("one seed so far, no verdict: glocal − local = −0.0093 (n = 1)")
    assert "has one paired seed" in readme_sentence(one)

    write_run(tmp_path / "none_yet", "glocal", 0, 0.8347)
    assert readme_answer(paper_scale.collect(tmp_path / "none_yet")).startswith("not yet: no paired seeds")


def test_the_committed_paper_scale_docs_are_what_their_records_give():
    """docs/paper_scale_cpu.{json,md} equal what the builder makes from docs/records/paper_scale_cpu: the campaign's
    plan and whatever units are in (the campaign's driver rebuilds them with every unit it commits;
    `python -m glocal_cli.report.paper_scale` by hand)."""
    from glocal_cli.report.paper_scale_page import markdown

    repo = Path(__file__).resolve().parents[1]
    import os

    cwd = os.getcwd()
    try:  # the builder's default, relative to the repository (the record names the folder it read)
        os.chdir(repo)
        record = paper_scale.build(paper_scale.load("docs/records/paper_scale_cpu"))
    finally:
        os.chdir(cwd)
    assert paper_scale.to_json(record) == (repo / "docs" / "paper_scale_cpu.json").read_text()
    assert markdown(record, figure="paper_scale_cpu.png") == (repo / "docs" / "paper_scale_cpu.md").read_text()


def test_a_plan_without_runs_is_a_record(tmp_path):
    """Before its first unit a campaign's record says so: its planned settings, no variant, no pair."""
    (tmp_path / "campaign.json").write_text(json.dumps({"pinned_commit": COMMIT, "args": [], "units": [
        {"name": "glocal-s012", "method": "glocal", "seeds": [0, 1, 2]}], "finished": {}}))
    inputs = paper_scale.load(tmp_path)
    assert inputs.runs == () and inputs.planned["steps"] == 20000  # glocal train's defaults: the paper's
    rec = paper_scale.build(inputs)
    assert rec["variants"] == {} and rec["paired"] == [] and rec["settings"]["tau"] == 50
    assert summary_line(rec) == "glocal − local: no paired seeds yet"
    with pytest.raises(ValueError, match="no finished runs"):
        paper_scale.build(paper_scale.Inputs(()))


def _campaign_driver():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "campaign.py"
    spec = importlib.util.spec_from_file_location("campaign_driver", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seeds", [[1], [0, 1, 2]])
def test_the_campaign_writes_each_seed_where_it_looks_for_it(tmp_path, seeds):
    """A unit's command puts seed k in runs/<unit>/seed<k> for one seed as for several (a one-seed run given a
    plain --out writes into that folder itself: the driver then looked for seed1/ and stopped)."""
    from glocal_cli import config
    from glocal_cli.train import seed_configs

    drv = _campaign_driver()
    unit = {"name": "local-s1", "method": "local", "seeds": seeds}
    cmd = drv.command({"args": []}, unit, tmp_path, Path("glocal"), tmp_path / "data")
    out = cmd[cmd.index("--out") + 1]
    cfg = config.from_mapping({"method": "local", "out": out})
    got = [Path(c.run_dir()) for c in seed_configs(cfg, seeds)]
    assert got == [drv.run_folder(tmp_path, unit, s) for s in seeds]


def test_the_campaign_lists_each_variants_seeds_across_units(tmp_path, monkeypatch):
    """Adopting a unit copies its seeds' records and rewrites the variant's seeds.json with every seed committed
    so far (units of one seed each add up; glocal train --seeds-summary's layout); a failed seed is refused."""
    drv = _campaign_driver()
    monkeypatch.setattr(drv, "ROOT", tmp_path)
    monkeypatch.setattr(drv, "RECORDS", tmp_path / "docs" / "records" / "paper_scale_cpu")
    base = tmp_path / "campaign"
    for seed, acc in ((3, 0.84), (1, 0.85)):
        unit = {"name": f"local-s{seed}", "method": "local", "seeds": [seed]}
        run = drv.run_folder(base, unit, seed)
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"status": "complete", "test_accuracy": acc}))
        (run / "history.csv").write_text("outer_step,lr\n1,0.001\n")
        paths = drv.adopt(unit, base)
    summary = json.loads((drv.RECORDS / "local" / "seeds.json").read_text())
    assert paths[-1] == drv.RECORDS / "local" / "seeds.json"
    assert summary["seeds"] == [1, 3]
    assert summary["runs"] == [
        {"seed": 1, "run_dir": "docs/records/paper_scale_cpu/local/seed1", "status": "complete", "test_accuracy": 0.85},
        {"seed": 3, "run_dir": "docs/records/paper_scale_cpu/local/seed3", "status": "complete", "test_accuracy": 0.84}]
    assert (drv.RECORDS / "local" / "seed3" / "history.csv").read_text() == "outer_step,lr\n1,0.001\n"
    bad = {"name": "local-s4", "method": "local", "seeds": [4]}
    drv.run_folder(base, bad, 4).mkdir(parents=True)
    (drv.run_folder(base, bad, 4) / "metrics.json").write_text(json.dumps({"status": "failed", "failure": "nan"}))
    with pytest.raises(SystemExit, match="ended 'failed'"):
        drv.adopt(bad, base)
    assert json.loads((drv.RECORDS / "local" / "seeds.json").read_text())["seeds"] == [1, 3]


def test_a_unit_of_another_lr0_is_its_own_entry_and_state(tmp_path):
    """Issue 30 item 5: units at lr0 0.1 (``"set"``, ``"records": "lr0.1"``) sit beside the main campaign: a unit
    is done when its own folders are in (glocal-lr0.1-s0 is not done by the main glocal seed 0), their seeds are
    not the main setting's planned seeds, and their runs make an ``other_lr0s`` entry and a section of the page."""
    for s in (0, 1):
        write_run(tmp_path, "local", s, 0.84 + 0.001 * s)
        write_run(tmp_path, "glocal", s, 0.83 + 0.001 * s)
    write_run(tmp_path, "local", 0, 0.86, folder="lr0.1/local/seed0", lr0=0.1)
    (tmp_path / "campaign.json").write_text(json.dumps({
        "pinned_commit": COMMIT, "args": ["--lr0", "0.001"],
        "units": [{"name": "glocal-s01", "method": "glocal", "seeds": [0, 1]},
                  {"name": "local-s01", "method": "local", "seeds": [0, 1]},
                  {"name": "local-lr0.1-s0", "method": "local", "seeds": [0], "set": {"--lr0": "0.1"},
                   "records": "lr0.1"},
                  {"name": "glocal-lr0.1-s0", "method": "glocal", "seeds": [0], "set": {"--lr0": "0.1"},
                   "records": "lr0.1"}]}))
    rec = paper_scale.collect(tmp_path)
    assert [(u["name"], u["done"]) for u in rec["plan"]["units"]] == [
        ("glocal-s01", True), ("local-s01", True), ("local-lr0.1-s0", True), ("glocal-lr0.1-s0", False)]
    assert rec["plan"]["variants"] == {"local": [0, 1], "glocal": [0, 1]}
    assert rec["settings"]["lr0"] == 0.001 and list(rec["variants"]) == ["local", "glocal"]
    (other,) = rec["other_lr0s"]
    assert other["settings"]["lr0"] == 0.1 and list(other["variants"]) == ["local"]
    page = markdown(rec)
    assert "| glocal-lr0.1-s0 | glocal | `--lr0 0.1` | 0 | left |" in page and "| glocal-s01 | glocal | – | 0, 1 | done |" in page
    assert "## lr0 0.1" in page


def test_the_campaign_runs_a_unit_of_another_setting_into_its_folder(tmp_path, monkeypatch):
    """A unit's ``"set"`` replaces the plan's option (one --lr0 in the command, not two); its records go below its
    ``"records"`` folder; a diverged run is a result the driver commits (a stopped one is refused)."""
    drv = _campaign_driver()
    monkeypatch.setattr(drv, "ROOT", tmp_path)
    monkeypatch.setattr(drv, "RECORDS", tmp_path / "records")
    plan = {"args": ["--params", "params.yaml", "--lr0", "0.001", "--dataset", "fashion_mnist"]}
    unit = {"name": "glocal-lr0.1-s0", "method": "glocal", "seeds": [0], "set": {"--lr0": "0.1"}, "records": "lr0.1"}
    cmd = drv.command(plan, unit, tmp_path, Path("glocal"), tmp_path / "data")
    assert cmd.count("--lr0") == 1 and cmd[cmd.index("--lr0") + 1] == "0.1"
    assert drv.unit_args(plan, {"set": {"--val-fraction": "0.1"}})[-2:] == ["--val-fraction", "0.1"]
    assert not drv.unit_done(unit)
    run = drv.run_folder(tmp_path, unit, 0)
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"status": "diverged", "test_accuracy": 0.1}))
    paths = drv.adopt(unit, tmp_path)
    assert paths[0] == tmp_path / "records" / "lr0.1" / "glocal" / "seed0" and drv.unit_done(unit)
    assert json.loads(paths[-1].read_text())["runs"][0]["status"] == "diverged"
    (run / "metrics.json").write_text(json.dumps({"status": "stopped"}))
    with pytest.raises(SystemExit, match="ended 'stopped'"):
        drv.adopt(unit, tmp_path)


def test_a_fixed_optimizer_beside_the_papers_variants(tmp_path, monkeypatch):
    """What a user would pick instead, at the paper's scale: ``--method none --inner-optimizer prodigy`` runs (the
    unit's ``"variant": "prodigy"``) join the main entry as the variant ``prodigy``, paired with glocal; the record's
    settings stay the paper's (learnable_sgd); the README's answer adds prodigy − glocal; the driver keeps its
    records under prodigy/, not none/."""
    from glocal_cli.report.paper_scale_page import readme_answer

    for s in (0, 1, 2):
        write_run(tmp_path, "local", s, 0.84 + 0.001 * s)
        write_run(tmp_path, "glocal", s, 0.83 + 0.002 * s)
        write_run(tmp_path, "none", s, 0.86 + 0.001 * s, folder=f"prodigy/seed{s}", inner_optimizer="prodigy")
    (tmp_path / "campaign.json").write_text(json.dumps({
        "pinned_commit": COMMIT, "args": ["--lr0", "0.001"],
        "units": [{"name": "glocal-s012", "method": "glocal", "seeds": [0, 1, 2]},
                  {"name": "local-s012", "method": "local", "seeds": [0, 1, 2]},
                  {"name": "prodigy-s012", "method": "none", "variant": "prodigy", "seeds": [0, 1, 2],
                   "set": {"--inner-optimizer": "prodigy"}}]}))
    rec = paper_scale.collect(tmp_path)
    assert list(rec["variants"]) == ["local", "glocal", "prodigy"] and rec["settings"]["inner_optimizer"] == "learnable_sgd"
    (p,) = [p for p in rec["paired"] if (p["a"], p["b"]) == ("prodigy", "glocal")]
    assert p["n"] == 3 and p["mean"] == pytest.approx(np.mean([0.86 - 0.83, 0.861 - 0.832, 0.862 - 0.834]))
    assert [(u["name"], u["method"], u["done"]) for u in rec["plan"]["units"]][-1] == ("prodigy-s012", "prodigy", True)
    assert rec["plan"]["variants"] == {"local": [0, 1, 2], "glocal": [0, 1, 2], "prodigy": [0, 1, 2]}
    assert "; prodigy − glocal = +0.0290 ± 0.0006 (n = 3 paired seeds)" in readme_answer(rec)
    assert "| prodigy − glocal | 3 |" in markdown(rec)

    drv = _campaign_driver()
    monkeypatch.setattr(drv, "RECORDS", tmp_path / "records")
    unit = {"name": "prodigy-s0", "method": "none", "variant": "prodigy", "seeds": [0],
            "set": {"--inner-optimizer": "prodigy"}}
    assert drv.record_dir(unit, 0) == tmp_path / "records" / "prodigy" / "seed0"
    cmd = drv.command({"args": ["--lr0", "0.001"]}, unit, tmp_path, Path("glocal"), tmp_path / "data")
    assert cmd[cmd.index("--method") + 1] == "none" and cmd[cmd.index("--inner-optimizer") + 1] == "prodigy"


def test_the_readme_plain_answer_says_what_the_campaign_has_of_prodigy(tmp_path):
    """README "Plainly": once the campaign's record pairs prodigy with glocal at T = 20 000, the sentence gives that
    difference from it; before, that prodigy is planned; without a paper-scale record, the GPU job's part d."""
    import shutil

    from glocal_cli.report import published

    class Cog:
        inFile = str(tmp_path / "README.md")
        text = ""

        def out(self, s):
            self.text += s

    (tmp_path / "docs").mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "docs" / "baselines_cpu.json", tmp_path / "docs")
    records = tmp_path / "records"
    for s in (0, 1):
        write_run(records, "glocal", s, 0.83 + 0.002 * s)
    plan = {"pinned_commit": COMMIT, "args": [], "units": [
        {"name": "glocal-s01", "method": "glocal", "seeds": [0, 1]},
        {"name": "prodigy-s01", "method": "none", "variant": "prodigy", "seeds": [0, 1],
         "set": {"--inner-optimizer": "prodigy"}}]}
    (records / "campaign.json").write_text(json.dumps(plan))

    def plain(with_record=True):
        paper_scale.write(paper_scale.load(records), tmp_path / "docs")
        cog = Cog()
        published.plainly(cog, "docs/baselines_cpu.json", "docs/paper_scale_cpu.json" if with_record else None)
        return " ".join(cog.text.split())

    assert "the CPU campaign has prodigy's seeds planned, not yet run" in plain()
    assert "is part d of the GPU job, not yet run." in plain(with_record=False)
    for s in (0, 1):
        write_run(records, "none", s, 0.86 + 0.001 * s, folder=f"prodigy/seed{s}", inner_optimizer="prodigy")
    assert ("At the paper's scale (T = 20 000) the CPU campaign measures prodigy − glocal = +0.0295 ± 0.0005 (n = 2 "
            "paired seeds)") in plain()
