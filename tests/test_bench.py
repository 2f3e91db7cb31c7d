"""The runtime benchmark's logic on tiny settings (no timing assertions: the CPU is shared)."""

import dataclasses
import json
import math
import statistics

import pytest
from rich.console import Console

from glocal_cli import bench
from glocal_cli.config import from_mapping


def test_settings():
    paper = bench.bench_settings()
    h = paper.train.hpo
    assert (h.tau, h.sigma, h.m, paper.train.batch_size, h.steps) == (50, 20, 10, 128, 20_000)
    quick = bench.bench_settings(quick=True, steps=45)
    assert quick.quick and quick.windows == 3  # 45 steps -> 3 windows of tau 20
    with pytest.raises(ValueError):
        bench.bench_settings(steps=0)
    for bad in ({"seed_counts": (0,)}, {"train_windows": -1}, {"variants": ("nonsense",)}, {"variants": ("tauu=3",)}):
        with pytest.raises(ValueError):
            bench.bench_settings(**bad)
    assert bench.parse_variant("val_chunk=1000;val_precision=bfloat16") == {"val_chunk": 1000, "val_precision": "bfloat16"}


def _mlp_task(s, steps):
    """The bench's task with a 16-unit MLP in LeNet's place (its compilations take seconds, LeNet's most of a minute)."""
    from glocal_cli.train import load_splits
    from glocal_cli.verify import mlp_task

    cfg = dataclasses.replace(s.train, hpo=dataclasses.replace(s.train.hpo, steps=steps))
    splits = load_splits(cfg)
    return mlp_task(cfg, splits, 16), splits


