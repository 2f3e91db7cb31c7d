"""conv_batching: the block-diagonal vmap rule equals JAX's grouped one (float64), and is used where it applies."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from glocal_cli import conv_batching
from glocal_cli.config import from_mapping
from glocal_cli.errors import UserError


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.fixture(autouse=True)
def grouped_after():
    yield
    conv_batching.use("grouped")


# (lhs shape, rhs shape, dimension numbers, conv kwargs): 2-D channels-last and first, 1-D, strides,
# padding, both dilations
CASES = [
    ((4, 9, 9, 2), (3, 3, 2, 5), ("NHWC", "HWIO", "NHWC"), dict(window_strides=(2, 1), padding="SAME",
                                                                 rhs_dilation=(1, 2))),
    ((3, 2, 8, 7), (4, 2, 3, 2), ("NCHW", "OIHW", "NCHW"), dict(window_strides=(1, 1), padding=((1, 0), (2, 1)),
                                                                 lhs_dilation=(2, 1))),
    ((2, 11, 3), (3, 3, 6), ("NWC", "WIO", "NWC"), dict(window_strides=(1,), padding="VALID")),
]


def _fns(dn, kw):
    def f(x, w):
        y = lax.conv_general_dilated(x, w, dimension_numbers=dn, **kw)
        return jnp.sum(jnp.tanh(y) ** 2)

    def conv(x, w):
        return lax.conv_general_dilated(x, w, dimension_numbers=dn, **kw)

    def grad(x, w):
        return jax.grad(f, argnums=(0, 1))(x, w)

    def jvp_of_grad(x, w):  # forward over reverse: what the local hypergradient differentiates
        return jax.jvp(grad, (x, w), (jnp.cos(x), jnp.sin(w)))[1]

    return {"conv": conv, "grad": grad, "jvp_of_grad": jvp_of_grad}


def _group_counts(fn, *args):
    text = str(jax.make_jaxpr(fn)(*args))
    return [int(v) for v in re.findall(r"feature_group_count=(\d+)", text) + re.findall(r"batch_group_count=(\d+)", text)]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_blockdiag_equals_grouped_float64(x64, case):
    """conv, its grad and forward-over-reverse (what the local hypergradient differentiates), vmapped."""
    lhs_shape, rhs_shape, dn, kw = CASES[case]
    s = 3
    kx, kw_ = jax.random.split(jax.random.PRNGKey(case))
    x = jax.random.normal(kx, (s,) + lhs_shape, jnp.float64)
    w = jax.random.normal(kw_, (s,) + rhs_shape, jnp.float64)
    fns = {name: jax.vmap(fn) for name, fn in _fns(dn, kw).items()}
    ref = {name: jax.jit(fn)(x, w) for name, fn in fns.items()}
    assert all(max(_group_counts(fn, x, w)) == s for fn in fns.values())  # JAX's rule: grouped
    with conv_batching.using("blockdiag"):
        got = {name: jax.jit(fn)(x, w) for name, fn in fns.items()}
        for name, fn in fns.items():  # every convolution, autodiff's included, ungrouped
            assert set(_group_counts(fn, x, w)) == {1}, name
    for name in fns:
        for a, b in zip(jax.tree.leaves(ref[name]), jax.tree.leaves(got[name])):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12, err_msg=name)


def test_mapped_axis_anywhere_and_nested_vmaps(x64):
    """Batch axes not in front, and an inner vmap over inputs only (the q tangents) inside the mapped weights."""
    lhs_shape, rhs_shape, dn, kw = CASES[0]
    grad = _fns(dn, kw)["grad"]
    x = jax.random.normal(jax.random.PRNGKey(1), (2,) + lhs_shape + (4,), jnp.float64)  # mapped axis last
    w = jax.random.normal(jax.random.PRNGKey(2), rhs_shape[:2] + (4,) + rhs_shape[2:], jnp.float64)  # axis 2
    inner = jax.vmap(grad, in_axes=(0, None))  # over 2 inputs, one kernel
    fn = jax.jit(jax.vmap(inner, in_axes=(-1, 2)))
    ref = fn(x, w)
    assert max(_group_counts(fn, x, w)) > 1  # grouped under JAX's rule
    with conv_batching.using("blockdiag"):
        got = fn(x, w)  # retraced: the switch cleared the jit cache
        assert set(_group_counts(fn, x, w)) == {1}
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12)


def test_only_where_it_applies():
    """Above max_groups, and for mapped inputs with a shared kernel, JAX's rule stays."""
    lhs_shape, rhs_shape, dn, kw = CASES[0]
    conv = _fns(dn, kw)["conv"]
    x = jnp.ones((5,) + lhs_shape)
    w = jnp.ones((5,) + rhs_shape)
    with conv_batching.using("blockdiag", max_groups=4):
        assert max(_group_counts(jax.vmap(conv), x, w)) == 5
        assert set(_group_counts(jax.vmap(conv, in_axes=(0, None)), x, w[0])) == {1}
    with conv_batching.using("blockdiag", max_groups=5):
        assert set(_group_counts(jax.vmap(conv), x, w)) == {1}
    assert conv_batching.current() == ("grouped", conv_batching.DEFAULT_MAX_GROUPS)


