"""Local hypergradients through an unrolled window of inner training steps.

The inner problem is given by two pure functions:

* ``step(state, phi, batch, data) -> state``: one inner optimizer step (the
  state is any pytree of floating arrays: parameters, momentum buffers, ...), and
* ``val_loss(state, data) -> scalar``: the meta criterion (full-batch
  validation loss).

``data`` is any pytree (e.g. the device-resident training and validation
arrays, with ``batch`` holding minibatch indices). It is passed as an argument
to the jitted functions rather than closed over, so XLA does not embed large
arrays as compile-time constants. Use ``None`` when there is none.

Inside a window the hyperparameters ``phi [q]`` are fixed, ``Z_t = dθ_t/dφ``
starts at zero (or at given tangents, to continue a longer horizon) and

    Z_t = ∂Θ/∂θ · Z_{t-1} + ∂Θ/∂φ,        h_t = ∇ val_loss(θ_t) · Z_t  ∈ R^q.

Two ways to compute the same ``h_t``:

* **forward** (the paper's): ``q`` tangents pushed through every step with
  ``jax.jvp`` (vmapped over the ``q`` basis directions, i.e. ``jax.jacfwd``)
  inside a ``lax.scan``; memory ``O(p q)``, independent of the window length.
  At a recorded step one reverse pass gives ``∇ val_loss(θ_t)``, contracted
  with the ``q`` tangents (cheaper than ``q`` forward passes for ``q > 1``).
* **reverse**: ``jax.vjp`` through the window with a rematerialized
  (``jax.checkpoint``) step, one backward pass per recorded step; cost
  independent of ``q`` (the choice for the 385-parameter reweighting module).

:func:`choose_mode` picks one by ``q``. The validation loss is evaluated only
at the recorded steps (the last ``n_record`` of the window).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

FORWARD_MAX_Q = 32
MODES = ("auto", "forward", "reverse")
VAL_GRADS = ("reverse", "forward")  # how tangent_hypergrad contracts ∇ val_loss with the tangents

Step = Callable[[Any, jnp.ndarray, Any, Any], Any]
ValLoss = Callable[[Any, Any], jnp.ndarray]


class WindowOutput(NamedTuple):
    """What a window returns.

    Attributes:
      state: inner state after the window's τ steps.
      tangents: ``Z`` at the end (pytree like ``state`` with a leading ``[q]``
        axis), or ``None`` in reverse mode.
      hypergrads: ``[n_record, q]`` local hypergradients at the last
        ``n_record`` steps, oldest first.
      val_losses: ``[n_record]`` validation losses at those steps.
      finite: scalar bool, whether the final state is finite.
    """

    state: Any
    tangents: Any
    hypergrads: jnp.ndarray
    val_losses: jnp.ndarray
    finite: jnp.ndarray


def choose_mode(q: int, mode: str = "auto") -> str:
    """``"forward"`` for ``q <= FORWARD_MAX_Q``, else ``"reverse"``, unless ``mode`` forces one."""
    if mode not in MODES:
        raise ValueError(f"unknown hypergradient mode {mode!r}; allowed: {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "forward" if q <= FORWARD_MAX_Q else "reverse"


def tree_all_finite(tree) -> jnp.ndarray:
    """Scalar bool: every leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _differentiable(x) -> bool:
    """Whether a state leaf carries a tangent (floating); integer leaves (step counts) do not."""
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def zero_tangents(state, q: int):
    """``Z = 0``: a pytree like ``state`` with a leading ``[q]`` axis.

    Integer leaves (e.g. an optax step count) get a float32 zero placeholder
    of the same shape: they are never differentiated.
    """
    return jax.tree_util.tree_map(
        lambda x: jnp.zeros((q,) + jnp.shape(x), x.dtype if _differentiable(x) else jnp.float32), state
    )


