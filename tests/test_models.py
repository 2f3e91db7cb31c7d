"""Tests of glocal_cli.models: parameter counts, PatchConv == nn.Conv in every AD mode."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glocal_cli.models import (
    LeNet,
    MetaMLP,
    PatchConv,
    WideResNet,
    get_model,
)


def n_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def abstract_params(model, shape):
    """Parameter shapes without running (or compiling) the initializer."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))


def numpy_params(abstract, seed=0, dtype=np.float64):
    """Random parameters for an abstract parameter tree, drawn with numpy.

    Much cheaper than compiling the model's initializers (the tests only need generic
    values): kernels ~ N(0, 1/fan_in), group-norm scales ~ 1 + N(0, 0.01), other
    vectors ~ N(0, 0.01).
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        shape = leaf.shape
        if len(shape) >= 2:
            v = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            v = 0.1 * rng.normal(size=shape) + (1.0 if "scale" in name else 0.0)
        return jnp.asarray(v, dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.fixture
def x64():
    """Enables float64 for one test and restores the previous setting afterwards."""
    with jax.enable_x64(True):
        yield


def tree_allclose(a, b, atol, rtol=0.0):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(la, lb):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------- counts


@pytest.mark.parametrize(
    "name, num_classes, shape, expected",
    [
        ("lenet", 10, (1, 28, 28, 1), 15_386),
        ("lenet", 10, (1, 32, 32, 3), 20_794),  # SVHN
        ("wrn28_2", 10, (1, 32, 32, 3), 1_467_610),
        ("wrn28_2", 100, (1, 32, 32, 3), 1_479_220),
        ("wrn16_2", 10, (1, 32, 32, 3), 691_674),
        ("wrn16_2", 100, (1, 32, 32, 3), 703_284),
    ],
)
def test_param_counts(name, num_classes, shape, expected):
    for impl in ("patches", "lax"):
        model = get_model(name, num_classes, conv_impl=impl)
        params = abstract_params(model, shape)
        assert n_params(params) == expected
        out = jax.eval_shape(model.apply, params, jnp.zeros(shape))
        assert out.shape == (shape[0], num_classes)


def test_param_trees_identical_across_conv_impl():
    for name, shape in (("lenet", (1, 28, 28, 1)), ("wrn16_2", (1, 32, 32, 3))):
        a = abstract_params(get_model(name, 10, conv_impl="patches"), shape)
        b = abstract_params(get_model(name, 10, conv_impl="lax"), shape)
        assert jax.tree.structure(a) == jax.tree.structure(b)
        assert [x.shape for x in jax.tree.leaves(a)] == [x.shape for x in jax.tree.leaves(b)]


def test_meta_mlp():
    model = MetaMLP()
    losses = jnp.array([0.0, 0.5, 2.0, 10.0, 100.0])
    params = model.init(jax.random.key(0), losses)
    assert n_params(params) == 385
    w = model.apply(params, losses)
    assert w.shape == losses.shape
    assert bool(jnp.all((w > 0) & (w < 1)))


def test_get_model_errors():
    with pytest.raises(ValueError, match="unknown model"):
        get_model("resnet50", 10)
    with pytest.raises(ValueError, match="unknown conv_impl"):
        get_model("lenet", 10, conv_impl="cudnn")


# ------------------------------------------------------------------ PatchConv == Conv

CONV_CASES = [
    # kwargs, input shape
    (dict(features=4, kernel_size=(3, 3)), (2, 7, 7, 3)),
    (dict(features=5, kernel_size=(5, 5), padding="VALID"), (2, 9, 8, 2)),
    (dict(features=3, kernel_size=(3, 3), strides=2), (2, 9, 8, 3)),
    (dict(features=3, kernel_size=(3, 3), strides=2, padding="VALID", use_bias=False), (1, 10, 9, 2)),
    (dict(features=4, kernel_size=(1, 1), strides=2, padding="VALID"), (2, 8, 8, 3)),
    (dict(features=2, kernel_size=(3, 2), strides=(2, 1), padding=((1, 2), (0, 1))), (2, 7, 6, 3)),
    (dict(features=2, kernel_size=(3, 3), padding=1, kernel_dilation=2), (2, 8, 8, 2)),
    (dict(features=3, kernel_size=3), (2, 9, 2)),  # 1-D
    (dict(features=3, kernel_size=(3, 3)), (6, 6, 2)),  # no batch dimension
    (dict(features=3, kernel_size=(2, 2), padding="VALID"), (2, 2, 5, 5, 2)),  # 2 batch dims
]


def _all_derivatives(mod, params, x, tp, tx):
    """Values, jvp, grad and jvp-of-grad of ``mod`` at (params, x); one jitted function."""

    def f(p, x):
        return mod.apply(p, x)

    def loss(p, x):
        return jnp.sum(jnp.sin(f(p, x)) ** 2)

    gfun = jax.grad(loss, argnums=(0, 1))
    return dict(
        value=f(params, x),
        jvp=jax.jvp(f, (params, x), (tp, tx))[1],
        grad=gfun(params, x),
        jvp_of_grad=jax.jvp(gfun, (params, x), (tp, tx))[1],
    )


def test_patch_conv_init_matches_nn_conv():
    """Same names, shapes and default initializers -> identical parameters."""
    x = jnp.zeros((1, 6, 6, 3))
    init = jax.jit(lambda k: (PatchConv(4, (3, 3)).init(k, x), nn.Conv(4, (3, 3)).init(k, x)))
    a, b = init(jax.random.key(0))
    tree_allclose(a, b, atol=0)


@pytest.mark.parametrize(
    "kwargs, shape, patch_impl",
    [(k, s, "cgdp") for k, s in CONV_CASES]
    # The alternative patch extraction, on the cases with strides / padding / dilation / 1-D.
    + [(k, s, "slices") for k, s in (CONV_CASES[i] for i in (3, 5, 6, 7))],
)
def test_patch_conv_matches_nn_conv(x64, kwargs, shape, patch_impl):
    """Values, jvp, grad and jvp-of-grad agree in float64 (atol 1e-10, rtol 1e-10)."""
    ref = nn.Conv(param_dtype=jnp.float64, **kwargs)
    pc = PatchConv(param_dtype=jnp.float64, patch_impl=patch_impl, **kwargs)
    rng = np.random.default_rng(sum(shape))
    x = jnp.asarray(rng.normal(size=shape))
    tx = jnp.asarray(rng.normal(size=shape))
    abstract = jax.eval_shape(ref.init, jax.random.key(0), x)
    assert jax.tree.structure(abstract) == jax.tree.structure(jax.eval_shape(pc.init, jax.random.key(0), x))
    params, tp = numpy_params(abstract, 1), numpy_params(abstract, 2)

    @jax.jit
    def both(params, x, tp, tx):
        return _all_derivatives(pc, params, x, tp, tx), _all_derivatives(ref, params, x, tp, tx)

    got, want = both(params, x, tp, tx)
    assert got["value"].shape == want["value"].shape and got["value"].dtype == jnp.float64
    np.testing.assert_allclose(got["value"], want["value"], rtol=0, atol=1e-10)
    tree_allclose(got, want, atol=1e-10, rtol=1e-10)


def test_patch_conv_rejects_circular():
    with pytest.raises(ValueError, match="PatchConv supports"):
        PatchConv(2, (3, 3), padding="CIRCULAR").init(jax.random.key(0), jnp.zeros((1, 5, 5, 1)))


# ---------------------------------------------------------------------------- models


def _sgd_window(model, steps=2, lr=0.1):
    """A short SGD window in lax.scan whose learning rate is a (differentiated) input."""

    def loss_fn(params, x, y):
        logits = model.apply(params, x)
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(y, 10), -1))

    def window(params, lr, xs, ys):
        def step(p, batch):
            g = jax.grad(loss_fn)(p, *batch)
            return jax.tree.map(lambda a, b: a - lr * b, p, g), None

        p, _ = jax.lax.scan(step, params, (xs, ys))
        return loss_fn(p, xs[0], ys[0])

    return window


def test_lenet_patches_equals_lax(x64):
    shape = (4, 28, 28, 1)
    x = jax.random.normal(jax.random.key(2), shape, jnp.float64)
    y = jnp.arange(4) % 10
    pat, lax_ = LeNet(conv_impl="patches"), LeNet(conv_impl="lax")
    params = numpy_params(abstract_params(pat, shape), 3)
    xs, ys = jnp.stack([x, -x]), jnp.stack([y, y])

    @jax.jit
    def run(params):
        out = []
        for m in (pat, lax_):
            def loss(p, m=m):
                logits = m.apply(p, x)
                return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(4), y])

            # jvp (w.r.t. the learning rate) of a scanned training window that calls grad.
            window = _sgd_window(m)
            hyper = jax.jvp(lambda lr: window(params, lr, xs, ys), (jnp.float64(0.1),), (jnp.float64(1.0),))
            out.append((m.apply(params, x), jax.grad(loss)(params), hyper))
        return out

    got, want = run(params)
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-10)
    tree_allclose(got, want, atol=1e-10, rtol=1e-10)
    assert np.isfinite(got[2][1]) and got[2][1] != 0


def test_small_wrn_patches_equals_lax(x64):
    """A WRN-10-1 (same block types, fewer of them) so the test stays fast."""
    x = jax.random.normal(jax.random.key(4), (2, 8, 8, 3), jnp.float64)
    pat = WideResNet(depth=10, widen_factor=1, conv_impl="patches")
    lax_ = WideResNet(depth=10, widen_factor=1, conv_impl="lax")
    params = numpy_params(abstract_params(pat, x.shape), 5)

    @jax.jit
    def run(params):
        return [
            (m.apply(params, x), jax.grad(lambda p, m=m: jnp.sum(jnp.tanh(m.apply(p, x))))(params))
            for m in (pat, lax_)
        ]

    got, want = run(params)
    assert got[0].shape == (2, 10) and bool(jnp.all(jnp.isfinite(got[0])))
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-10)
    tree_allclose(got, want, atol=1e-10, rtol=1e-10)
