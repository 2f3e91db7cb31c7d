"""Stochastic bi-level HPO with SGLD ("HPO-SGLD"), after Kim & Hospedales (arXiv 2410.10417).

**Derived from the abstract; not checked against the authors' algorithm.** Only the
paper's abstract is available (see ``SPEC-sgld.md`` and ``docs/sgld.md``): the
Gibbs target, the SGLD step and the two recurrences below are derived here.

The inner loss ``L_T(θ, λ)`` defines ``p(θ | λ) ∝ exp(−L_T(θ, λ) / T₀)`` and the
outer objective is ``F(λ) = E_p[L_V(θ, λ)]``. θ is sampled by SGLD,

    θ_{t+1} = θ_t − η g_t + sqrt(2 η T₀) ξ_t,      g_t = ∇_θ L̃_T(θ_t, λ),  ξ_t ~ N(0, I_P),

and the hypergradient is the mean over kept samples (after ``burn_in`` steps,
every ``thin``-th) of the adjoint-forward estimate

    z_{t+1} = (1 − η δ) z_t − η (H_t z_t − u_t),       ĝ_t = ∇_λ L_V(θ_t, λ) − B_tᵀ z_t,

with ``H_t = ∇²_θθ L̃_T``, ``B_t = ∇²_θλ L̃_T``, ``u_t = ∇_θ L_V(θ_t)`` and damping ``δ``.
``H_t z_t`` and ``B_tᵀ z_t`` come from ONE ``jax.vjp`` of ``(θ, λ) ↦ ∇_θ L̃_T(θ, λ)``
applied to ``z_t`` (``H`` symmetric), on the same minibatch as ``g_t``. The carry
of the ``lax.scan`` is ``(θ, z, Σ ĝ, n_kept, key)``: memory O(P + H); no ``P × H``
array exists (tested with ``jax.make_jaxpr`` / ``jax.eval_shape``).

:func:`exact_j_window` is the O(P·H) reference (``J_{t+1} = (I − η H_t) J_t − η B_t``,
``ĝ_t = ∇_λ L_V + J_tᵀ u_t``), for tests only: equal to the adjoint-forward
estimate when ``H``, ``B`` and ``u`` are constant.

Shapes: θ and z are pytrees of the same structure (``P`` numbers in all), ``λ`` is
``[H]``, a window has ``τ`` steps and ``batches`` a leading ``[τ]`` axis.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from glocal_cli.hypergrad import tree_all_finite

# (θ, λ [H], batch, data) -> scalar: the training (inner) loss on one minibatch.
TrainLoss = Callable[[Any, jnp.ndarray, Any, Any], jnp.ndarray]
# (θ, λ [H], val_batch, data) -> scalar: the validation (outer) loss.
ValLoss = Callable[[Any, jnp.ndarray, Any, Any], jnp.ndarray]


class SGLDSettings(NamedTuple):
    """Static settings of one window.

    Attributes:
      step_size: η > 0.
      temperature: T₀ ≥ 0 of the Gibbs target of the loss as given (mean loss in the tasks).
      burn_in: steps at the window's start whose ĝ_t is not averaged (``0 <= burn_in < τ``).
      thin: keep every ``thin``-th step after the burn-in (``>= 1``).
      damping: δ ≥ 0 in the z recurrence.
    """

    step_size: float
    temperature: float
    burn_in: int = 0
    thin: int = 1
    damping: float = 0.0


class SGLDWindow(NamedTuple):
    """What :func:`sgld_window` returns.

    Attributes:
      params: θ after the window's τ SGLD steps (pytree).
      z: the adjoint-forward state after the window (pytree like θ).
      hypergrad: ``[H]`` mean of ĝ_t over the kept steps.
      last: ``[H]`` ĝ_t of the window's last step.
      n_kept: number of averaged steps (scalar int).
      val_loss: scalar, validation loss (on its minibatch) at the last step.
      finite: scalar bool, θ, z and the hypergradient finite.
    """

    params: Any
    z: Any
    hypergrad: jnp.ndarray
    last: jnp.ndarray
    n_kept: jnp.ndarray
    val_loss: jnp.ndarray
    finite: jnp.ndarray


def _noise(key, params):
    """Standard normal noise shaped like ``params`` (one split per leaf)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    )


def langevin_update(params, grads, key, step_size, temperature):
    """One SGLD move from the training gradient ``grads``: ``θ − η g + sqrt(2 η T₀) ξ``, ``ξ ~ N(0, I)``."""
    xi = _noise(key, params)
    scale = jnp.sqrt(2.0 * step_size * temperature)
    return jax.tree_util.tree_map(lambda p, g_, n: p - step_size * g_ + scale * n, params, grads, xi)


def _kept(t, s: SGLDSettings):
    return jnp.logical_and(t >= s.burn_in, (t - s.burn_in) % s.thin == 0)