def tangent_hypergrad(val_loss: ValLoss, state, tangents, data=None, val_grad: str = "reverse"):
    """``(h [q], v)``: ``h_i = ∇ val_loss(state) · Z_i`` and ``v = val_loss(state)``.

    ``tangents`` is ``Z`` (a pytree like ``state`` with a leading ``[q]`` axis,
    as :func:`forward_window` returns). Integer leaves are skipped.

    ``val_grad`` picks how (same ``h`` up to rounding):

    * ``"reverse"`` (default): one reverse pass gives the gradient, contracted
      with the ``q`` tangents (``q`` dot products);
    * ``"forward"``: ``h_i`` is the directional derivative of ``val_loss`` along
      ``Z_i``, ``jax.jvp`` vmapped over the ``q`` tangents (one primal pass
      and ``q`` tangent passes, no backward pass, no stored activations).
    """
    if val_grad not in VAL_GRADS:
        raise ValueError(f"val_grad must be one of {', '.join(VAL_GRADS)}, got {val_grad!r}")
    mask = [_differentiable(x) for x in jax.tree_util.tree_leaves(state)]
    if val_grad == "forward":
        f = lambda s_: val_loss(s_, data)  # noqa: E731

        def directional(z):
            if not all(mask):  # integer leaves take float0 tangents
                z = jax.tree_util.tree_map(lambda x, dx: dx if _differentiable(x) else _float0(x), state, z)
            return jax.jvp(f, (state,), (z,))

        v, h = jax.vmap(directional, out_axes=(None, 0))(tangents)
        return h, v
    v, g = jax.value_and_grad(val_loss, allow_int=True)(state, data)
    g_f = [x for x, keep in zip(jax.tree_util.tree_leaves(g), mask) if keep]

    def contract(z):
        z_f = [x for x, keep in zip(jax.tree_util.tree_leaves(z), mask) if keep]
        return optax.tree_utils.tree_vdot(g_f, z_f)

    return jax.vmap(contract)(tangents), v


def _float0(x):
    return np.zeros(jnp.shape(x), jax.dtypes.float0)


def _split(batches, n_first: int):
    first = jax.tree_util.tree_map(lambda b: b[:n_first], batches)
    rest = jax.tree_util.tree_map(lambda b: b[n_first:], batches)
    return first, rest


def _n_steps(batches) -> int:
    return jax.tree_util.tree_leaves(batches)[0].shape[0]


def forward_window(
    step: Step, val_loss: ValLoss, state, phi, batches, n_record: int, tangents=None, data=None, val_batch: int = 0,
    val_grad: str = "reverse",
) -> WindowOutput:
    """Run a window with ``q`` forward-mode tangents (pure; jit it).

    Args:
      step: ``(state, phi, batch, data) -> state``.
      val_loss: ``(state, data) -> scalar``.
      state: inner state at the window's start.
      phi: ``[q]`` hyperparameters, fixed in the window.
      batches: pytree whose leaves have a leading ``[τ]`` axis (one batch a step).
      n_record: number of last steps whose hypergradient is returned (``0..τ``).
      tangents: ``Z`` at the start (leading ``[q]`` axis); ``None`` means zero.
      data: passed to ``step`` and ``val_loss``.
      val_batch: ``0`` evaluates each recorded step's validation loss inside
        the scan, one after the other (best on CPU); ``k > 0`` keeps the
        ``n_record`` states and tangents and evaluates them after the scan,
        ``k`` at a time (``lax.map`` with ``batch_size=k``): parallel work for
        a GPU, at the cost of memory for ``n_record`` states with tangents.
      val_grad: ``"reverse"`` | ``"forward"``: how each recorded ``h_t`` is
        taken from the validation loss (see :func:`tangent_hypergrad`).

    Returns:
      :class:`WindowOutput` with ``hypergrads [n_record, q]``.
    """
    q = phi.shape[0]
    tau = _n_steps(batches)
    if not 0 <= n_record <= tau:
        raise ValueError(f"n_record must be in [0, {tau}], got {n_record}")
    if tangents is None:
        tangents = zero_tangents(state, q)
    basis = jnp.eye(q, dtype=phi.dtype)
    all_float = all(_differentiable(x) for x in jax.tree_util.tree_leaves(state))

    def advance(carry, batch):
        s, ds = carry
        f = lambda s_, p_: step(s_, p_, batch, data)

        def jvp(d, e):
            if not all_float:  # integer leaves take float0 tangents and keep zero placeholders
                d = jax.tree_util.tree_map(lambda x, dx: dx if _differentiable(x) else _float0(x), s, d)
            s_new, d_new = jax.jvp(f, (s, phi), (d, e))
            if not all_float:
                d_new = jax.tree_util.tree_map(
                    lambda x, dx: dx if _differentiable(x) else jnp.zeros(jnp.shape(x), jnp.float32), s_new, d_new
                )
            return s_new, d_new

        s_new, ds_new = jax.vmap(jvp, in_axes=(0, 0), out_axes=(None, 0))(ds, basis)
        return s_new, ds_new

    def plain(carry, batch):
        return advance(carry, batch), None

    def hypergrad(s, ds):
        return tangent_hypergrad(val_loss, s, ds, data, val_grad)

    def recorded(carry, batch):
        s, ds = advance(carry, batch)
        return (s, ds), hypergrad(s, ds)

    def collected(carry, batch):
        new = advance(carry, batch)
        return new, new

    first, rest = _split(batches, tau - n_record)
    carry = (state, tangents)
    if tau - n_record > 0:
        carry, _ = lax.scan(plain, carry, first)
    if n_record > 0 and val_batch > 0:
        carry, (states, dss) = lax.scan(collected, carry, rest)
        hs, vs = lax.map(lambda x: hypergrad(*x), (states, dss), batch_size=min(val_batch, n_record))
    elif n_record > 0:
        carry, (hs, vs) = lax.scan(recorded, carry, rest)
    else:
        hs = jnp.zeros((0, q), phi.dtype)
        vs = jnp.zeros((0,), phi.dtype)
    s, ds = carry
    return WindowOutput(s, ds, hs, vs, tree_all_finite(s))


