"""Learnable inner optimizers: the optax reference, and hypergradients through any inject_hyperparams chain."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from glocal_cli.hypergrad import forward_window, reverse_window
from glocal_cli.inner_optim import hyperparams_from_phi, learnable_sgd, logit, sgd_phi0


def _tree(rng, dtype=np.float32):
    return {"a": jnp.asarray(rng.normal(size=(3, 4)), dtype), "b": jnp.asarray(rng.normal(size=(5,)), dtype)}


def test_learnable_sgd_equals_optax_chain_bitwise():
    """sigmoid(φ) hyperparameters give exactly optax's add_decayed_weights -> trace -> scale(-lr)."""
    rng = np.random.default_rng(0)
    phi = jnp.asarray(sgd_phi0(0.05, 0.9, 1e-3), jnp.float32)
    lr, mom, wd = (jax.nn.sigmoid(v) for v in phi)
    ref = optax.chain(optax.add_decayed_weights(wd), optax.trace(decay=mom), optax.scale(-lr))
    opt = learnable_sgd()
    params = _tree(rng)
    s_new, s_ref = opt.init(params), ref.init(params)
    p_new = p_ref = params
    for _ in range(4):
        grads = _tree(rng)
        u_new, s_new = opt.update(grads, s_new, p_new, phi=phi)
        u_ref, s_ref = ref.update(grads, s_ref, p_ref)
        p_new, p_ref = optax.apply_updates(p_new, u_new), optax.apply_updates(p_ref, u_ref)
        for a, b in zip(jax.tree_util.tree_leaves(p_new), jax.tree_util.tree_leaves(p_ref)):
            np.testing.assert_array_equal(a, b)
    assert opt.names == ("lr", "momentum", "weight_decay")
    np.testing.assert_allclose(float(opt.hyperparams(phi)["lr"]), 0.05, rtol=1e-6)


def test_learnable_sgd_in_an_optax_chain():
    """The transformation forwards phi through optax.chain (GradientTransformationExtraArgs)."""
    opt = learnable_sgd(("lr",))
    tx = optax.chain(optax.clip_by_global_norm(1.0), opt.tx)
    params = {"w": jnp.ones(3)}
    updates, _ = tx.update({"w": jnp.full(3, 10.0)}, tx.init(params), params, phi=jnp.asarray(logit([0.1])))
    np.testing.assert_allclose(updates["w"], -0.1 / np.sqrt(3) * np.ones(3), rtol=1e-6)


def test_learnable_sgd_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown SGD hyperparameter 'beta'"):
        learnable_sgd(("lr", "beta"))
    with pytest.raises(ValueError, match="lr must be learned"):
        learnable_sgd(("momentum",))


TAU = 8


def _problem(opt):
    """A tanh regression model trained by ``opt`` for TAU steps (float64 under the x64 fixture)."""
    rng = np.random.default_rng(1)
    xs, ys = jnp.asarray(rng.normal(size=(TAU, 6, 3))), jnp.asarray(rng.normal(size=(TAU, 6, 1)))
    data = (jnp.asarray(rng.normal(size=(10, 3))), jnp.asarray(rng.normal(size=(10, 1))))
    params = {"w1": jnp.asarray(rng.normal(size=(3, 4)) * 0.5), "w2": jnp.asarray(rng.normal(size=(4, 1)) * 0.5)}
    predict = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]

    def step(state, phi, batch, data):
        p, o = state
        g = jax.grad(lambda p_: jnp.mean((predict(p_, batch[0]) - batch[1]) ** 2))(p)
        u, o = opt.update(g, o, p, phi=phi)
        return optax.apply_updates(p, u), o

    def val_loss(state, data):
        return jnp.mean((predict(state[0], data[0]) - data[1]) ** 2)

    return step, val_loss, (params, opt.init(params)), (xs, ys), data


def test_hyperparams_from_phi_hypergradients_equal_finite_differences(x64):
    """optax.adamw's lr and weight decay driven by φ; its state has an integer count (no tangent)."""
    opt = hyperparams_from_phi(
        optax.inject_hyperparams(optax.adamw)(learning_rate=0.01, weight_decay=1e-3),
        names=("learning_rate", "weight_decay"),
        transform=jnp.exp,
    )
    step, val_loss, state0, batches, data = _problem(opt)
    assert any(jnp.issubdtype(x.dtype, jnp.integer) for x in jax.tree_util.tree_leaves(state0))
    phi = jnp.log(jnp.asarray([0.05, 0.01]))
    out = forward_window(step, val_loss, state0, phi, batches, n_record=3, data=data)

    def unrolled(p):
        s = state0
        for t in range(TAU):
            s = step(s, p, (batches[0][t], batches[1][t]), data)
        return val_loss(s, data)

    unrolled = jax.jit(unrolled)
    eps = 1e-6
    fd = [(unrolled(phi.at[i].add(eps)) - unrolled(phi.at[i].add(-eps))) / (2 * eps) for i in range(2)]
    np.testing.assert_allclose(out.hypergrads[-1], fd, rtol=1e-6, atol=1e-10)
    assert np.all(np.abs(fd) > 1e-6)
    rev = reverse_window(step, val_loss, state0, phi, batches, n_record=3, data=data)
    np.testing.assert_allclose(rev.hypergrads, out.hypergrads, rtol=1e-9, atol=1e-12)
    # the count advanced and the learned values are in the state, as inject_hyperparams does
    assert int(out.state[1].count) == TAU
    np.testing.assert_allclose(out.state[1].hyperparams["learning_rate"], 0.05)


def test_hyperparams_from_phi_checks_the_optimizer():
    with pytest.raises(ValueError, match="inject_hyperparams"):
        hyperparams_from_phi(optax.sgd(0.1), names=("learning_rate",)).init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="'lr'"):
        hyperparams_from_phi(optax.inject_hyperparams(optax.sgd)(learning_rate=0.1), names=("lr",)).init(
            {"w": jnp.ones(2)}
        )
