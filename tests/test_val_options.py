"""Validation-loss options of the tasks: val_chunk, val_precision (and their validation).

LeNet on synthetic 16x16 images (1030 validation examples, so the default 1000-example
chunks leave a remainder), patches convolutions as on CPU. Every evaluation is jitted.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glocal_cli.config import from_mapping
from glocal_cli.data.splits import Splits
from glocal_cli.errors import UserError
from glocal_cli.hypergrad import make_window_fn, tangent_hypergrad, zero_tangents
from glocal_cli.models import get_model
from glocal_cli.tasks import chunked_mean, cross_entropy, optimizer_task_for_model


def _hyper(task, val_grad="reverse"):
    """Jitted ``(state, Z) -> (h [q], v)`` of the task's validation loss."""
    vl, data = task.problem.val_loss, task.problem.data
    return jax.jit(lambda s, z: tangent_hypergrad(vl, s, z, data, val_grad))

N_TRAIN, N_VAL, SIDE = 256, 1030, 16
N_STATES = 2
# bfloat16 keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3), so h_i = g . Z_i from a bfloat16
# pass is accurate relative to the scale sum_j |g_j| |Z_ij| of the dot product, not to |h_i|, which
# can cancel. Measured on CPU (this problem, 2 states): |h_bf16 - h_f32|_i / scale_i <= 0.0013 and
# 0.0064. The relative 2-norm error ||h_bf16 - h_f32|| / ||h_f32|| is no good bound: on a 28x28
# version of this problem it was 0.15 % to 1.0 % on four states and 63 % on a fifth, where h nearly
# cancelled. Real LeNet / Fashion-MNIST states: docs/performance.md ("Validation cost options (CPU)").
BF16_SCALE_TOL = 0.02


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(N_TRAIN + N_VAL, SIDE, SIDE, 1)).astype(np.float32)
    w = rng.normal(size=(SIDE * SIDE, 10))
    y = np.argmax(x.reshape(len(x), -1) @ w, axis=1).astype(np.int32)  # a learnable labelling
    one = np.ones(1, np.float32)
    return Splits(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], x[:10], y[:10], 0 * one, one, 10, "synthetic")


def _task(splits, **kw):
    cfg = from_mapping(dict(batch_size=32, lr0=0.1, steps=40, tau=20, sigma=5, m=2, **kw))
    return optimizer_task_for_model(cfg, splits, get_model("lenet", 10, "patches")), cfg


@pytest.fixture(scope="module")
def trained(splits):
    """(task, states, tangents [q], [(h [q], v)] of the default loss): N_STATES consecutive states after 20 steps."""
    task, _ = _task(splits)
    prob = task.problem
    phi = jnp.asarray(task.phi0)
    fn = make_window_fn(prob.step, prob.val_loss, 0, "forward")
    state, tangent = prob.init_state, zero_tangents(prob.init_state, phi.shape[0])
    states, tangents = [], []
    for k in range(20 + N_STATES):  # one step a call: one compilation
        out = fn(state, phi, prob.batches(k, 1), prob.data, tangent)
        state, tangent = out.state, out.tangents
        if k >= 20:
            states.append(state)
            tangents.append(tangent)
    h = [_hyper(task)(s, z) for s, z in zip(states, tangents)]
    return task, states, tangents, h


def test_default_is_the_old_loss_bitwise(splits, trained):
    """val_chunk 0 (auto: 1000) and float32: the loss and gradient of the code before these settings."""
    _, cfg = _task(splits)
    from glocal_cli.runtime import resolve

    assert cfg.val_chunk == 0 and cfg.val_precision == "float32" and resolve(cfg.hpo).val_grad == "reverse"
    assert cfg.resolved_val_chunk() == 1000
    task, states, tangents, ref = trained
    model = get_model("lenet", 10, "patches")

    def old(state, data):  # tasks._val_loss_fn as it was
        per_example = lambda x, y: cross_entropy(model.apply({"params": state[0]}, x), y)  # noqa: E731
        return chunked_mean(per_example, data["val_x"], data["val_y"])

    data = task.problem.data
    new_h, new_v = ref[-1]
    old_h, old_v = jax.jit(lambda s, z: tangent_hypergrad(old, s, z, data))(states[-1], tangents[-1])
    assert np.array_equal(np.asarray(new_h), np.asarray(old_h)) and float(new_v) == float(old_v)


