"""How ``jax.vmap`` batches a convolution whose weights are mapped too.

Several seeds in one program (``seeds.SeedGroupRunner``) and the σ recorded
validations of a glocal window (``hypergrad.forward_window``) vmap a model over
*different weights*: ``out[s] = conv(x[s], w[s])``, both operands mapped. JAX
batches that as one *grouped* convolution (``feature_group_count = S``), which
cuDNN runs with per-group FFT, filter-flip and layout kernels (the H200 profile in
docs/performance.md: 2.6–2.9× the kernels of one seed at S = 5).

``"blockdiag"`` batches it instead as one ordinary convolution (:func:`blockdiag_conv`):
the S inputs stacked along the input-feature axis, ``[N, S·C, …]``, against a
block-diagonal kernel ``[S·O, S·C, …]`` with ``w[s]`` in block ``(s, s)`` (forward and
input-gradient convolutions), or, where the "kernel" is a large cotangent (weight
gradients), the inputs stacked along the batch against the kernels stacked along
outputs with the diagonal of the pairs kept. Same result up to float rounding (the
zeros add nothing), S times the grouped convolution's arithmetic, but ungrouped
kernels: on an H200, five LeNet seeds took 2.35× one seed's window instead of 3.53×
(none), 3.01× instead of 3.92× (local). It applies where both operands
are mapped, the convolution is ungrouped (``feature_group_count ==
batch_group_count == 1``; LeNet's and WRN's forward, input-gradient and
weight-gradient convolutions all are) and ``S <= max_groups``; everything else
keeps JAX's rule. The rule sees every convolution a vmap emits, including those
that autodiff (``grad``, ``jvp``, forward-over-reverse) produces inside it.

The choice is process-wide, like ``jax_enable_x64``: :func:`use` swaps the rule in
JAX's batching registry (``jax._src``: checked at install time, with a one-line
error if a JAX version moved it) and clears JAX's caches when the choice changes,
so nothing traced under one rule is reused under the other.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator

import jax
import jax.numpy as jnp
from jax import lax

MODES = ("grouped", "blockdiag")
DEFAULT_MAX_GROUPS = 8  # seeds in one program; the σ = 20 validations stay grouped unless raised

_state = {"mode": "grouped", "max_groups": DEFAULT_MAX_GROUPS, "original": None}


def _registry():
    """``(table, fancy)``: JAX's batching-rule table holding ``conv_general_dilated_p``; ``fancy``: its rules take
    ``axis_data`` first (JAX 0.4.36+), else ``(args, dims, **params)``."""
    try:
        from jax._src.interpreters import batching
    except ImportError as e:  # pragma: no cover - depends on the JAX version
        raise RuntimeError(f"conv batching 'blockdiag' needs jax._src.interpreters.batching: {e}") from e
    for name, fancy in (("fancy_primitive_batchers", True), ("primitive_batchers", False)):
        table = getattr(batching, name, None)
        try:
            if table is not None and lax.conv_general_dilated_p in table:
                return table, fancy
        except TypeError:  # a proxy without membership
            continue
    raise RuntimeError(f"conv batching 'blockdiag': JAX {jax.__version__} keeps no batching rule for "  # pragma: no cover
                       "conv_general_dilated where expected; use 'grouped'")


LAYOUTS = ("kernel", "pairs")


def blockdiag_conv(lhs: jax.Array, rhs: jax.Array, lhs_bdim: int, rhs_bdim: int, *, dimension_numbers,
                   layout: str | None = None, **params) -> tuple[jax.Array, int]:
    """``out[s] = conv(lhs[s], rhs[s])`` as one ungrouped convolution, S times the grouped arithmetic.

    Two layouts, the same numbers:

    * ``"kernel"``: the inputs stacked along features, ``[N, S·C, …]``, against the
      block-diagonal kernel ``[S·O, S·C, …]`` (``rhs[s]`` in block ``(s, s)``),
      which is materialized: S² × one ``rhs``. For a forward or input-gradient
      convolution, whose ``rhs`` is a small filter.
    * ``"pairs"``: the inputs stacked along the batch, ``[S·N, C, …]``, against
      the kernels stacked along output features, ``[S·O, C, …]``; every pair
      ``(s, s')`` is computed and the diagonal ``s = s'`` kept: S × one output,
      nothing materialized. For a weight-gradient convolution, whose ``rhs`` is a
      large cotangent and whose output is filter-sized.

    Args:
      lhs: the inputs, mapped axis ``lhs_bdim`` of size S; otherwise laid out by
        ``dimension_numbers.lhs_spec`` (batch, feature, spatial…).
      rhs: the kernels, mapped axis ``rhs_bdim``; ``rhs_spec`` (out feature, in feature, spatial…).
      dimension_numbers: the unmapped convolution's ``ConvDimensionNumbers``.
      layout: ``"kernel"`` | ``"pairs"``; None: the one that writes less (S · |rhs[s]| against |out[s]|).
      params: the remaining ``conv_general_dilated_p`` parameters (strides, padding,
        dilations, precision, …), passed through; group counts must be 1.

    Returns:
      ``(out, 0)``: ``out`` of shape ``[S, *unmapped out shape]`` in ``out_spec`` layout.
    """
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    nsp = len(lhs_spec) - 2
    s = lhs.shape[lhs_bdim]
    # canonical layouts: lhs [S, N, C, *sp], rhs [S, O, I, *sp]
    lhs = jnp.transpose(jnp.moveaxis(lhs, lhs_bdim, 0), (0,) + tuple(d + 1 for d in lhs_spec))
    rhs = jnp.transpose(jnp.moveaxis(rhs, rhs_bdim, 0), (0,) + tuple(d + 1 for d in rhs_spec))
    _, n, c = lhs.shape[:3]
    o, i = rhs.shape[1:3]
    canon = lax.ConvDimensionNumbers(tuple(range(nsp + 2)), tuple(range(nsp + 2)), tuple(range(nsp + 2)))

    def conv(a, b):
        return lax.conv_general_dilated_p.bind(a, b, dimension_numbers=canon, feature_group_count=1,
                                               batch_group_count=1, **params)

    if layout is None:
        out_size = math.prod(jax.eval_shape(conv, lhs[0], rhs[0]).shape)
        layout = "kernel" if s * math.prod(rhs.shape[1:]) <= out_size else "pairs"
    if layout == "kernel":
        stacked = jnp.swapaxes(lhs, 0, 1).reshape((n, s * c) + lhs.shape[3:])  # [N, (S C), *sp]
        eye = jnp.eye(s, dtype=rhs.dtype).reshape((s, 1, s, 1) + (1,) * nsp)
        kernel = (rhs[:, :, None] * eye).reshape((s * o, s * i) + rhs.shape[3:])  # [(S O), (S I), *sp]
        out = conv(stacked, kernel)  # [N, (S O), *sp']
        out = jnp.swapaxes(out.reshape((n, s, o) + out.shape[2:]), 0, 1)  # [S, N, O, *sp']
    elif layout == "pairs":
        out = conv(lhs.reshape((s * n, c) + lhs.shape[3:]), rhs.reshape((s * o, i) + rhs.shape[3:]))  # [(S N), (S' O)]
        out = out.reshape((s, n, s, o) + out.shape[2:])
        eye = jnp.eye(s, dtype=out.dtype).reshape((s, 1, s, 1) + (1,) * nsp)
        out = jnp.sum(out * eye, axis=2)  # the diagonal s = s': [S, N, O, *sp']
    else:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    # canonical position k holds the out dim out_spec[k]; put each back where out_spec says
    perm = [0] * (nsp + 2)
    for k, d in enumerate(out_spec):
        perm[d] = k + 1
    return jnp.transpose(out, [0] + perm), 0


def _rule(original, max_groups: int, axis_data, batched_args, batch_dims, **params):
    lhs, rhs = batched_args
    lb, rb = batch_dims
    size = lhs.shape[lb] if lb is not None else 0
    if (lb is None or rb is None or params["feature_group_count"] != 1 or params["batch_group_count"] != 1
            or not 1 < size <= max_groups or params.get("out_sharding") is not None):
        return original(axis_data, batched_args, batch_dims, **params)
    params = {k: v for k, v in params.items() if k not in ("feature_group_count", "batch_group_count")}
    return blockdiag_conv(lhs, rhs, lb, rb, **params)


def _make_rule(original, fancy: bool, max_groups: int):
    """The registry's entry for "blockdiag": ``_rule`` in the table's calling convention."""
    if fancy:
        return functools.partial(_rule, original, max_groups)

    def plain(batched_args, batch_dims, **params):
        return _rule(lambda _, a, d, **p: original(a, d, **p), max_groups, None, batched_args, batch_dims, **params)

    return plain


def use(mode: str, max_groups: int = DEFAULT_MAX_GROUPS) -> None:
    """Make ``mode`` (``"grouped"``: JAX's rule | ``"blockdiag"``) the process's conv batching rule.

    ``max_groups``: the largest mapped size batched block-diagonally (the kernel
    grows with its square). A change clears JAX's caches (compiled and traced
    functions); calling it with the current choice does nothing.
    """
    if mode not in MODES:
        raise ValueError(f"conv batching must be one of {', '.join(MODES)}, got {mode!r}")
    if max_groups < 2:
        raise ValueError(f"conv batching max_groups must be >= 2, got {max_groups}")
    if (mode, max_groups) == (_state["mode"], _state["max_groups"]) or (mode == _state["mode"] == "grouped"):
        _state["max_groups"] = max_groups
        return
    table, fancy = _registry()
    if _state["original"] is None:
        _state["original"] = table[lax.conv_general_dilated_p]
    original = _state["original"]
    table[lax.conv_general_dilated_p] = _make_rule(original, fancy, max_groups) if mode == "blockdiag" else original
    _state.update(mode=mode, max_groups=max_groups)
    jax.clear_caches()


def available() -> bool:
    """Whether this JAX keeps the convolution's batching rule where ``blockdiag`` swaps it."""
    try:
        _registry()
    except RuntimeError:  # pragma: no cover - depends on the JAX version
        return False
    return True


def current() -> tuple[str, int]:
    """The process's ``(mode, max_groups)``."""
    return _state["mode"], _state["max_groups"]


@contextlib.contextmanager
def using(mode: str, max_groups: int = DEFAULT_MAX_GROUPS) -> Iterator[None]:
    """:func:`use` for a block, the previous choice restored after it (tests, benchmarks)."""
    before = current()
    use(mode, max_groups)
    try:
        yield
    finally:
        use(*before)