def test_bad_choices():
    with pytest.raises(ValueError, match="conv batching must be one of"):
        conv_batching.use("stacked")
    with pytest.raises(ValueError, match="max_groups must be >= 2"):
        conv_batching.use("blockdiag", 1)
    with pytest.raises(UserError, match="--conv-batching 'stacked' is not one of: auto, grouped, blockdiag"):
        from_mapping({"conv_batching": "stacked"})
    with pytest.raises(UserError, match="--conv-batching-max must be >= 2, got 1"):
        from_mapping({"conv_batching_max": 1})
    assert conv_batching.current()[0] == "grouped"
    from glocal_cli.config import CONV_BATCHINGS  # the setting's choices (config does not import JAX)

    assert CONV_BATCHINGS == ("auto",) + conv_batching.MODES


@pytest.mark.parametrize("layout", conv_batching.LAYOUTS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_both_layouts_equal_per_example_convolutions(x64, layout, case):
    """"kernel" (block-diagonal filter) and "pairs" (all pairs, diagonal kept), mapped axis not in front."""
    lhs_shape, rhs_shape, dn, kw = CASES[case]
    s = 3
    x = jax.random.normal(jax.random.PRNGKey(3), (s,) + lhs_shape, jnp.float64)
    w = jax.random.normal(jax.random.PRNGKey(4), (s,) + rhs_shape, jnp.float64)
    conv = _fns(dn, kw)["conv"]
    ref = np.stack([np.asarray(conv(x[k], w[k])) for k in range(s)])
    (eqn,) = jax.make_jaxpr(conv)(x[0], w[0]).eqns  # conv_general_dilated_p's own parameters
    params = {k: v for k, v in eqn.params.items() if k not in ("feature_group_count", "batch_group_count")}
    got = jax.jit(lambda a, b: conv_batching.blockdiag_conv(a, b, 1, 0, layout=layout, **params)[0])(
        jnp.moveaxis(x, 0, 1), w)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12, atol=1e-12)


def test_auto_is_blockdiag_on_a_gpu_only(monkeypatch):
    cfg = from_mapping({})
    assert cfg.conv_batching == "auto"
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert cfg.resolved_conv_batching() == "grouped"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert cfg.resolved_conv_batching() == "blockdiag"
    assert from_mapping({"conv_batching": "grouped"}).resolved_conv_batching() == "grouped"


def test_auto_falls_back_to_grouped_where_jax_moved_the_rule(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(conv_batching, "available", lambda: False)
    assert from_mapping({}).resolved_conv_batching() == "grouped"
