"""Hankel DMD estimate of the global hypergradient from a short trajectory of local ones.

Given the last σ local hypergradients of a window, ``h_1 .. h_σ`` (an array
``[σ, q]``), build the time-delay (Hankel) observable with ``m`` stacks

    g_k = [h_k; h_{k+1}; ...; h_{k+m-1}]  in R^{m q},   k = 1 .. N,  N = σ - m + 1,

fit a linear operator ``A`` with ``A X ≈ Y`` (``X = [g_1 .. g_{N-1}]``,
``Y = [g_2 .. g_N]``) by exact DMD with an SVD of ``X`` truncated to its
numerical rank, and extrapolate ``g_{N+n} ≈ Σ_j b_j λ_j^n φ_j`` with the
amplitudes ``b`` fitted to the last snapshot ``g_N``.

Two estimates (both documented choices the paper leaves open):

* **unit mode** (``horizon=None``): ``ĥ_∞`` keeps the modes whose eigenvalue is
  within ``tol`` of 1 (modes with ``|λ| < 1`` vanish as ``n → ∞``). The inverse
  observable averages the ``m`` blocks of ``Σ_{|λ_j-1|≤tol} b_j φ_j`` (at the
  steady state all blocks are equal; averaging is the more robust left inverse).
* **finite-horizon mode** (``horizon=n``): the estimate of ``h_{σ+n}``, ``n``
  steps after the last observed hypergradient: the last block of
  ``Σ_j b_j λ_j^n φ_j``. It needs no tolerance on the eigenvalues.

Assumption failures never raise and never return NaN: the result falls back to
the last local hypergradient ``h_σ`` with ``fallback=True`` and a ``reason``:

* ``"non_finite"``: the input holds NaN or inf;
* ``"too_short"``: fewer than 3 snapshots (σ - m + 1 < 3), nothing to fit;
* ``"rank_zero"``: all snapshots are (numerically) zero;
* ``"diverging"``: spectral radius > 1 + tol (both modes), or the
  finite-horizon extrapolation overflows;
* ``"oscillating"``: an eigenvalue with ``|λ|`` within tol of 1 but not near 1;
* ``"no_unit_eigenvalue"``: no eigenvalue within tol of 1 (unit mode);
* ``"complex_estimate"``: the estimate has an imaginary part larger than
  ``imag_rtol`` times its norm (modes near 1 without their conjugates);
* ``"non_finite_estimate"``: the extrapolation produced NaN or inf.

Noise (documented choices, tuned on real LeNet / Fashion-MNIST windows, see
``docs/method.md``): each hyperparameter's trajectory is divided by its RMS
over the σ snapshots before the fit and the estimate is scaled back
(``scale=True``; an invertible diagonal change of observable, so exact data
give the same estimate, but the rank truncation then no longer ignores small
components such as weight decay), and the SVD rank is truncated at
``rank_rtol · s_max`` (default ``1e-10``: exact DMD; ``glocal verify`` shows
that looser truncation or tolerance makes the estimate inexact on the
quadratic problem and does not make it closer to the true global
hypergradient on LeNet).

Runs on the host in float64 NumPy: it is called once per window and its cost is
negligible (an SVD of an ``[m q, N-1]`` matrix).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

DEFAULT_TOL = 0.02
DEFAULT_RANK_RTOL = 1e-10

FALLBACK_REASONS = (
    "non_finite",
    "too_short",
    "rank_zero",
    "diverging",
    "oscillating",
    "no_unit_eigenvalue",
    "complex_estimate",
    "non_finite_estimate",
)


@dataclasses.dataclass(frozen=True)
class DMDResult:
    """Result of :func:`hankel_dmd_estimate`.

    Attributes:
      estimate: ``[q]`` float64, the glocal hypergradient (or the fallback).
      eigenvalues: ``[r]`` complex128 DMD eigenvalues (empty when not fitted).
      spectral_radius: ``max |λ|`` (0.0 when not fitted).
      rank: numerical rank ``r`` of the snapshot matrix ``X``.
      residual: relative fit residual ``‖A X - Y‖_F / ‖Y‖_F``.
      fallback: True when the estimate is the last local hypergradient.
      reason: why it fell back (one of :data:`FALLBACK_REASONS`), else ``""``.
      n_unit: number of eigenvalues counted as ``λ ≈ 1``.
    """

    estimate: np.ndarray
    eigenvalues: np.ndarray
    spectral_radius: float
    rank: int
    residual: float
    fallback: bool
    reason: str
    n_unit: int = 0


def hankel_matrix(hypergrads: np.ndarray, m: int) -> np.ndarray:
    """Stack ``m`` time delays: ``[σ, q] -> [m q, σ - m + 1]``.

    Column ``k`` is ``[h_k; h_{k+1}; ...; h_{k+m-1}]``.
    """
    h = np.asarray(hypergrads)
    sigma, q = h.shape
    n = sigma - m + 1
    if m < 1 or n < 1:
        raise ValueError(f"need 1 <= m <= sigma, got m={m}, sigma={sigma}")
    return np.concatenate([h[i : i + n].T for i in range(m)], axis=0)


@dataclasses.dataclass(frozen=True)
class HankelFit:
    """Exact DMD of a Hankel matrix (see :func:`hankel_dmd_fit`).

    Attributes:
      eigenvalues: ``[r]`` complex DMD eigenvalues ``λ_j``.
      modes: ``[m q, r]`` complex exact DMD modes ``φ_j`` (of the scaled data).
      amplitudes: ``[r]`` complex ``b``, fitted to the last snapshot ``g_N``.
      scale: ``[q]`` the per-component divisors applied before the fit.
      rank: numerical rank ``r`` of ``X``.
      residual: relative fit residual ``‖A X - Y‖_F / ‖Y‖_F``.
      n_snapshots: ``N``, the number of Hankel columns.
    """

    eigenvalues: np.ndarray
    modes: np.ndarray
    amplitudes: np.ndarray
    scale: np.ndarray
    rank: int
    residual: float
    n_snapshots: int

    def predict(self, n: int) -> np.ndarray:
        """``g_{N+n} ≈ Σ_j b_j λ_j^n φ_j`` reshaped to ``[m, q]`` (unscaled), complex."""
        g = self.modes @ (self.amplitudes * self.eigenvalues ** int(n))
        return g.reshape(-1, self.scale.shape[0]) * self.scale


def hankel_dmd_fit(
    hypergrads,
    m: int,
    *,
    rank_rtol: float = DEFAULT_RANK_RTOL,
    max_rank: Optional[int] = None,
    scale: bool = True,
) -> Optional[HankelFit]:
    """Fit exact DMD to the Hankel matrix of ``hypergrads [σ, q]`` (finite, σ - m + 1 >= 2).

    Returns ``None`` when ``X`` is numerically zero (rank 0). The estimator
    :func:`hankel_dmd_estimate` and the eigenvalue figure both use this fit.
    """
    h = np.asarray(hypergrads, dtype=np.float64)
    q = h.shape[1]
    unit_scale = np.ones(q)
    if scale:
        rms = np.sqrt(np.mean(h**2, axis=0))
        unit_scale = np.where(rms > 0, rms, 1.0)
    H = hankel_matrix(h / unit_scale, m)
    X, Y = H[:, :-1], H[:, 1:]
    U, s, Vh = np.linalg.svd(X, full_matrices=False)
    if s.size == 0 or s[0] <= np.finfo(np.float64).tiny:
        return None
    r = int(np.sum(s > rank_rtol * s[0]))
    if max_rank is not None:
        r = min(r, int(max_rank))
    U, s, V = U[:, :r], s[:r], Vh[:r].conj().T
    YVSinv = (Y @ V) / s
    eigs, W = np.linalg.eig(U.conj().T @ YVSinv)
    y_norm = np.linalg.norm(Y)
    residual = float(np.linalg.norm(Y - (Y @ V) @ V.conj().T) / y_norm) if y_norm > 0 else 0.0
    modes = YVSinv @ W
    b = np.linalg.lstsq(modes, H[:, -1].astype(np.complex128), rcond=None)[0]
    return HankelFit(eigs, modes, b, unit_scale, r, residual, H.shape[1])


def hankel_dmd_estimate(
    hypergrads,
    m: int,
    *,
    horizon: Optional[int] = None,
    tol: float = DEFAULT_TOL,
    rank_rtol: float = DEFAULT_RANK_RTOL,
    max_rank: Optional[int] = None,
    imag_rtol: float = 1e-6,
    scale: bool = True,
) -> DMDResult:
    """Estimate the global hypergradient from local hypergradients by Hankel DMD.

    Args:
      hypergrads: ``[σ, q]`` the last σ local hypergradients of a window, oldest
        first.
      m: number of time-delay stacks of the Hankel observable (``1 <= m <= σ-2``
        for a fit; a shorter trajectory falls back).
      horizon: ``None`` for the unit-eigenvalue estimate ``ĥ_∞``; an integer
        ``n >= 0`` for the finite-horizon estimate of ``h_{σ+n}``.
      tol: ``|λ - 1| <= tol`` counts as a unit eigenvalue; ``|λ| > 1 + tol`` is
        diverging (both modes); ``||λ| - 1| <= tol`` with ``|λ - 1| > tol`` is
        oscillating (unit mode).
      rank_rtol: singular values of ``X`` below ``rank_rtol * s_max`` are
        truncated (numerical rank).
      max_rank: optional cap on the SVD rank (``None``: no cap).
      imag_rtol: largest allowed ``‖Im ĥ‖ / ‖ĥ‖`` before falling back.
      scale: divide each of the ``q`` components by its RMS over the σ
        snapshots before the fit (and multiply the estimate back).

    Returns:
      A :class:`DMDResult`; ``estimate`` is ``[q]`` float64 and always finite
      when the last local hypergradient is finite.
    """
    h = np.asarray(hypergrads, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"hypergrads must be [sigma, q], got shape {h.shape}")
    sigma, q = h.shape
    if sigma < 1:
        raise ValueError("hypergrads must hold at least one hypergradient")
    if horizon is not None and horizon < 0:
        raise ValueError(f"horizon must be >= 0 or None, got {horizon}")
    last = h[-1]
    empty = np.zeros((0,), np.complex128)

    def fallback(reason, eigs=empty, radius=0.0, rank=0, residual=float("nan"), n_unit=0):
        est = np.where(np.isfinite(last), last, 0.0)
        return DMDResult(est, eigs, float(radius), int(rank), float(residual), True, reason, n_unit)

    if not np.all(np.isfinite(h)):
        return fallback("non_finite")
    n_snap = sigma - m + 1
    if m < 1 or n_snap < 3:
        return fallback("too_short")

    fit = hankel_dmd_fit(h, m, rank_rtol=rank_rtol, max_rank=max_rank, scale=scale)
    if fit is None:
        return fallback("rank_zero")
    eigs, modes, b, unit_scale = fit.eigenvalues, fit.modes, fit.amplitudes, fit.scale
    r, residual = fit.rank, fit.residual
    radius = float(np.max(np.abs(eigs)))

    unit = np.abs(eigs - 1.0) <= tol
    n_unit = int(np.sum(unit))
    diag = dict(eigs=eigs, radius=radius, rank=r, residual=residual, n_unit=n_unit)

    if radius > 1.0 + tol:  # both modes: a growing mode makes any extrapolation meaningless
        return fallback("diverging", **diag)
    if horizon is None:
        if np.any((np.abs(np.abs(eigs) - 1.0) <= tol) & ~unit):
            return fallback("oscillating", **diag)
        if n_unit == 0:
            return fallback("no_unit_eigenvalue", **diag)
        g = modes[:, unit] @ b[unit]
        est_c = g.reshape(m, q).mean(axis=0)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            g = modes @ (b * eigs ** int(horizon))
        est_c = g.reshape(m, q)[-1]

    if not np.all(np.isfinite(est_c)):
        reason = "diverging" if horizon is not None and radius > 1.0 else "non_finite_estimate"
        return fallback(reason, **diag)
    est = est_c.real
    if np.linalg.norm(est_c.imag) > imag_rtol * max(np.linalg.norm(est), np.finfo(float).tiny):
        return fallback("complex_estimate", **diag)
    return DMDResult(est * unit_scale, eigs, radius, r, residual, False, "", n_unit)
