"""Convolution as patches + matmul: a drop-in for ``flax.linen.Conv``.

Why: on CPU, the weight-gradient convolution that ``jax.grad(lax.conv)`` emits runs
30-40x slower inside ``lax.scan`` than outside it (JAX 0.10, 2 cores). Writing the
convolution as ``lax.conv_general_dilated_patches`` (an identity-filter convolution that
never needs a weight gradient) followed by a matmul keeps every gradient a matmul or an
input-gradient of the patch extraction, and is plain JAX: it is differentiable in forward
mode (``jax.jvp``/``jax.jacfwd``), reverse mode, and jvp-of-grad, unlike a ``custom_vjp``
convolution, which forward mode cannot pass through.

``PatchConv`` has the same parameter names, shapes, layout and default initializers as
``nn.Conv`` (``kernel`` [*kernel_size, cin, cout], ``bias`` [cout]), so parameters can be
moved between the two. Models select the implementation with ``conv_impl``
("patches" -> ``PatchConv``, "lax" -> ``nn.Conv`` calling :func:`seed_conv`, e.g. for
XLA's convolution on GPU); see :func:`make_conv`.

Several seeds in one program (``runner.SeedGroupRunner``) vmap the model over
per-seed weights: ``out[s] = conv(x[s], w[s])``, both operands mapped. JAX batches
that as one *grouped* convolution (``feature_group_count = S``), which cuDNN runs
with per-group kernels. :func:`seed_conv` is ``lax.conv_general_dilated`` unless the
seed group binds the named axis :data:`SEED_AXIS` (``conv_batching="blockdiag"``);
then it gathers the seeds' operands with ``lax.all_gather`` and runs them as one
ungrouped convolution with a block-diagonal kernel (:func:`blockdiag_conv`). Plain
JAX and its collectives: ``jax.jvp``, ``jax.grad``, forward-over-reverse and nested
``jax.vmap`` differentiate and batch it, and every convolution they emit is ungrouped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

import flax.linen as nn
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding, default_kernel_init

Array = Any
PaddingLike = str | int | Sequence[int | tuple[int, int]]

CONV_IMPLS = ("patches", "lax")
SEED_AXIS = "glocal_seeds"  # the vmap axis name under which seed_conv batches block-diagonally


def _as_tuple(x: int | Sequence[int] | None, n: int) -> tuple[int, ...]:
    if x is None:
        return (1,) * n
    if isinstance(x, int):
        return (x,) * n
    return tuple(x)


class PatchConv(nn.Module):
    """Convolution computed as ``conv_general_dilated_patches`` + matmul (channels last).

    Attributes:
      features: number of output channels ``cout``.
      kernel_size: int or tuple of spatial kernel sizes (int -> 1-D, like ``nn.Conv``).
      strides: int or tuple of spatial strides.
      padding: 'SAME', 'VALID', an int (same padding on both sides of every spatial
        dimension) or a sequence of ints / (low, high) pairs, as in ``nn.Conv``.
      kernel_dilation: int or tuple of kernel (atrous) dilations.
      use_bias: add a learned bias of shape [cout].
      dtype, param_dtype, precision, kernel_init, bias_init: as in ``nn.Conv``.
      patch_impl: how patches are extracted: "slices" (default; one strided slice per
        kernel offset, stacked) or "cgdp" (``lax.conv_general_dilated_patches``). Same
        results. "slices" is the default since issue 6 (docs/performance.md): the
        identity-filter convolution of "cgdp" costs (cin * prod(kernel_size))**2 FLOPs per
        output pixel -- 25x the matmul for LeNet's second conv (cin 16, 5x5) -- and its
        jvp and transpose are convolutions of the same size, so on CPU a LeNet step with
        "slices" is ~3-4x faster (plain, with 3 tangents, and the validation pass).

    Input ``[*batch, *spatial, cin]`` (no batch dimension, one, or several) ->
    output ``[*batch, *spatial_out, cout]``.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: None | int | Sequence[int] = 1
    padding: PaddingLike = "SAME"
    kernel_dilation: None | int | Sequence[int] = 1
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable[..., Array] = default_kernel_init
    bias_init: Callable[..., Array] = nn.initializers.zeros_init()
    patch_impl: str = "slices"

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        ks = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        nsp = len(ks)
        strides = _as_tuple(self.strides, nsp)
        kdil = _as_tuple(self.kernel_dilation, nsp)
        padding = canonicalize_padding(self.padding, nsp)
        if isinstance(padding, str) and padding not in ("SAME", "VALID"):
            raise ValueError(f"PatchConv supports 'SAME', 'VALID' or explicit padding, got {padding!r}")

        # Flatten all batch dimensions into one (or add one), as nn.Conv does.
        batch_shape = inputs.shape[: inputs.ndim - (nsp + 1)]
        x = jnp.reshape(inputs, (-1,) + inputs.shape[len(batch_shape):])
        cin = x.shape[-1]

        kernel = self.param("kernel", self.kernel_init, ks + (cin, self.features), self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)

        if self.patch_impl not in ("cgdp", "slices"):
            raise ValueError(f"unknown patch_impl {self.patch_impl!r}; expected 'cgdp' or 'slices'")
        if self.patch_impl == "slices":
            patches = extract_patches(x, ks, strides, padding, kdil)
            w = jnp.reshape(kernel, (-1, self.features))  # [prod(ks) * cin, cout]
        else:
            # conv_general_dilated_patches orders the patch features as (cin, *ks).
            patches = _cgdp_patches(x, ks, strides, padding, kdil)
            perm = (nsp,) + tuple(range(nsp)) + (nsp + 1,)
            w = jnp.reshape(jnp.transpose(kernel, perm), (-1, self.features))
        y = jnp.dot(patches, w, precision=self.precision)
        if bias is not None:
            y = y + bias
        return jnp.reshape(y, batch_shape + y.shape[1:]) if len(batch_shape) != 1 else y


