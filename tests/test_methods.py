"""The methods as objects and the one window path: the registry, programs shared by their static
arguments, every method's seed group against its single runs, the runtime resolved once."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glocal_cli import hpo, runtime
from glocal_cli.hpo import HPOConfig, InnerProblem
from glocal_cli.methods import METHOD_CLASSES, GlobalMethod, Method
from glocal_cli.runner import HPORunner, SeedGroupRunner
from glocal_cli.seeds import slice_state

from test_seeds import _quadratic


def _with_train_loss(problem: InnerProblem) -> InnerProblem:
    """The quadratic with the training loss its step descends, ½θᵀAθ − θᵀ(b + Bφ), for sgld."""

    def train_loss(theta, phi, t, d):
        return 0.5 * theta @ d["A"] @ theta - theta @ (d["b"] + d["B"] @ phi) + theta @ d["noise"][t]

    def val_loss_batch(theta, idx, d):
        return 0.5 * jnp.sum((theta - d["target"]) ** 2)

    def step(state, phi, t, d):  # sgld's inner state is (params, ...): the quadratic's θ wrapped in a tuple
        return (problem.step(state[0], phi, t, d),)

    return problem._replace(init_state=(problem.init_state,), step=step,
                            val_loss=lambda state, d: problem.val_loss(state[0], d), train_loss=train_loss,
                            val_loss_batch=val_loss_batch, n_train=1000, n_val=100)


def test_every_method_a_config_accepts_is_a_class():
    assert set(METHOD_CLASSES) == set(hpo.METHODS)
    for name, cls in METHOD_CLASSES.items():
        assert issubclass(cls, Method) and cls.name == name
    assert [n for n, c in METHOD_CLASSES.items() if not c.tunes] == ["none"]
    assert [n for n, c in METHOD_CLASSES.items() if c.samples] == ["sgld"]


def test_runners_on_one_problem_share_their_programs(x64):
    """Methods compare by their functions and settings: runners built on one problem (another seed's batches
    included) get the same compiled program, and a window is traced once across them."""
    traces = []
    base = _quadratic(0)

    def step(theta, phi, t, d):
        traces.append(1)  # runs when traced, not when the compiled program runs
        return base.step(theta, phi, t, d)

    problem = base._replace(step=step)
    cfg = HPOConfig(method="local", steps=40, tau=10, outer_lr=0.05)
    a = HPORunner(problem, cfg)
    b = a.with_config(cfg, problem._replace(batches=lambda start, n: np.arange(start + 1, start + n + 1, dtype=np.int32)))
    assert a.method == b.method and hash(a.method) == hash(b.method)
    assert a.group.program(a.method.window, True) is b.group.program(b.method.window, True)
    hs = a.run_window(a.init(np.zeros(2)))[0]
    n = len(traces)
    a.run_window(hs)
    b.run_window(b.init(np.zeros(2)))
    assert n > 0 and len(traces) == n  # no retrace, no recompilation
    other = HPORunner(problem, dataclasses.replace(cfg, outer_lr=0.3))  # another outer optimizer: another program
    assert other.method != a.method


@pytest.mark.parametrize("method", ["global", "sgld"])
def test_group_of_two_equals_two_single_runs(method, x64):
    """global (a host loop over chunks vmapped over the seeds) and sgld (its window vmapped, keys per seed),
    as none / local / glocal in test_seeds."""
    kw = dict(method=method, steps=30, tau=10, outer_lr=0.05, global_outer_steps=2)
    cfgs = [HPOConfig(seed=s, **kw) for s in range(2)]
    problems = [_quadratic(s) for s in range(2)]
    if method == "sgld":
        problems = [_with_train_loss(p) for p in problems]
        cfgs = [dataclasses.replace(c, sgld=dataclasses.replace(c.sgld, step_size=0.05, val_batch=4)) for c in cfgs]
    group = SeedGroupRunner(problems, cfgs)
    gs = group.init([np.zeros(2)] * 2)
    recs = []
    while not group.done(gs):
        gs, rec = group.run_window(gs)
        recs.append(rec)
    for s in range(2):
        single = HPORunner(problems[s], cfgs[s])
        hs = single.init(np.zeros(2))
        for rec in recs:
            hs, one = single.run_window(hs)
            np.testing.assert_allclose(rec.seed(s).hypergrad_used, one.hypergrad_used, rtol=1e-10, atol=1e-14)
            assert rec.seed(s).finite == one.finite
        mine = slice_state(gs, s)
        np.testing.assert_allclose(np.asarray(mine.phi), np.asarray(hs.phi), rtol=1e-10, atol=1e-14)
        for x, y in zip(jax.tree_util.tree_leaves((mine.inner, mine.aux)), jax.tree_util.tree_leaves((hs.inner, hs.aux))):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-10, atol=1e-14)
    assert not np.allclose(gs.phi[0], gs.phi[1])  # the seeds really differ


def test_global_retrains_from_theta0_kept_in_its_own_state(x64):
    problem = _quadratic(0)
    runner = HPORunner(problem, HPOConfig(method="global", steps=20, tau=10, outer_lr=0.05, global_outer_steps=2))
    assert isinstance(runner.method, GlobalMethod) and runner.method.window is None
    hs = runner.init(np.zeros(2))
    np.testing.assert_array_equal(np.asarray(hs.aux), np.asarray(problem.init_state))
    hs, rec = runner.run_window(hs)
    np.testing.assert_array_equal(np.asarray(hs.aux), np.asarray(problem.init_state))  # θ_0 stays
    assert rec.step == 20 and runner.inner_steps_done(hs) == 20 and rec.hypergrads.shape == (1, 2)


def test_runtime_rules_one_per_choice():
    cfg = HPOConfig()  # glocal, sigma 20
    cpu, gpu = runtime.resolve(cfg, backend="cpu"), runtime.resolve(cfg, backend="gpu")
    assert (cpu.val_grad, cpu.val_batch, cpu.conv_impl) == ("reverse", 0, "")
    assert (gpu.val_grad, gpu.val_batch) == ("forward", 20)
    assert runtime.conv_impl("auto", "cpu") == "patches" and runtime.conv_impl("auto", "gpu") == "lax"
    assert runtime.conv_impl("lax", "cpu") == "lax" and runtime.val_batch(5, 20, "gpu") == 5
    assert cpu.differences(cpu.to_dict()) == []
    assert cpu.differences(gpu.to_dict()) == ["backend: 'gpu' -> 'cpu'", "val_grad: 'forward' -> 'reverse'",
                                              "val_batch: 20 -> 0"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cpu.val_grad = "forward"