def test_val_chunk_whole_set_and_odd_chunks_agree(splits, trained):
    task, states, tangents, ref = trained
    for chunk in (N_VAL, 7):
        other, _ = _task(splits, val_chunk=chunk)
        fn = _hyper(other)
        for (h0, v0), s, z in zip(ref, states, tangents):
            h, v = fn(s, z)
            np.testing.assert_allclose(v, v0, rtol=2e-6)
            np.testing.assert_allclose(h, h0, rtol=2e-4, atol=1e-6 * float(jnp.max(jnp.abs(h0))))


def test_val_chunk_auto_is_1000_on_every_backend(splits, monkeypatch):
    _, cfg = _task(splits)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # the whole set needs ~46 GB for 20 states: not auto
    assert cfg.model == "lenet" and cfg.resolved_val_chunk() == 1000
    assert dataclasses.replace(cfg, val_chunk=250).resolved_val_chunk() == 250


def test_bfloat16_hypergradient_close_to_float32(splits, trained):
    """Mixed precision validation: each h_i within BF16_SCALE_TOL of its dot-product scale, the loss within 1 %."""
    task, states, tangents, ref = trained
    bf, _ = _task(splits, val_precision="bfloat16")
    f16 = _hyper(bf)
    grad = jax.jit(jax.grad(task.problem.val_loss))
    ratios = []
    for s, z, (h32, v32) in zip(states, tangents, ref):
        h16, v16 = f16(s, z)
        assert h16.dtype == jnp.float32 and v16.dtype == jnp.float32 and np.all(np.isfinite(h16))
        assert abs(float(v16) - float(v32)) <= 0.01 * abs(float(v32))
        g = grad(s, task.problem.data)[0]
        scale = sum(jnp.sum(jnp.abs(a)[None] * jnp.abs(b).reshape((b.shape[0],) + a.shape), axis=tuple(range(1, b.ndim)))
                    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(z[0])))
        ratios.append(np.max(np.abs(np.asarray(h16) - np.asarray(h32)) / np.asarray(scale)))
    print("bf16 |dh| / scale:", ratios)
    assert 0 < max(ratios) < BF16_SCALE_TOL, ratios  # > 0: it did compute in bfloat16


def test_forward_val_grad_through_lenet(splits, trained):
    """val_grad forward on the LeNet task (integer optimizer-state leaves): same h as reverse, float32 rounding."""
    task, states, tangents, ref = trained
    fwd = _hyper(task, "forward")
    for s, z, (h_r, v_r) in zip(states, tangents, ref):
        h_f, v_f = fwd(s, z)
        np.testing.assert_allclose(h_f, h_r, rtol=1e-3, atol=1e-5 * float(jnp.max(jnp.abs(h_r))))
        np.testing.assert_allclose(v_f, v_r, rtol=1e-6)


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(val_chunk=-1), "--val-chunk must be >= 0 (0: auto), got -1"),
        (dict(val_precision="float16"), "--val-precision 'float16' is not one of: float32, bfloat16"),
        (dict(val_grad="sideways"), "--val-grad 'sideways' is not one of: auto, reverse, forward"),
    ],
)
def test_bad_values(kw, needle):
    with pytest.raises(UserError) as e:
        from_mapping(kw)
    assert needle in str(e.value)


def test_val_grad_auto_is_reverse_on_cpu_forward_on_an_accelerator(monkeypatch):
    from glocal_cli.hpo import HPOConfig
    from glocal_cli.runtime import resolve

    cfg = HPOConfig()  # glocal: records sigma = 20
    rt = resolve(cfg)
    assert cfg.val_grad == "auto" and (rt.backend, rt.val_grad, rt.val_batch) == ("cpu", "reverse", 0)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    rt = resolve(cfg)
    assert (rt.backend, rt.val_grad, rt.val_batch) == ("gpu", "forward", 20)
    assert resolve(HPOConfig(method="local")).val_batch == 1  # all the window records
    assert resolve(HPOConfig(val_grad="reverse")).val_grad == "reverse"
    assert resolve(HPOConfig(val_batch=3)).val_batch == 3