@pytest.mark.realdata
def test_run_bench_tiny(tmp_path, small_real_data, monkeypatch):
    """Every reported number is derived from the timed samples by the documented formula (the arithmetic, so on a
    small MLP: what LeNet costs is what `glocal bench` measures, not what this test checks)."""
    monkeypatch.setattr(bench, "build_lenet_task", _mlp_task)
    s = bench.bench_settings(data_dir=str(small_real_data), batch_size=16, val_fraction=0.01, windows=2, global_steps=8,
                             train={"hpo": {"tau": 4, "sigma": 4, "m": 2, "steps": 40}}, seed_counts=(),
                             train_windows=0)
    res = bench.run_bench(s)
    s = s.train.hpo  # tau, sigma, T (steps) below
    samples = res["window_samples_s"]
    assert {k: len(v) for k, v in samples.items()} == {"none": 2, "local": 2, "glocal": 2, "W": 2, "V": 6}
    assert all(t > 0 and math.isfinite(t) for v in samples.values() for t in v)
    med = {k: statistics.median(v) for k, v in samples.items()}
    assert res["window_s"] == {m: med[m] for m in ("none", "local", "glocal")}
    assert (res["W_s"], res["V_s"]) == (med["W"], med["V"])
    per1000 = res["seconds_per_1000_steps"]
    for m in ("none", "local", "glocal"):
        assert per1000[m] == pytest.approx(med[m] * 1000 / s.tau)
    g = res["global_measured"]
    assert g["steps"] == 8 and g["outer_steps_extrapolated"] == s.steps // s.tau
    assert per1000["global"] == pytest.approx(g["seconds"] / g["steps"] * (s.steps // s.tau) * 1000)
    for m in bench.METHOD_ORDER:
        assert res["run_seconds_extrapolated"][m] == pytest.approx(per1000[m] * s.steps / 1000)
    assert res["local_over_none"] == pytest.approx(med["local"] / med["none"])
    assert res["glocal_over_local"] == pytest.approx(med["glocal"] / med["local"])
    assert res["global_over_none"] == pytest.approx(per1000["global"] / per1000["none"])
    floor = (med["W"] + s.sigma * med["V"]) / (med["W"] + med["V"])
    assert res["floor_glocal_over_local"] == pytest.approx(floor) and 1 < floor < s.sigma
    assert res["glocal_over_local_floor"] == pytest.approx(res["glocal_over_local"] / floor)
    assert res["q"] == 3 and res["val_evals_per_window"] == {"none": 0, "local": 1, "glocal": s.sigma}

    assert res["seeds"] is None and res["train"] is None and res["variants"] is None  # skipped when asked

    bench.write_results(res, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["V_s"] == res["V_s"]

    console = Console(record=True, width=200)
    console.print(bench.results_table(res))
    text = console.export_text()
    rows = {cells[1]: cells[2:] for cells in ([c.strip() for c in ln.split("│")] for ln in text.splitlines())
            if len(cells) > 2}
    for m in bench.METHOD_ORDER:
        cells = rows[m + ("*" if m == "global" else "")]
        assert cells[1] == f"{per1000[m]:.4g}" and cells[5] == f"{bench.PAPER_TABLE4[m]:.1f}", cells
    lines = bench.summary_lines(res)
    assert f"glocal/local = {res['glocal_over_local']:.2f}" in lines[1] and "extrapolated" in lines[3]


@pytest.mark.realdata
def test_the_bench_times_the_runner_glocal_train_runs(small_real_data, monkeypatch):
    """Every window the bench times is a window of a runner built by train.make_runner, the factory that
    glocal train's own groups come from: none / local / glocal / global each (fails if the two paths part)."""
    from glocal_cli import runner as runner_mod
    from glocal_cli import train

    built, timed = [], []
    real_make, real_run = train.make_runner, runner_mod.SeedGroupRunner.run_window

    def make(*args, **kw):
        built.append(real_make(*args, **kw))
        return built[-1]

    def run_window(self, gs, on_chunk=None):
        timed.append(self)
        return real_run(self, gs, on_chunk)

    monkeypatch.setattr(train, "make_runner", make)
    monkeypatch.setattr(runner_mod.SeedGroupRunner, "run_window", run_window)
    monkeypatch.setattr(bench, "build_lenet_task", _mlp_task)
    s = bench.bench_settings(data_dir=str(small_real_data), batch_size=16, val_fraction=0.01, windows=1, global_steps=8,
                             train={"hpo": {"tau": 4, "sigma": 4, "m": 2, "steps": 40}}, seed_counts=(),
                             train_windows=0)
    bench.run_bench(s)
    assert timed and all(any(r is b for b in built) for r in timed)
    assert {r.method.name for r in timed} == {"none", "local", "glocal", "global"}
    built.clear()
    cfg = from_mapping({"data_dir": str(small_real_data), "method": "glocal", "steps": 8, "tau": 4, "sigma": 4, "m": 2})
    runs, runner = train._build_group([cfg], train.Progress())
    assert built == [runner]  # glocal train's group comes from the same factory


@pytest.mark.realdata
def test_the_bench_times_lenet(small_real_data):
    """What test_run_bench_tiny replaces by an MLP: the bench's own task is LeNet (its parameters), on the setting's data."""
    import jax

    from glocal_cli.models import get_model

    s = bench.bench_settings(data_dir=str(small_real_data), batch_size=16, val_fraction=0.01,
                             train={"hpo": {"tau": 4, "sigma": 4, "m": 2, "steps": 40}})
    task, splits = bench.build_lenet_task(s, 8)
    from glocal_cli.runtime import resolve

    lenet = get_model("lenet", 10, resolve(s.train.hpo, s.train).conv_impl)
    shapes = jax.eval_shape(lambda: lenet.init(jax.random.PRNGKey(0), splits.train_x[:1]))["params"]
    got = task.params_of(task.problem.init_state)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(shapes)
    assert [a.shape for a in jax.tree_util.tree_leaves(got)] == [a.shape for a in jax.tree_util.tree_leaves(shapes)]
    assert len(splits.train_x) + len(splits.val_x) == 6000 and task.phi0.shape == (3,)


def _tiny(shared_data, **kw):
    return bench.bench_settings(data_dir=str(shared_data), batch_size=16, val_fraction=0.01, windows=2,
                                train={"hpo": {"tau": 4, "sigma": 4, "m": 2, "steps": 40}}, **kw)


@pytest.mark.slow  # ~75 s; default: test_run_bench_tiny
@pytest.mark.realdata
def test_seed_groups_and_train_overhead_are_reported(shared_data):
    s = _tiny(shared_data, seed_counts=(1, 2), train_windows=3)
    h = s.train.hpo
    seeds = bench.time_seed_groups(s, methods=("local",))
    w = seeds["window_s"]["local"]
    assert set(w) == {1, 2} and all(t > 0 for t in w.values())
    assert seeds["time_over_one"]["local"][2] == pytest.approx(w[2] / w[1])
    assert seeds["seed_steps_per_s"]["local"][2] == pytest.approx(2 * h.tau / w[2])
    assert seeds["seed_runs_per_hour"]["local"][1] == pytest.approx(3600 / (w[1] * h.steps / h.tau))
    t = bench.time_train(s, {"local": 0.5}, methods=("local",))["local"]
    assert t["status"] == "complete" and t["windows"] == 3 and t["window_s"] > 0
    assert t["window_over_bench"] == pytest.approx(t["window_s"] / 0.5)
    assert t["wall_over_bench"] > 0
    lines = bench.extra_lines({"seeds": seeds, "train": {"local": t}})
    assert lines[0].startswith("seeds in one program, local: S=1") and "t(S=2)/t(1)" in lines[0]
    assert lines[1].startswith("glocal train local (3 windows)")


@pytest.mark.slow
@pytest.mark.realdata
def test_variants_are_timed(shared_data):
    v = bench.time_variants(_tiny(shared_data, variants=("val_batch=2",)))
    assert set(v) == {"baseline", "val_batch=2"}
    for r in v.values():
        assert r["glocal_over_local"] == pytest.approx(r["glocal_s"] / r["local_s"])
