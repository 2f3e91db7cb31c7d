"""Several seeds in one program: the group runner against single runs, resume, folders, CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glocal_cli import cli
from glocal_cli.config import from_mapping
from glocal_cli.errors import UserError
from glocal_cli.hpo import HPOConfig, InnerProblem
from glocal_cli.runner import HPORunner, SeedGroupRunner
from glocal_cli.seeds import seed_slice, stack_trees
from glocal_cli.train import CHECKPOINT, Progress, parse_seeds, run_seeds, run_training, seed_configs


# ------------------------------------------------------------------ the runner, on a quadratic (float64)


def _quadratic(seed: int, lr: float = 0.1, p: int = 5, q: int = 2) -> InnerProblem:
    """θ ← θ − lr (A θ − b − B φ) with A, b, B, lr and the batch noise in ``data`` (so one step function serves all seeds)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(p, p)))
    data = {"A": u @ np.diag(rng.uniform(0.3, 1.5, p)) @ u.T, "b": rng.normal(size=p), "B": rng.normal(size=(p, q)),
            "target": rng.normal(size=p), "lr": np.float64(lr), "noise": rng.normal(size=(1000, p)) * 0.01}
    data = jax.tree_util.tree_map(jnp.asarray, data)

    def step(theta, phi, t, d):
        return theta - d["lr"] * (d["A"] @ theta - d["b"] - d["B"] @ phi + d["noise"][t])

    def val_loss(theta, d):
        return 0.5 * jnp.sum((theta - d["target"]) ** 2)

    return InnerProblem(init_state=jnp.asarray(rng.normal(size=p)), step=step, val_loss=val_loss,
                        batches=lambda start, n: np.arange(start, start + n, dtype=np.int32), data=data)


def _single(problem, cfg, phi0, windows):
    runner = HPORunner(problem, cfg)
    hs, recs = runner.init(phi0), []
    for _ in range(windows):
        hs, rec = runner.run_window(hs)
        recs.append(rec)
    return hs, recs


@pytest.mark.parametrize("method", ["none", "local", "glocal"])
def test_group_of_two_equals_two_single_runs(method):
    jax.config.update("jax_enable_x64", True)
    try:
        cfg = HPOConfig(method=method, steps=60, tau=10, sigma=8, m=3, outer_lr=0.05, seed=0)
        cfgs = [cfg, HPOConfig(method=method, steps=60, tau=10, sigma=8, m=3, outer_lr=0.05, seed=1)]
        problems = [_quadratic(0), _quadratic(1)]
        phi0 = np.zeros(2)
        group = SeedGroupRunner(problems, cfgs)
        gs = group.init([phi0, phi0])
        wins = []
        while not group.done(gs):
            gs, win = group.run_window(gs)
            wins.append(jax.device_get(win))
        for s in range(2):
            hs, recs = _single(problems[s], cfgs[s], phi0, 6)
            np.testing.assert_allclose(np.asarray(seed_slice(gs.inner, s)), np.asarray(hs.inner), rtol=1e-12)
            np.testing.assert_allclose(np.asarray(gs.phi[s]), np.asarray(hs.phi), rtol=1e-12, atol=1e-15)
            for w, rec in zip(wins, recs):
                np.testing.assert_allclose(w.hypergrad_used[s], rec.hypergrad_used, rtol=1e-10, atol=1e-14)
                assert bool(w.finite[s]) == rec.finite
        if method != "none":  # the seeds really differ
            assert not np.allclose(gs.phi[0], gs.phi[1])
    finally:
        jax.config.update("jax_enable_x64", False)


def test_a_diverging_seed_keeps_its_phi_and_spares_the_others():
    cfg0 = HPOConfig(method="local", steps=40, tau=10, outer_lr=0.05, seed=0)
    cfg1 = HPOConfig(method="local", steps=40, tau=10, outer_lr=0.05, seed=1)
    problems = [_quadratic(0), _quadratic(1, lr=5.0)]  # lr 5 with eigenvalues up to 1.5: explodes
    group = SeedGroupRunner(problems, [cfg0, cfg1])
    gs = group.init([np.zeros(2, np.float32)] * 2)
    finite = []
    while not group.done(gs):
        before = np.asarray(gs.phi)
        gs, win = group.run_window(gs)
        a = jax.device_get(win)
        finite.append(a.finite.tolist())
        if not a.finite[1]:
            np.testing.assert_array_equal(np.asarray(gs.phi[1]), before[1])  # not updated with a NaN
    assert all(f[0] for f in finite) and not all(f[1] for f in finite)
    hs, _ = _single(problems[0], cfg0, np.zeros(2, np.float32), 4)
    np.testing.assert_allclose(np.asarray(gs.phi[0]), np.asarray(hs.phi), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["local", "glocal"])
