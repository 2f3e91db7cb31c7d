"""models.conv.seed_conv: block-diagonal convolutions over a seed group's named axis equal JAX's grouped ones (float64)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from glocal_cli import seeds
from glocal_cli.config import from_mapping
from glocal_cli.errors import UserError
from glocal_cli.models import LeNet
from glocal_cli.models.conv import SEED_AXIS, blockdiag_conv, seed_conv


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


# (lhs shape, rhs shape, dimension numbers, conv kwargs): 2-D channels-last and first, 1-D, strides,
# padding, both dilations
CASES = [
    ((4, 9, 9, 2), (3, 3, 2, 5), ("NHWC", "HWIO", "NHWC"), dict(window_strides=(2, 1), padding="SAME",
                                                                 rhs_dilation=(1, 2))),
    ((3, 2, 8, 7), (4, 2, 3, 2), ("NCHW", "OIHW", "NCHW"), dict(window_strides=(1, 1), padding=((1, 0), (2, 1)),
                                                                 lhs_dilation=(2, 1))),
    ((2, 11, 3), (3, 3, 6), ("NWC", "WIO", "NWC"), dict(window_strides=(1,), padding="VALID")),
]


def _fns(conv_fn, dn, kw):
    """conv, jvp, grad and jvp-of-grad (forward over reverse: what the local hypergradient differentiates)."""

    def conv(x, w):
        return conv_fn(x, w, dimension_numbers=dn, **kw)

    def f(x, w):
        return jnp.sum(jnp.tanh(conv(x, w)) ** 2)

    def grad(x, w):
        return jax.grad(f, argnums=(0, 1))(x, w)

    return {"conv": conv,
            "jvp": lambda x, w: jax.jvp(f, (x, w), (jnp.cos(x), jnp.sin(w)))[1],
            "grad": grad,
            "jvp_of_grad": lambda x, w: jax.jvp(grad, (x, w), (jnp.cos(x), jnp.sin(w)))[1]}


def _group_counts(fn, *args):
    text = str(jax.make_jaxpr(fn)(*args))
    counts = re.findall(r"feature_group_count=(\d+)", text) + re.findall(r"batch_group_count=(\d+)", text)
    assert counts, "no convolution in the jaxpr"
    return {int(v) for v in counts}


def _assert_trees_close(got, ref, **kw):
    """float64 agreement to 1e-12 of each leaf's scale (sums in another order differ in the last digits)."""
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
        scale = max(1.0, float(np.max(np.abs(a))))
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12 * scale, **kw)


def _operands(case, s, key=0, dtype=np.float64):
    """``[s, *lhs shape]``, ``[s, *rhs shape]`` normal draws (NumPy's: jax.random would compile for every shape)."""
    lhs_shape, rhs_shape, _, _ = CASES[case]
    rng = np.random.default_rng(key)
    return tuple(jnp.asarray(rng.standard_normal((s,) + shape).astype(dtype)) for shape in (lhs_shape, rhs_shape))


@pytest.mark.parametrize("case", range(len(CASES)))
def test_seed_conv_equals_grouped_float64(x64, case):
    """Over the seed axis: conv, jvp, grad and jvp-of-grad equal JAX's grouped batching; every convolution ungrouped."""
    _, _, dn, kw = CASES[case]
    s = 3
    x, w = _operands(case, s)
    ref = _fns(lax.conv_general_dilated, dn, kw)
    mine = _fns(seed_conv, dn, kw)
    for name in ref:
        assert max(_group_counts(jax.vmap(ref[name]), x, w)) == s, name  # JAX's rule: grouped
        assert _group_counts(jax.vmap(mine[name], axis_name=SEED_AXIS), x, w) == {1}, name  # autodiff's included
    both = lambda fns: lambda x, w: {k: f(x, w) for k, f in fns.items()}  # noqa: E731  (one compilation)
    _assert_trees_close(jax.jit(jax.vmap(both(mine), axis_name=SEED_AXIS))(x, w), jax.jit(jax.vmap(both(ref)))(x, w))


def test_nested_vmaps_and_mapped_axis_anywhere(x64):
    """Inside the seed axis: q tangents over the inputs (jvp-of-grad), σ validations over the weights (JAX's
    rule, grouped by σ only), and seed axes not in front."""
    _, _, dn, kw = CASES[0]
    x, w = _operands(0, 2, key=1)

    def nested(conv_fn):
        fns = _fns(conv_fn, dn, kw)

        def q_tangents(x, w):  # 3 tangent directions of the input, one kernel
            dxs = jnp.stack([jnp.cos(x), jnp.sin(x), x])
            return jax.vmap(lambda dx: jax.jvp(fns["grad"], (x, w), (dx, jnp.zeros_like(w)))[1])(dxs)

        def sigma(x, w):  # 3 snapshots of the weights, one input
            return jax.vmap(lambda ww: fns["conv"](x, ww))(jnp.stack([w, 2 * w, jnp.sin(w)]))

        return q_tangents, sigma

    for ref, mine in zip(nested(lax.conv_general_dilated), nested(seed_conv)):
        blockdiag = jax.vmap(mine, axis_name=SEED_AXIS)
        _assert_trees_close(jax.jit(blockdiag)(x, w), jax.jit(jax.vmap(ref))(x, w))
        assert max(_group_counts(jax.vmap(ref), x, w)) in (2, 6)  # grouped by the 2 seeds (times σ)
        assert _group_counts(blockdiag, x, w) <= {1, 3}  # by σ at most, never by the seeds
    conv_ref, conv = _fns(lax.conv_general_dilated, dn, kw)["conv"], _fns(seed_conv, dn, kw)["conv"]
    xm, wm = jnp.moveaxis(x, 0, -1), jnp.moveaxis(w, 0, 2)
    blockdiag = jax.vmap(conv, in_axes=(-1, 2), out_axes=1, axis_name=SEED_AXIS)
    _assert_trees_close(jax.jit(blockdiag)(xm, wm), jax.jit(jax.vmap(conv_ref, in_axes=(-1, 2), out_axes=1))(xm, wm))
    assert _group_counts(blockdiag, xm, wm) == {1}


