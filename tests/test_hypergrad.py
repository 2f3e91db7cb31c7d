"""Local hypergradients: forward mode vs finite differences, reverse mode and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glocal_cli import quadratic
from glocal_cli.hypergrad import choose_mode, forward_window, reverse_window, tangent_hypergrad, window_hypergrads
from glocal_cli.inner_optim import learnable_sgd, sgd_phi0

TAU, BATCH = 12, 8


def mlp_problem(seed=0):
    """A 2-layer MLP on random regression data, SGD with learnable lr/momentum/wd."""
    rng = np.random.default_rng(seed)
    x_tr, y_tr = rng.normal(size=(TAU, BATCH, 3)), rng.normal(size=(TAU, BATCH, 1))
    x_val, y_val = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))
    params = {"w1": rng.normal(size=(3, 5)) * 0.5, "w2": rng.normal(size=(5, 1)) * 0.5}
    params = jax.tree_util.tree_map(jnp.asarray, params)
    opt = learnable_sgd()

    def predict(p, x):
        return jnp.tanh(x @ p["w1"]) @ p["w2"]

    def step(state, phi, batch, data):
        p, o = state
        x, y = batch
        g = jax.grad(lambda p_: jnp.mean((predict(p_, x) - y) ** 2))(p)
        updates, o = opt.update(g, o, p, phi=phi)
        return (jax.tree_util.tree_map(lambda a, u: a + u, p, updates), o)

    def val_loss(state, data):
        x, y = data
        return jnp.mean((predict(state[0], x) - y) ** 2)

    state0 = (params, opt.init(params))
    batches = (jnp.asarray(x_tr), jnp.asarray(y_tr))
    phi = jnp.asarray(sgd_phi0(0.2, 0.5, 0.01))
    return step, val_loss, state0, phi, batches, (jnp.asarray(x_val), jnp.asarray(y_val))


def unrolled_val_losses(step, val_loss, state, batches, data):
    """``phi -> [τ]`` validation losses by a plain Python unroll (the reference), jitted once."""
    return jax.jit(lambda phi: _unroll(step, val_loss, state, phi, batches, data))


def _unroll(step, val_loss, state, phi, batches, data):
    vals = []
    for t in range(TAU):
        state = step(state, phi, jax.tree_util.tree_map(lambda b: b[t], batches), data)
        vals.append(val_loss(state, data))
    return jnp.stack(vals)


def test_forward_equals_finite_differences(x64):
    step, val_loss, state0, phi, batches, data = mlp_problem()
    out = forward_window(step, val_loss, state0, phi, batches, n_record=5, data=data)
    assert out.hypergrads.shape == (5, 3)
    eps = 1e-6
    unrolled = unrolled_val_losses(step, val_loss, state0, batches, data)
    fd = []
    for i in range(3):
        e = jnp.zeros(3).at[i].set(eps)
        up = unrolled(phi + e)
        dn = unrolled(phi - e)
        fd.append((up - dn) / (2 * eps))
    fd = jnp.stack(fd, axis=1)[-5:]
    np.testing.assert_allclose(out.hypergrads, fd, rtol=1e-6, atol=1e-9)
    ref_vals = unrolled(phi)[-5:]
    np.testing.assert_allclose(out.val_losses, ref_vals, rtol=1e-12)


def test_reverse_equals_forward(x64):
    step, val_loss, state0, phi, batches, data = mlp_problem(seed=1)
    fwd = forward_window(step, val_loss, state0, phi, batches, n_record=4, data=data)
    rev = reverse_window(step, val_loss, state0, phi, batches, n_record=4, data=data)
    np.testing.assert_allclose(rev.hypergrads, fwd.hypergrads, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rev.val_losses, fwd.val_losses, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(rev.state), jax.tree_util.tree_leaves(fwd.state)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_tangents_carry_across_windows(x64):
    """Two windows with tangents carried equal one window of twice the length."""
    step, val_loss, state0, phi, batches, data = mlp_problem(seed=2)
    half = jax.tree_util.tree_map(lambda b: b[: TAU // 2], batches)
    rest = jax.tree_util.tree_map(lambda b: b[TAU // 2 :], batches)
    a = forward_window(step, val_loss, state0, phi, half, n_record=0, data=data)
    b = forward_window(step, val_loss, a.state, phi, rest, n_record=1, tangents=a.tangents, data=data)
    whole = forward_window(step, val_loss, state0, phi, batches, n_record=1, data=data)
    np.testing.assert_allclose(b.hypergrads, whole.hypergrads, rtol=1e-12)


def test_quadratic_closed_form(x64):
    qp = quadratic.make_quadratic(p=4, q=2, seed=3)
    theta0 = np.random.default_rng(0).normal(size=4)
    phi = np.array([0.3, -0.4])
    prob = quadratic.inner_problem(qp, theta0)
    out = window_hypergrads(prob.step, prob.val_loss, prob.init_state, jnp.asarray(phi), prob.batches(0, 30), 30)
    ref = np.stack([quadratic.hypergrad_closed_form(qp, theta0, phi, t) for t in range(1, 31)])
    np.testing.assert_allclose(out.hypergrads, ref, rtol=1e-10, atol=1e-12)


def test_choose_mode():
    assert choose_mode(3) == "forward"
    assert choose_mode(385) == "reverse"
    assert choose_mode(385, "forward") == "forward"
    with pytest.raises(ValueError, match="unknown hypergradient mode"):
        choose_mode(3, "sideways")


def test_float32_matches_float64():
    """The accelerator dtype (float32) agrees with float64 to float32 precision."""
    step, val_loss, state0, phi, batches, data = mlp_problem()
    out32 = forward_window(step, val_loss, state0, phi, batches, n_record=2, data=data)
    with jax.enable_x64(True):
        step, val_loss, state0, phi, batches, data = mlp_problem()
        state0 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), state0)
        out64 = forward_window(step, val_loss, state0, jnp.asarray(phi, jnp.float64), batches, n_record=2, data=data)
    assert out32.hypergrads.dtype == jnp.float32
    np.testing.assert_allclose(out32.hypergrads, out64.hypergrads, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("val_batch", [1, 2, 5])
def test_batched_validation_equals_in_scan(x64, val_batch):
    """Evaluating the recorded states after the scan (GPU path) gives the same hypergradients."""
    step, val_loss, state0, phi, batches, data = mlp_problem(seed=4)
    a = forward_window(step, val_loss, state0, phi, batches, n_record=5, data=data)
    b = forward_window(step, val_loss, state0, phi, batches, n_record=5, data=data, val_batch=val_batch)
    np.testing.assert_allclose(b.hypergrads, a.hypergrads, rtol=1e-12)
    np.testing.assert_allclose(b.val_losses, a.val_losses, rtol=1e-12)


@pytest.mark.parametrize("val_batch", [0, 2])
def test_forward_val_grad_equals_reverse_and_finite_differences(x64, val_batch):
    """``val_grad="forward"`` (q jvps of the val loss) = the reverse contraction = central differences (float64)."""
    step, val_loss, state0, phi, batches, data = mlp_problem(seed=5)
    rev = forward_window(step, val_loss, state0, phi, batches, n_record=4, data=data, val_batch=val_batch)
    fwd = forward_window(step, val_loss, state0, phi, batches, n_record=4, data=data, val_batch=val_batch,
                         val_grad="forward")
    np.testing.assert_allclose(fwd.hypergrads, rev.hypergrads, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fwd.val_losses, rev.val_losses, rtol=1e-14)
    unrolled = unrolled_val_losses(step, val_loss, state0, batches, data)
    eps = 1e-6
    fd = jnp.stack([(unrolled(phi + eps * e) - unrolled(phi - eps * e)) / (2 * eps) for e in jnp.eye(3)], axis=1)[-4:]
    np.testing.assert_allclose(fwd.hypergrads, fd, rtol=1e-6, atol=1e-9)


def test_tangent_hypergrad_forward_and_reverse_on_random_tangents(x64):
    """One evaluation ``h = ∇ℓ · Z`` for arbitrary tangents: jvp (forward) against grad-and-contract (reverse).

    The state has an integer leaf (a step count), whose float32 zero placeholder in ``Z`` is skipped.
    """
    step, val_loss, state0, phi, batches, data = mlp_problem(seed=6)
    state0 = state0 + (jnp.asarray(7, jnp.int32),)
    rng = np.random.default_rng(0)
    Z = jax.tree_util.tree_map(
        lambda x: jnp.asarray(rng.normal(size=(3,) + x.shape)) if x.dtype != jnp.int32 else jnp.zeros((3,), jnp.float32),
        state0)
    h_r, v_r = tangent_hypergrad(val_loss, state0, Z, data, "reverse")
    h_f, v_f = tangent_hypergrad(val_loss, state0, Z, data, "forward")
    assert h_f.shape == (3,) and v_f.shape == ()
    np.testing.assert_allclose(h_f, h_r, rtol=1e-12)
    assert float(v_f) == float(v_r)
    with pytest.raises(ValueError, match="val_grad must be one of reverse, forward, got 'sideways'"):
        tangent_hypergrad(val_loss, state0, Z, data, "sideways")