def test_val_grad_forward_reaches_both_runners(method, monkeypatch):
    """hpo.val_grad = forward gets to the window of HPORunner and of the fused group (same h as reverse, float64)."""
    from glocal_cli import hypergrad

    seen = []
    real = hypergrad.tangent_hypergrad

    def spy(val_loss, state, tangents, data=None, val_grad="reverse"):
        seen.append(val_grad)
        return real(val_loss, state, tangents, data, val_grad)

    monkeypatch.setattr(hypergrad, "tangent_hypergrad", spy)
    jax.config.update("jax_enable_x64", True)
    try:
        kw = dict(method=method, steps=20, tau=10, sigma=8, m=3, outer_lr=0.05, val_batch=0)
        problems, phi0 = [_quadratic(0), _quadratic(1)], np.zeros(2)
        out = {}
        for vg in ("reverse", "forward"):
            cfgs = [HPOConfig(val_grad=vg, seed=s, **kw) for s in range(2)]
            group = SeedGroupRunner(problems, cfgs)
            gs = group.init([phi0, phi0])
            gs, win = group.run_window(gs)
            hs, recs = _single(problems[0], cfgs[0], phi0, 1)
            out[vg] = (np.asarray(win.hypergrads), recs[0].hypergrads)
        assert set(seen) == {"reverse", "forward"}
        np.testing.assert_allclose(out["forward"][0], out["reverse"][0], rtol=1e-12)
        np.testing.assert_allclose(out["forward"][1], out["reverse"][1], rtol=1e-12)
        np.testing.assert_allclose(out["forward"][0][0], out["forward"][1], rtol=1e-12)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_group_rejects_seeds_that_differ_in_more_than_the_seed():
    with pytest.raises(ValueError, match="share every setting"):
        SeedGroupRunner([_quadratic(0), _quadratic(1)], [HPOConfig(tau=10, steps=20, sigma=8, m=3),
                                                         HPOConfig(tau=10, steps=20, sigma=8, m=2)])


def test_stack_and_slice_round_trip():
    trees = [{"a": jnp.ones(3) * i, "b": (jnp.zeros((2, 2)) + i,)} for i in range(3)]
    stacked = stack_trees(trees)
    assert stacked["a"].shape == (3, 3) and stacked["b"][0].shape == (3, 2, 2)
    for i in range(3):
        assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, seed_slice(stacked, i), trees[i]))


# ------------------------------------------------------------------ training runs (tiny random data)


def _cfg(out, method, **kw):
    base = dict(dataset="fashion_mnist", method=method, steps=40, tau=10, sigma=6, m=3, batch_size=32, lr0=0.1,
                momentum0=0.5, val_fraction=0.01, eval_every=2, checkpoint_every=2, data_dir=".", out=str(out))
    base.update(kw)
    return from_mapping(base)


def _history(path):
    import csv

    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _assert_rows_close(a, b, rtol=2e-4):
    assert len(a) == len(b) and a[0].keys() == b[0].keys()
    for ra, rb in zip(a, b):
        for k in ra:
            try:
                x, y = float(ra[k]), float(rb[k])
            except ValueError:
                try:  # ';'-separated complex numbers (the selected DMD eigenvalues, printed to 6 digits)
                    x, y = ([complex(v) for v in r[k].split(";")] for r in (ra, rb))
                except ValueError:
                    assert ra[k] == rb[k], k
                    continue
                assert x == pytest.approx(y, rel=rtol, abs=1e-5), (k, ra, rb)
                continue
            assert x == pytest.approx(y, rel=rtol, abs=1e-6, nan_ok=True), (k, ra, rb)


