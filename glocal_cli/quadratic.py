"""A quadratic bilevel problem with closed-form hypergradients (the reference).

Inner loss ``L(θ, φ) = ½ θᵀAθ - θᵀ(b + Bφ)`` trained by gradient descent with
a fixed learning rate ``η``:

    θ_{t+1} = θ_t - η (A θ_t - b - B φ) = M θ_t + η (b + B φ),   M = I - η A.

``θ_t`` is affine in ``φ``, with ``Z_t = dθ_t/dφ = (I - M^t) A⁻¹ B`` from
``Z_0 = 0``. The meta loss is ``ℓ̃(θ) = ½ ‖θ - θ*‖²``, so the local
hypergradient is ``h_t = Z_tᵀ (θ_t - θ*)`` exactly, and the global one (the
end of training) is ``h_T``; ``h_∞ = (A⁻¹B)ᵀ (A⁻¹(b + Bφ) - θ*)``.

``h_t`` is a sum of exponentials in the eigenvalues of ``M`` (and their
pairwise products) plus a constant: exactly the signal Hankel DMD models.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from glocal_cli.hpo import InnerProblem


class Quadratic(NamedTuple):
    """Problem data (float64 NumPy): ``A [p, p]`` SPD, ``b [p]``, ``B [p, q]``, ``target [p]``, ``lr``."""

    A: np.ndarray
    b: np.ndarray
    B: np.ndarray
    target: np.ndarray
    lr: float


def make_quadratic(p: int = 4, q: int = 2, seed: int = 0, lr: float = 0.1, eig_range=(0.3, 1.5)) -> Quadratic:
    """A random well-conditioned instance (eigenvalues of ``A`` in ``eig_range``)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    A = Q @ np.diag(np.linspace(*eig_range, p)) @ Q.T
    return Quadratic(A, rng.normal(size=p), rng.normal(size=(p, q)), rng.normal(size=p), lr)


def theta_closed_form(qp: Quadratic, theta0: np.ndarray, phi: np.ndarray, t: int) -> np.ndarray:
    """``θ_t`` after ``t`` gradient steps from ``θ_0`` with φ fixed: ``[p]``."""
    M = np.eye(len(qp.b)) - qp.lr * qp.A
    Mt = np.linalg.matrix_power(M, t)
    fixed = np.linalg.solve(qp.A, qp.b + qp.B @ phi)
    return Mt @ theta0 + (np.eye(len(qp.b)) - Mt) @ fixed


def hypergrad_closed_form(qp: Quadratic, theta0: np.ndarray, phi: np.ndarray, t: int) -> np.ndarray:
    """Local hypergradient ``h_t [q]`` of a window starting at ``θ_0`` with ``Z_0 = 0``."""
    p = len(qp.b)
    Mt = np.linalg.matrix_power(np.eye(p) - qp.lr * qp.A, t)
    Z = (np.eye(p) - Mt) @ np.linalg.solve(qp.A, qp.B)
    return Z.T @ (theta_closed_form(qp, theta0, phi, t) - qp.target)


def hypergrad_limit(qp: Quadratic, phi: np.ndarray) -> np.ndarray:
    """``h_∞ [q]``: the hypergradient after infinitely many inner steps."""
    AinvB = np.linalg.solve(qp.A, qp.B)
    return AinvB.T @ (np.linalg.solve(qp.A, qp.b + qp.B @ phi) - qp.target)


def inner_problem(qp: Quadratic, theta0: np.ndarray) -> InnerProblem:
    """The quadratic as an :class:`InnerProblem` (state = θ; batches are unused step indices)."""
    A, b, B, target = (jnp.asarray(x) for x in (qp.A, qp.b, qp.B, qp.target))

    def step(theta, phi, batch, data):
        del batch, data
        return theta - qp.lr * (A @ theta - b - B @ phi)

    def val_loss(theta, data):
        del data
        return 0.5 * jnp.sum((theta - target) ** 2)

    def batches(start, n):
        return np.arange(start, start + n)

    return InnerProblem(jnp.asarray(theta0), step, val_loss, batches)