def reverse_window(step: Step, val_loss: ValLoss, state, phi, batches, n_record: int, data=None) -> WindowOutput:
    """Same hypergradients as :func:`forward_window` (with zero start tangents) by reverse mode.

    The step is rematerialized (``jax.checkpoint``) so memory holds one state per
    step of the window rather than every intermediate of every step. Cost: one
    forward pass and ``n_record`` backward passes, independent of ``q``.
    """
    tau = _n_steps(batches)
    if not 1 <= n_record <= tau:
        raise ValueError(f"reverse mode needs n_record in [1, {tau}], got {n_record}")
    ckpt_step = jax.checkpoint(step)

    def unrolled(p):
        first, rest = _split(batches, tau - n_record)

        def plain(s, batch):
            return ckpt_step(s, p, batch, data), None

        def recorded(s, batch):
            s = ckpt_step(s, p, batch, data)
            return s, val_loss(s, data)

        s = state
        if tau - n_record > 0:
            s, _ = lax.scan(plain, s, first)
        s, vs = lax.scan(recorded, s, rest)
        return vs, s

    vs, vjp_fn, s_end = jax.vjp(unrolled, phi, has_aux=True)
    cotangents = jnp.eye(n_record, dtype=vs.dtype)
    (hs,) = jax.vmap(vjp_fn)(cotangents)
    return WindowOutput(s_end, None, hs, vs, tree_all_finite(s_end))


def make_window_fn(step: Step, val_loss: ValLoss, n_record: int, mode: str, val_batch: int = 0,
                   val_grad: str = "reverse"):
    """Jitted ``(state, phi, batches, data, tangents=None) -> WindowOutput`` for a fixed ``n_record``.

    ``mode`` is ``"forward"`` or ``"reverse"`` (resolve ``"auto"`` with
    :func:`choose_mode` first). In reverse mode ``tangents`` must be ``None``.
    ``val_batch``, ``val_grad``: see :func:`forward_window` (forward mode only).
    """
    if mode == "forward":

        def fn(state, phi, batches, data, tangents=None):
            return forward_window(step, val_loss, state, phi, batches, n_record, tangents, data, val_batch, val_grad)

    elif mode == "reverse":

        def fn(state, phi, batches, data, tangents=None):
            if tangents is not None:
                raise ValueError("reverse mode cannot continue from given tangents")
            return reverse_window(step, val_loss, state, phi, batches, n_record, data)

    else:
        raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")
    return jax.jit(fn)


def train_window(step: Step, state, phi, batches, data=None):
    """``(state, finite)`` after τ plain steps with φ fixed, no tangents (pure; jit it).

    ``batches``: pytree with a leading ``[τ]`` axis; ``finite``: scalar bool, the final state is finite.
    """
    s, _ = lax.scan(lambda s, b: (step(s, phi, b, data), None), state, batches)
    return s, tree_all_finite(s)


def make_train_fn(step: Step):
    """Jitted ``(state, phi, batches, data) -> (state, finite)``: :func:`train_window`."""
    return jax.jit(lambda state, phi, batches, data: train_window(step, state, phi, batches, data))


def window_hypergrads(
    step: Step,
    val_loss: ValLoss,
    state,
    phi,
    batches,
    n_record: int = 1,
    mode: str = "auto",
    tangents: Optional[Any] = None,
    data: Any = None,
) -> WindowOutput:
    """Convenience one-shot call: local hypergradients of one window (see :func:`forward_window`)."""
    mode = choose_mode(phi.shape[0], mode)
    return make_window_fn(step, val_loss, n_record, mode)(state, phi, batches, data, tangents)