@pytest.mark.slow  # ~60 s each; default: test_group_of_two_equals_two_single_runs (the same property, smaller)
@pytest.mark.parametrize("method", ["local", "glocal"])  # none's fused window: test_group_of_two_equals_two_single_runs
def test_two_seeds_in_one_program_equal_two_single_runs(tmp_path, tiny_data, method):
    singles = [run_training(_cfg(tmp_path / f"single{s}", method, seed=s)) for s in (0, 1)]
    group = run_seeds(seed_configs(_cfg(tmp_path / "group", method), [0, 1]))
    assert [m["seeds_in_program"] for m in group] == [[0, 1], [0, 1]]
    for s, (one, many) in enumerate(zip(singles, group)):
        assert one["status"] == many["status"] == "complete"
        for key in ("test_accuracy", "val_accuracy"):
            assert many[key] == pytest.approx(one[key], abs=1e-6)
        for key in ("test_loss", "val_loss"):
            assert many[key] == pytest.approx(one[key], rel=1e-4)
        assert many["hyperparams"] == pytest.approx(one["hyperparams"], rel=1e-4)
        assert many["config"]["seed"] == s and many["config"]["out"] == str(tmp_path / "group" / f"seed{s}")
        _assert_rows_close(_history(tmp_path / "group" / f"seed{s}" / "history.csv"),
                           _history(tmp_path / f"single{s}" / "history.csv"))
    assert group[0]["test_loss"] != group[1]["test_loss"]  # two different seeds
    if method == "glocal":
        for s in (0, 1):
            a = np.load(tmp_path / "group" / f"seed{s}" / "dmd.npz")["hypergrads"]
            b = np.load(tmp_path / f"single{s}" / "dmd.npz")["hypergrads"]
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.slow  # ~60 s; default: test_baselines' test_resume_after_a_stop_is_bitwise (a group of two)
def test_group_resumes_all_seeds_together(tmp_path, tiny_data):
    cfgs = seed_configs(_cfg(tmp_path / "r{seed}", "glocal"), [0, 3])
    whole = run_seeds(seed_configs(_cfg(tmp_path / "w{seed}", "glocal"), [0, 3]))
    assert run_seeds(cfgs, stop_after=2)[0]["status"] == "stopped"
    for c in cfgs:
        assert json.loads((c.run_dir() / CHECKPOINT).read_text())["group"]["seeds"] == [0, 3]
    notes = []
    resumed = run_seeds(cfgs, Progress(note=notes.append))
    assert any(n.startswith("resuming from window 2 of 4 (2 seeds)") for n in notes), notes
    for s, a, b in zip((0, 3), whole, resumed):
        assert a["test_accuracy"] == b["test_accuracy"] and a["test_loss"] == b["test_loss"]
        assert _history(tmp_path / f"w{s}" / "history.csv") == _history(tmp_path / f"r{s}" / "history.csv")
        assert not (tmp_path / f"r{s}" / CHECKPOINT).exists()


def test_checkpoints_not_of_one_group_restart_every_seed(tmp_path, tiny_data):
    run_seeds(seed_configs(_cfg(tmp_path / "g{seed}", "none", steps=20), [0, 1]), stop_after=1)
    notes = []
    # seed 1 alone finds a checkpoint written by the group {0, 1}: not its own group
    run_training(_cfg(tmp_path / "g1", "none", seed=1, steps=20), Progress(note=notes.append))
    assert any("not of one group" in n and "starting every seed from window 0" in n for n in notes), notes