def extract_patches(x: Array, ks, strides, padding, kdil) -> Array:
    """Patches by strided slicing: ``[N, *spatial, cin]`` -> ``[N, *spatial_out, prod(ks) * cin]``.

    Feature order (*ks, cin), matching ``kernel.reshape(-1, cout)``. Costs only memory
    traffic (its transpose is a pad + add), unlike ``conv_general_dilated_patches``.
    """
    nsp = len(ks)
    dil_ks = tuple((k - 1) * d + 1 for k, d in zip(ks, kdil))
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(x.shape[1:-1], dil_ks, strides, padding)
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)])
    out = tuple((n - dk) // s + 1 for n, dk, s in zip(x.shape[1:-1], dil_ks, strides))
    slices = []
    for offset in np.ndindex(*ks):
        start = (0,) + tuple(o * d for o, d in zip(offset, kdil)) + (0,)
        limit = (x.shape[0],) + tuple(st + (n - 1) * s + 1 for st, n, s in zip(start[1:], out, strides)) + (x.shape[-1],)
        slices.append(lax.slice(x, start, limit, (1,) + tuple(strides) + (1,)))
    patches = jnp.stack(slices, axis=-2)  # [N, *out, prod(ks), cin]
    return jnp.reshape(patches, patches.shape[: nsp + 1] + (-1,))


def _cgdp_patches(x: Array, ks, strides, padding, kdil) -> Array:
    """Patches via ``lax.conv_general_dilated_patches``; feature order (cin, *ks)."""
    n = x.ndim
    spec = (0, n - 1) + tuple(range(1, n - 1))
    dn = lax.ConvDimensionNumbers(lhs_spec=spec, rhs_spec=(n - 1, n - 2) + tuple(range(n - 2)), out_spec=spec)
    # An identity-filter convolution; HIGHEST keeps it exact on TF32/bf16 accelerators.
    return lax.conv_general_dilated_patches(
        x, filter_shape=ks, window_strides=strides, padding=padding, rhs_dilation=kdil,
        dimension_numbers=dn, precision=lax.Precision.HIGHEST,
    )


def blockdiag_conv(lhs: Array, rhs: Array, window_strides: Sequence[int], padding, lhs_dilation=None,
                   rhs_dilation=None, dimension_numbers=None, precision=None,
                   preferred_element_type=None) -> Array:
    """``out[s] = lax.conv_general_dilated(lhs[s], rhs[s], ...)`` for every ``s`` as one ungrouped convolution.

    The S inputs stacked along the input features, ``[N, S·C, *spatial]``, against the
    block-diagonal kernel ``[S·O, S·C, *kernel]`` with ``rhs[s]`` in block ``(s, s)``:
    S times the arithmetic of the S separate convolutions (the zero blocks), but one
    ungrouped convolution. Its autodiff is ungrouped too: the input gradient is the
    transposed block-diagonal convolution, the weight gradient one convolution with
    an ``[S·C, S·O]`` output whose diagonal blocks are kept.

    Args:
      lhs: ``[S, *lhs shape]``, each ``lhs[s]`` laid out by ``dimension_numbers``.
      rhs: ``[S, *rhs shape]``.
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        precision, preferred_element_type: as in ``lax.conv_general_dilated`` (for one ``s``).

    Returns:
      ``[S, *out shape]``, each ``out[s]`` laid out by ``dimension_numbers``.
    """
    lhs_spec, rhs_spec, out_spec = lax.conv_dimension_numbers(lhs.shape[1:], rhs.shape[1:], dimension_numbers)
    nsp = len(lhs_spec) - 2
    s = lhs.shape[0]
    # canonical layouts: lhs [S, N, C, *sp], rhs [S, O, I, *sp]
    lhs = jnp.transpose(lhs, (0,) + tuple(d + 1 for d in lhs_spec))
    rhs = jnp.transpose(rhs, (0,) + tuple(d + 1 for d in rhs_spec))
    n, c = lhs.shape[1:3]
    o, i = rhs.shape[1:3]
    stacked = jnp.swapaxes(lhs, 0, 1).reshape((n, s * c) + lhs.shape[3:])  # [N, (S C), *sp]
    # rhs[k] padded to the input features of block k, stacked: [(S O), (S I), *sp]. (Masking S copies with an
    # identity instead made XLA:CPU (jaxlib 0.10.2) crash on the jvp-of-grad of LeNet vmapped over tangents.)
    zero = jnp.zeros((), rhs.dtype)
    kernel = jnp.concatenate([lax.pad(rhs[k], zero, [(0, 0, 0), (k * i, (s - 1 - k) * i, 0)] + [(0, 0, 0)] * nsp)
                              for k in range(s)])
    canon = tuple(range(nsp + 2))
    out = lax.conv_general_dilated(stacked, kernel, window_strides, padding, lhs_dilation, rhs_dilation,
                                   lax.ConvDimensionNumbers(canon, canon, canon), precision=precision,
                                   preferred_element_type=preferred_element_type)  # [N, (S O), *sp']
    out = jnp.swapaxes(out.reshape((n, s, o) + out.shape[2:]), 0, 1)  # [S, N, O, *sp']
    # canonical position k holds the out dim out_spec[k]; put each back where out_spec says
    perm = [0] * (nsp + 2)
    for k, d in enumerate(out_spec):
        perm[d] = k + 1
    return jnp.transpose(out, [0] + perm)


def seed_axis_size() -> int | None:
    """The size of the seed group's named vmap axis :data:`SEED_AXIS`, None where none is bound."""
    try:
        return lax.axis_size(SEED_AXIS)
    except NameError:  # no enclosing vmap with axis_name=SEED_AXIS
        return None


def seed_conv(lhs: Array, rhs: Array, window_strides: Sequence[int], padding, lhs_dilation=None, rhs_dilation=None,
              dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1, precision=None,
              preferred_element_type=None) -> Array:
    """``lax.conv_general_dilated``, batched block-diagonally over the seeds of a seed group.

    Same signature and, outside a ``jax.vmap(..., axis_name=SEED_AXIS)``, the very same
    operation. Inside one (the seed group with ``conv_batching="blockdiag"``) each seed's
    output is still ``conv(lhs, rhs)`` of its own operands (up to float rounding), computed as
    ``psum_scatter(blockdiag_conv(all_gather(lhs), all_gather(rhs))) / S``: the gathered
    operands and the block-diagonal result are not mapped over the seeds, so the
    convolution and every convolution that ``jax.grad`` / ``jax.jvp`` derive from it is
    one ungrouped convolution (the transpose of ``psum_scatter`` is ``all_gather``, and
    ``psum_scatter`` of a value shared by the S seeds sums S copies, hence the ``/ S``).
    Grouped convolutions (group counts > 1) keep JAX's batching.
    """
    s = seed_axis_size()
    if s is None or feature_group_count != 1 or batch_group_count != 1:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
    out = blockdiag_conv(lax.all_gather(lhs, SEED_AXIS), lax.all_gather(rhs, SEED_AXIS), window_strides, padding,
                         lhs_dilation, rhs_dilation, dimension_numbers, precision, preferred_element_type)
    return lax.psum_scatter(out, SEED_AXIS, scatter_dimension=0) / s


def make_conv(conv_impl: str, features: int, kernel_size, **kwargs) -> nn.Module:
    """Returns ``PatchConv`` (``conv_impl="patches"``) or ``nn.Conv`` with :func:`seed_conv` (``"lax"``).

    Call inside a ``@nn.compact`` method; ``kwargs`` (strides, padding, use_bias, name,
    kernel_init, ...) are passed through. Both have identical parameter trees.
    """
    if conv_impl == "patches":
        return PatchConv(features, kernel_size, **kwargs)
    if conv_impl == "lax":
        return nn.Conv(features, kernel_size, conv_general_dilated=seed_conv, **kwargs)
    raise ValueError(f"unknown conv_impl {conv_impl!r}; expected one of {CONV_IMPLS}")


def max_pool(x: Array, window: int = 2) -> Array:
    """Non-overlapping ``window x window`` max pooling ``[N, H, W, C] -> [N, H//w, W//w, C]``.

    A reshape + max (cropping a remainder, as VALID pooling does), equal in value to
    ``nn.max_pool(x, (w, w), strides=(w, w))``. Its gradient is a compare-and-select
    instead of XLA's ``select_and_scatter``, which is slow on CPU, in particular under
    jvp-of-grad (docs/performance.md). At exact ties the gradient is split between the
    tied entries (``nn.max_pool`` gives it to the first one).
    """
    n, h, w, c = x.shape
    h2, w2 = h // window, w // window
    x = x[:, : h2 * window, : w2 * window]
    return jnp.max(jnp.reshape(x, (n, h2, window, w2, window, c)), axis=(2, 4))