def test_outside_a_seed_group_it_is_lax_conv():
    """No seed axis bound (one seed, another vmap, the CPU default path): the very jaxpr of lax.conv_general_dilated;
    grouped convolutions keep JAX's batching inside the seed axis too."""
    _, _, dn, kw = CASES[0]
    x, w = _operands(0, 2, dtype=np.float32)
    for name, fn in _fns(seed_conv, dn, kw).items():
        ref = _fns(lax.conv_general_dilated, dn, kw)[name]
        assert str(jax.make_jaxpr(fn)(x[0], w[0])) == str(jax.make_jaxpr(ref)(x[0], w[0])), name
        assert str(jax.make_jaxpr(jax.vmap(fn, axis_name="other"))(x, w)) == str(jax.make_jaxpr(jax.vmap(ref))(x, w))
    wg = w[..., :1, :4]  # [S, 3, 3, 1, 4]: two groups of one input feature
    grouped = lambda a, b: seed_conv(a, b, dimension_numbers=dn, feature_group_count=2, **kw)  # noqa: E731
    ref = lambda a, b: lax.conv_general_dilated(a, b, dimension_numbers=dn, feature_group_count=2, **kw)  # noqa: E731
    mine = jax.vmap(grouped, axis_name=SEED_AXIS)
    np.testing.assert_array_equal(np.asarray(mine(x, wg)), np.asarray(jax.vmap(ref)(x, wg)))
    assert _group_counts(mine, x, wg) == {1, 4}  # feature_group_count 4 = 2 seeds x 2 groups


@pytest.mark.parametrize("case", range(len(CASES)))
def test_blockdiag_conv_equals_per_example_convolutions(x64, case):
    _, _, dn, kw = CASES[case]
    x, w = _operands(case, 3, key=3)
    ref = np.stack([np.asarray(lax.conv_general_dilated(x[k], w[k], dimension_numbers=dn, **kw)) for k in range(3)])
    got = jax.jit(lambda a, b: blockdiag_conv(a, b, dimension_numbers=dn, **kw))(x, w)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12, atol=1e-12)


def test_lenet_seeds_block_diagonal(x64):
    """The model's nn.Conv calls seed_conv: LeNet (conv_impl=lax) of two seeds, its loss gradient and the
    forward-over-reverse of a local window (3 tangents vmapped): only ungrouped convolutions, the grouped numbers."""
    model = LeNet(conv_impl="lax")
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((2, 3, 28, 28, 1)))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), xs[0, :1])  # random weights of two seeds, NumPy's
    params = jax.tree.map(lambda a: jnp.asarray(0.2 * rng.standard_normal((2,) + a.shape)), shapes)

    def grad(p, x):
        return jax.grad(lambda p: jnp.sum(jax.nn.log_softmax(model.apply(p, x))[:, 0]))(p)

    def q_jvp_of_grad(p, x):
        tangents = jax.tree.map(lambda a: jnp.stack([jnp.cos(a), jnp.sin(a), a]), p)
        return jax.vmap(lambda t: jax.jvp(lambda p: grad(p, x), (p,), (t,))[1])(tangents)

    for fn in (grad, q_jvp_of_grad):
        assert max(_group_counts(jax.vmap(fn), params, xs)) == 2
        assert _group_counts(jax.vmap(fn, axis_name=SEED_AXIS), params, xs) == {1}
    _assert_trees_close(jax.jit(jax.vmap(q_jvp_of_grad, axis_name=SEED_AXIS))(params, xs),
                        jax.jit(jax.vmap(q_jvp_of_grad))(params, xs))


def test_settings():
    with pytest.raises(UserError, match="--conv-batching 'stacked' is not one of: auto, grouped, blockdiag"):
        from_mapping({"conv_batching": "stacked"})
    with pytest.raises(UserError, match="--conv-batching-max must be >= 2, got 1"):
        from_mapping({"conv_batching_max": 1})
    from glocal_cli.config import CONV_BATCHINGS  # the setting's choices (config does not import JAX)

    assert CONV_BATCHINGS == ("auto",) + seeds.CONV_BATCHINGS


def test_auto_is_blockdiag_on_a_gpu_only(monkeypatch):
    from glocal_cli.runtime import resolve

    cfg = from_mapping({})
    assert cfg.conv_batching == "auto"
    assert resolve(cfg.hpo, cfg, backend="cpu").conv_batching == "grouped"
    assert resolve(cfg.hpo, cfg, backend="gpu").conv_batching == "blockdiag"
    assert resolve(cfg.hpo, cfg, backend="tpu").conv_batching == "grouped"
    grouped = from_mapping({"conv_batching": "grouped"})
    assert resolve(grouped.hpo, grouped, backend="gpu").conv_batching == "grouped"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve(cfg.hpo, cfg).conv_batching == "blockdiag"  # the default backend when none is named