def sgld_window(
    train_loss: TrainLoss,
    val_loss: ValLoss,
    params,
    z,
    phi: jnp.ndarray,
    batches,
    val_batches,
    key,
    data,
    settings: SGLDSettings,
) -> SGLDWindow:
    """τ SGLD steps with the adjoint-forward hypergradient (pure; jit it).

    Args:
      train_loss: ``(θ, λ, batch, data) -> scalar``.
      val_loss: ``(θ, λ, val_batch, data) -> scalar``.
      params: θ at the window's start.
      z: adjoint-forward state at the start (zeros for a fresh estimate).
      phi: ``[H]`` hyperparameters λ, fixed in the window.
      batches: pytree with a leading ``[τ]`` axis, one training minibatch a step.
      val_batches: pytree with a leading ``[τ]`` axis, one validation minibatch a step
        (``u_t`` is a stochastic gradient when it is a subsample).
      key: PRNG key of the window's Langevin noise.
      data: passed to both losses.
      settings: :class:`SGLDSettings`.
    """
    s = settings
    eta = s.step_size
    zero_h = jnp.zeros_like(phi)

    def body(carry, xs):
        theta, zt, total, n, k = carry
        t, batch, vbatch = xs
        k, k_noise = jax.random.split(k)
        grad_fn = lambda p, lam: jax.grad(train_loss)(p, lam, batch, data)
        g, vjp_fn = jax.vjp(grad_fn, theta, phi)
        hz, bz = vjp_fn(zt)  # H_t z_t [P], B_tᵀ z_t [H]
        v, (u, dv_dphi) = jax.value_and_grad(val_loss, argnums=(0, 1))(theta, phi, vbatch, data)
        g_hat = dv_dphi - bz
        keep = _kept(t, s)
        total = total + jnp.where(keep, g_hat, zero_h)
        n = n + keep.astype(jnp.int32)
        theta_new = langevin_update(theta, g, k_noise, eta, s.temperature)
        z_new = jax.tree_util.tree_map(lambda z_, h_, u_: (1.0 - eta * s.damping) * z_ - eta * (h_ - u_), zt, hz, u)
        return (theta_new, z_new, total, n, k), (g_hat, v)

    tau = jax.tree_util.tree_leaves(batches)[0].shape[0]
    ts = jnp.arange(tau)
    carry0 = (params, z, zero_h, jnp.zeros((), jnp.int32), key)
    (theta, z, total, n, _), (g_hats, vs) = lax.scan(body, carry0, (ts, batches, val_batches))
    mean = total / jnp.maximum(n, 1).astype(total.dtype)
    finite = jnp.logical_and(tree_all_finite((theta, z)), jnp.all(jnp.isfinite(mean)))
    return SGLDWindow(theta, z, mean, g_hats[-1], n, vs[-1], finite)


def exact_j_window(
    train_loss: TrainLoss,
    val_loss: ValLoss,
    params,
    phi: jnp.ndarray,
    batches,
    val_batches,
    key,
    data,
    settings: SGLDSettings,
):
    """Reference for tests: the exact forward recurrence ``J_{t+1} = (I − η H_t) J_t − η B_t``.

    Carries ``J = dθ/dλ`` as a ``[P, H]`` array (O(P·H) memory: not the method) and
    returns ``(θ_end, mean ĝ [H], ĝ_t [τ, H])`` with ``ĝ_t = ∇_λ L_V + J_tᵀ u_t``, over
    the same SGLD chain (same noise) as :func:`sgld_window` with the same ``key``.
    Damping is applied the same way: ``J_{t+1} = (1 − η δ) J_t − η (H_t J_t + B_t)``.
    """
    s = settings
    eta = s.step_size
    flat0, unravel = ravel_pytree(params)
    n_p, n_h = flat0.shape[0], phi.shape[0]

    def body(carry, xs):
        theta, jac, total, n, k = carry
        t, batch, vbatch = xs
        k, k_noise = jax.random.split(k)
        flat_grad = lambda p, lam: ravel_pytree(jax.grad(train_loss)(unravel(p), lam, batch, data))[0]
        flat = ravel_pytree(theta)[0]
        hess = jax.jacfwd(flat_grad, argnums=0)(flat, phi)  # [P, P]
        bmat = jax.jacfwd(flat_grad, argnums=1)(flat, phi)  # [P, H]
        v, (u, dv_dphi) = jax.value_and_grad(val_loss, argnums=(0, 1))(theta, phi, vbatch, data)
        g_hat = dv_dphi + jac.T @ ravel_pytree(u)[0]
        keep = _kept(t, s)
        total = total + jnp.where(keep, g_hat, jnp.zeros_like(g_hat))
        n = n + keep.astype(jnp.int32)
        g = jax.grad(train_loss)(theta, phi, batch, data)
        theta_new = langevin_update(theta, g, k_noise, eta, s.temperature)
        jac_new = (1.0 - eta * s.damping) * jac - eta * (hess @ jac + bmat)
        return (theta_new, jac_new, total, n, k), g_hat

    tau = jax.tree_util.tree_leaves(batches)[0].shape[0]
    jac0 = jnp.zeros((n_p, n_h), flat0.dtype)
    carry0 = (params, jac0, jnp.zeros_like(phi), jnp.zeros((), jnp.int32), key)
    (theta, _, total, n, _), g_hats = lax.scan(body, carry0, (jnp.arange(tau), batches, val_batches))
    return theta, total / jnp.maximum(n, 1).astype(total.dtype), g_hats