def test_seed_folders_and_bad_seeds(tmp_path):
    base = _cfg(tmp_path / "x", "local")
    assert [str(c.run_dir()) for c in seed_configs(base, [2, 5])] == [str(tmp_path / "x" / "seed2"),
                                                                       str(tmp_path / "x" / "seed5")]
    assert [c.seed for c in seed_configs(base, [2, 5])] == [2, 5]
    assert str(seed_configs(base, [4])[0].run_dir()) == str(tmp_path / "x")
    templ = _cfg(tmp_path / "y-{seed}", "local")
    assert [c.run_dir().name for c in seed_configs(templ, [0, 1])] == ["y-0", "y-1"]
    unset = _cfg("", "local")
    assert [c.run_dir().name for c in seed_configs(unset, [0, 1])] == [
        "fashion_mnist-optimizer-local-lr0.1-seed0", "fashion_mnist-optimizer-local-lr0.1-seed1"]
    assert parse_seeds("0,1, 2") == [0, 1, 2] and parse_seeds("[3 4]") == [3, 4]
    for bad in ("", "a,b", "-1,2", "1.5"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(UserError, match="repeats"):
        seed_configs(base, [1, 1])


def test_cli_seeds_writes_one_folder_per_seed(tmp_path, tiny_data, capsys):
    out = tmp_path / "runs" / "s{seed}"
    cli.main(["train", "--method", "local", "--steps", "20", "--tau", "10", "--batch-size", "32", "--data-dir", ".",
              "--val-fraction", "0.01", "--seeds", "0,1", "--out", str(out)])
    shown = capsys.readouterr().out
    assert "2 seeds in one program" in shown and "seed 0" in shown and "seed 1" in shown
    for s in (0, 1):
        m = json.loads((tmp_path / "runs" / f"s{s}" / "metrics.json").read_text())
        assert m["status"] == "complete" and m["config"]["seed"] == s
        assert {"jax", "jaxlib", "flax", "optax", "numpy", "python", "backend", "commit", "dirty"} <= set(m["provenance"])
    with pytest.raises(SystemExit) as ex:
        cli.main(["train", "--seeds", "0,x", "--out", str(tmp_path / "bad")])
    assert ex.value.code == 2 and not (tmp_path / "bad").exists()


def test_a_failing_seed_stops_alone_and_stays_failed_across_resume(tmp_path, tiny_data, monkeypatch):
    """Seed 1's health check fails after its first window: its history stops there, seed 0 trains on, and a
    resumed group keeps seed 1 failed and ends seed 0 exactly as a single run."""
    from glocal_cli import train as train_mod

    real_build = train_mod.build_task

    def build(cfg, splits, runtime=None):
        task = real_build(cfg, splits, runtime)
        return task._replace(health=lambda phi: "sick for the test") if cfg.seed == 1 else task

    monkeypatch.setattr(train_mod, "build_task", build)
    single = run_training(_cfg(tmp_path / "single", "local", seed=0))
    cfgs = seed_configs(_cfg(tmp_path / "g{seed}", "local"), [0, 1])
    assert run_seeds(cfgs, stop_after=2)[0]["status"] == "stopped"
    assert json.loads((tmp_path / "g1" / CHECKPOINT).read_text())["group"]["status"] == "collapsed"
    ok, sick = run_seeds(cfgs)
    assert sick["status"] == "collapsed" and "sick for the test" in sick["failure"] and sick["outer_steps"] == 1
    assert len(_history(tmp_path / "g1" / "history.csv")) == 1 and np.isnan(sick["test_accuracy"])
    assert ok["status"] == "complete" and ok["outer_steps"] == 4
    assert ok["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=1e-6)
    _assert_rows_close(_history(tmp_path / "g0" / "history.csv"), _history(tmp_path / "single" / "history.csv"))


def test_conv_batching_names_the_seed_axis():
    """blockdiag: the fused window's vmap over seeds is named models.conv.SEED_AXIS (seed_conv batches over it),
    up to conv_batching_max seeds; grouped: unnamed."""
    from glocal_cli.models.conv import SEED_AXIS

    cfgs = [HPOConfig(method="local", steps=20, tau=10, seed=s) for s in range(3)]
    problems = [_quadratic(s) for s in range(3)]
    assert SeedGroupRunner(problems[:2], cfgs[:2]).seed_axis is None  # default: grouped
    assert SeedGroupRunner(problems[:2], cfgs[:2], "blockdiag").seed_axis == SEED_AXIS
    assert SeedGroupRunner(problems, cfgs, "blockdiag", conv_batching_max=2).seed_axis is None
    with pytest.raises(ValueError, match="conv_batching must be one of grouped, blockdiag, got 'stacked'"):
        SeedGroupRunner(problems[:2], cfgs[:2], "stacked")


@pytest.mark.slow  # 30 s of CPU compilation (lax convolutions); tests/test_conv_batching.py checks seed_conv itself
def test_blockdiag_conv_batching_trains_the_same_seeds(tmp_path, tiny_data, monkeypatch):
    """cuDNN-style convolutions (conv_impl=lax) with per-seed weights batched block-diagonally
    (conv_batching=blockdiag) give the grouped runs."""
    from glocal_cli.models import conv

    calls = []
    blockdiag_conv = conv.blockdiag_conv
    monkeypatch.setattr(conv, "blockdiag_conv", lambda *a, **k: calls.append(1) or blockdiag_conv(*a, **k))
    runs = {}
    for mode in ("grouped", "blockdiag"):
        cfg = _cfg(tmp_path / mode, "glocal", conv_impl="lax", conv_batching=mode, val_batch=6, steps=20, batch_size=8,
                   sigma=4, m=2, eval_every=1, checkpoint_every=0)
        runs[mode] = run_seeds(seed_configs(cfg, [0, 1]))
        assert bool(calls) == (mode == "blockdiag")  # traced through seed_conv's block-diagonal branch
    for a, b in zip(runs["grouped"], runs["blockdiag"]):
        assert a["status"] == b["status"] == "complete"
        assert b["test_accuracy"] == pytest.approx(a["test_accuracy"], abs=1e-6)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-4)
        assert b["hyperparams"] == pytest.approx(a["hyperparams"], rel=1e-4)
    for s in (0, 1):
        _assert_rows_close(_history(tmp_path / "blockdiag" / f"seed{s}" / "history.csv"),
                           _history(tmp_path / "grouped" / f"seed{s}" / "history.csv"))
