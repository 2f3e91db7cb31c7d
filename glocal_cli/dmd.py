"""Hankel DMD estimate of the global hypergradient from a short trajectory of local ones.

Given the last σ local hypergradients of a window, ``h_1 .. h_σ`` (an array
``[σ, q]``), build the time-delay (Hankel) observable with ``m`` stacks

    g_k = [h_k; h_{k+1}; ...; h_{k+m-1}]  in R^{m q},   k = 1 .. N,  N = σ - m + 1,

fit a linear operator ``A`` with ``A X ≈ Y`` (``X = [g_1 .. g_{N-1}]``,
``Y = [g_2 .. g_N]``) by exact DMD with an SVD of ``X`` truncated to its
numerical rank, and extrapolate ``g_{N+n} ≈ Σ_j b_j λ_j^n φ_j`` with the
amplitudes ``b`` fitted to the last snapshot ``g_N``.

Three modes (``mode=``):

* ``"paper"`` (default): the paper's Eq. 20 read literally. ``ĥ_∞`` is the sum of
  the modes whose eigenvalue is near 1, read out through the FIRST block of the
  observable (the authors' left inverse g⁻¹ in their answer to the reviewers).
  "Near 1" is ``|λ - 1| <= tol`` (default ``tol`` = 0.1, measured on real
  windows, see ``docs/method.md``). When no eigenvalue is within ``tol`` the
  paper's sum is empty (the estimate would be 0); ``if_empty`` chooses what
  the code does: ``"nearest"`` (default) sums the eigenvalue(s) nearest 1 (a
  complex pair together), ``"zero"`` returns the literal empty sum 0,
  ``"local"`` falls back to ``h_σ``. A complex estimate gives its real part;
  the norm of its imaginary part is recorded (``imag_norm``). The only
  fallbacks are ``non_finite``, ``too_short``, ``rank_zero`` and
  ``non_finite_estimate``.
* ``"strict"``: the rules this package used before (an ablation): modes with
  ``|λ - 1| <= tol``, the MEAN of the m blocks, and a fallback to ``h_σ`` when
  the spectral radius exceeds ``1 + tol`` (``diverging``), when another
  eigenvalue has ``|λ| ≈ 1`` (``oscillating``), when none is within ``tol``
  of 1 (``no_unit_eigenvalue``) or when the estimate is complex
  (``complex_estimate``).
* ``"horizon"`` (``horizon=n``): the estimate of ``h_{σ+n}``, ``n`` steps
  after the last observed hypergradient: the last block of
  ``Σ_j b_j λ_j^n φ_j``, with the strict rules on divergence and complex
  estimates. Passing ``horizon`` without ``mode`` selects this mode.

Fallbacks never raise and never return NaN: the result is the last local
hypergradient ``h_σ`` with ``fallback=True`` and one of
:data:`FALLBACK_REASONS`.

Noise: each hyperparameter's trajectory is divided by its RMS over the σ
snapshots before the fit and the estimate is scaled back (``scale=True``; an
invertible diagonal change of observable, so exact data give the same
estimate, but the rank truncation then no longer ignores small components
such as weight decay); the SVD rank is truncated at ``rank_rtol · s_max``
(default ``1e-10``: exact DMD). ``robust=True`` fits total-least-squares DMD
(Hemati et al. 2017: ``X`` and ``Y`` projected on the leading right singular
subspace of ``[X; Y]``) at the rank of the Gavish–Donoho optimal hard
threshold of ``[X; Y]`` (unknown noise level), which is exact on noise-free
data whose rank is below about half the number of snapshot pairs.

Runs on the host in float64 NumPy: it is called once per window and its cost is
negligible (an SVD of an ``[m q, N-1]`` matrix).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

DEFAULT_TOL = 0.1  # paper mode: |λ - 1| of "near 1" (docs/method.md: measured eigenvalues of real windows)
STRICT_TOL = 0.02  # strict and horizon modes: the tolerance those rules always used
DEFAULT_RANK_RTOL = 1e-10

MODES = ("paper", "strict", "horizon")
IF_EMPTY = ("nearest", "zero", "local")

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
      n_unit: number of eigenvalues counted as ``λ ≈ 1`` (paper mode: summed).
      selected: ``[k]`` complex eigenvalues whose modes were summed (empty in
        the horizon mode, which uses all, and on a fallback).
      imag_norm: ``‖Im ĥ‖`` of the estimate before its real part was taken.
      selection: ``"tol"`` (eigenvalues within tol of 1), ``"nearest"`` (none
        within tol: the nearest to 1), ``"empty"`` (none within tol, literal
        empty sum), ``"all"`` (horizon) or ``""`` (fallback).
    """

    estimate: np.ndarray
    eigenvalues: np.ndarray
    spectral_radius: float
    rank: int
    residual: float
    fallback: bool
    reason: str
    n_unit: int = 0
    selected: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.complex128))
    imag_norm: float = 0.0
    selection: str = ""


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


def optimal_hard_threshold(s: np.ndarray, shape) -> float:
    """Gavish & Donoho (2014) optimal hard threshold for singular values ``s`` of a matrix of ``shape``, noise level unknown.

    ``ω(β) · median(s)`` with ``β = min/max`` of the shape and the published
    approximation ``ω(β) ≈ 0.56 β³ − 0.95 β² + 1.82 β + 1.43``.
    """
    beta = min(shape) / max(shape)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    return float(omega * np.median(s))


def hankel_dmd_fit(
    hypergrads,
    m: int,
    *,
    rank_rtol: float = DEFAULT_RANK_RTOL,
    max_rank: Optional[int] = None,
    scale: bool = True,
    robust: bool = False,
) -> Optional[HankelFit]:
    """Fit exact DMD to the Hankel matrix of ``hypergrads [σ, q]`` (finite, σ - m + 1 >= 2).

    Returns ``None`` when ``X`` is numerically zero (rank 0). The estimator
    :func:`hankel_dmd_estimate` and the eigenvalue figure both use this fit.
    ``robust=True``: total-least-squares DMD at the optimal-hard-threshold rank
    of ``[X; Y]`` (see the module docstring).
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
    if robust:
        Z = np.concatenate([X, Y], axis=0)
        _, sz, Vzh = np.linalg.svd(Z, full_matrices=False)
        r = max(1, min(r, int(np.sum(sz > max(optimal_hard_threshold(sz, Z.shape), rank_rtol * sz[0])))))
        P = Vzh[:r].conj().T @ Vzh[:r]
        X, Y = X @ P, Y @ P
        U, s, Vh = np.linalg.svd(X, full_matrices=False)
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


def near_one(eigs: np.ndarray, tol: float) -> np.ndarray:
    """``[r]`` bool: the eigenvalues counted as ``λ ≈ 1``, ``|λ - 1| <= tol``."""
    return np.abs(eigs - 1.0) <= tol


def paper_estimate(fit: HankelFit, *, tol: float = DEFAULT_TOL, if_empty: str = "nearest") -> DMDResult:
    """Eq. 20 from a fit: the real part of the first block of ``Σ_{λ_j near 1} b_j φ_j``.

    ``if_empty`` (``"nearest"`` or ``"zero"``) says what an empty selection
    does (see :func:`hankel_dmd_estimate`). The estimate may be non-finite
    (the caller falls back); its imaginary norm is recorded, never a fallback.
    """
    eigs, modes, b, unit_scale = fit.eigenvalues, fit.modes, fit.amplitudes, fit.scale
    q = unit_scale.shape[0]
    unit = near_one(eigs, tol)
    selection = "tol"
    if not np.any(unit):
        if if_empty == "nearest":
            # the nearest eigenvalue and every one as near (its conjugate has the same |λ - 1|)
            dist = np.abs(eigs - 1.0)
            unit = dist <= dist.min() * (1.0 + 1e-9) + 1e-15
            selection = "nearest"
        else:
            selection = "empty"
    with np.errstate(over="ignore", invalid="ignore"):
        est_c = (modes[:, unit] @ b[unit])[:q] * unit_scale
    return DMDResult(
        est_c.real.copy(), eigs, float(np.max(np.abs(eigs))), fit.rank, fit.residual, False, "",
        int(np.sum(unit)), selected=eigs[unit], imag_norm=float(np.linalg.norm(est_c.imag)), selection=selection,
    )


def _checked(hypergrads, mode: Optional[str], horizon: Optional[int], tol: Optional[float], if_empty: str):
    """``(h [σ, q] float64, mode, tol)`` with the defaults filled in; a ``ValueError`` on a bad argument."""
    h = np.asarray(hypergrads, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"hypergrads must be [sigma, q], got shape {h.shape}")
    if h.shape[0] < 1:
        raise ValueError("hypergrads must hold at least one hypergradient")
    if mode is None:
        mode = "paper" if horizon is None else "horizon"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if (mode == "horizon") != (horizon is not None):
        raise ValueError(f"horizon (got {horizon!r}) is needed by mode 'horizon' and only by it (mode {mode!r})")
    if horizon is not None and horizon < 0:
        raise ValueError(f"horizon must be >= 0 or None, got {horizon}")
    if tol is None:
        tol = DEFAULT_TOL if mode == "paper" else STRICT_TOL
    if if_empty not in IF_EMPTY:
        raise ValueError(f"if_empty must be one of {', '.join(IF_EMPTY)}, got {if_empty!r}")
    return h, mode, tol


def _fallback(last: np.ndarray, reason: str, eigs=np.zeros((0,), np.complex128), radius=0.0, rank=0,
              residual=float("nan"), n_unit=0) -> DMDResult:
    """The last local hypergradient ``h_σ`` (its non-finite components 0), flagged with ``reason``."""
    est = np.where(np.isfinite(last), last, 0.0)
    return DMDResult(est, eigs, float(radius), int(rank), float(residual), True, reason, n_unit)


def _spectrum_reason(eigs: np.ndarray, unit: np.ndarray, mode: str, tol: float) -> str:
    """Strict / horizon modes: why the spectrum rules the extrapolation out, or ``""``."""
    if float(np.max(np.abs(eigs))) > 1.0 + tol:  # a growing mode makes any extrapolation meaningless
        return "diverging"
    if mode == "strict" and np.any((np.abs(np.abs(eigs) - 1.0) <= tol) & ~unit):
        return "oscillating"
    if mode == "strict" and not np.any(unit):
        return "no_unit_eigenvalue"
    return ""


def _readout(fit: HankelFit, unit: np.ndarray, mode: str, m: int, horizon: Optional[int]):
    """``(complex estimate [q] in scaled units, selected eigenvalues, selection)`` of the strict (mean of the
    m blocks of the modes near 1) or the horizon mode (last block of all modes, ``horizon`` steps ahead)."""
    eigs, modes, b = fit.eigenvalues, fit.modes, fit.amplitudes
    q = fit.scale.shape[0]
    if mode == "strict":
        g = modes[:, unit] @ b[unit]
        return g.reshape(m, q).mean(axis=0), eigs[unit], "tol"
    with np.errstate(over="ignore", invalid="ignore"):
        g = modes @ (b * eigs ** int(horizon))
    return g.reshape(m, q)[-1], eigs, "all"


def hankel_dmd_estimate(
    hypergrads,
    m: int,
    *,
    mode: Optional[str] = None,
    horizon: Optional[int] = None,
    tol: Optional[float] = None,
    rank_rtol: float = DEFAULT_RANK_RTOL,
    max_rank: Optional[int] = None,
    imag_rtol: float = 1e-6,
    scale: bool = True,
    if_empty: str = "nearest",
    robust: bool = False,
) -> DMDResult:
    """Estimate the global hypergradient from local hypergradients by Hankel DMD.

    Args:
      hypergrads: ``[σ, q]`` the last σ local hypergradients of a window, oldest
        first.
      m: number of time-delay stacks of the Hankel observable (``1 <= m <= σ-2``
        for a fit; a shorter trajectory falls back).
      mode: ``"paper"`` (default; Eq. 20, first-block readout, no fallback on
        the spectrum), ``"strict"`` (the old rules, mean of the blocks) or
        ``"horizon"`` (finite horizon; the default when ``horizon`` is given).
      horizon: ``n >= 0`` steps ahead for the horizon mode (required there,
        refused by the other modes).
      tol: ``|λ - 1| <= tol`` counts as "near 1" (``None``: :data:`DEFAULT_TOL`
        in the paper mode, :data:`STRICT_TOL` in the others); in the strict and horizon
        modes ``|λ| > 1 + tol`` is diverging and (strict) ``||λ| - 1| <= tol``
        with ``|λ - 1| > tol`` is oscillating.
      rank_rtol: singular values of ``X`` below ``rank_rtol * s_max`` are
        truncated (numerical rank).
      max_rank: optional cap on the SVD rank (``None``: no cap).
      imag_rtol: strict / horizon modes: largest allowed ``‖Im ĥ‖ / ‖ĥ‖``
        before falling back.
      scale: divide each of the ``q`` components by its RMS over the σ
        snapshots before the fit (and multiply the estimate back).
      if_empty: paper mode, no eigenvalue within ``tol``: ``"nearest"``,
        ``"zero"`` (the literal empty sum) or ``"local"`` (fall back).
      robust: fit TLS-DMD at the optimal-hard-threshold rank.

    Returns:
      A :class:`DMDResult`; ``estimate`` is ``[q]`` float64 and always finite
      when the last local hypergradient is finite.
    """
    h, mode, tol = _checked(hypergrads, mode, horizon, tol, if_empty)
    last = h[-1]
    if not np.all(np.isfinite(h)):
        return _fallback(last, "non_finite")
    if m < 1 or h.shape[0] - m + 1 < 3:
        return _fallback(last, "too_short")
    fit = hankel_dmd_fit(h, m, rank_rtol=rank_rtol, max_rank=max_rank, scale=scale, robust=robust)
    if fit is None:
        return _fallback(last, "rank_zero")
    eigs = fit.eigenvalues
    unit = near_one(eigs, tol)
    radius = float(np.max(np.abs(eigs)))
    diag = dict(eigs=eigs, radius=radius, rank=fit.rank, residual=fit.residual, n_unit=int(np.sum(unit)))

    if mode == "paper":
        if not np.any(unit) and if_empty == "local":
            return _fallback(last, "no_unit_eigenvalue", **diag)
        res = paper_estimate(fit, tol=tol, if_empty=if_empty)
        if not np.all(np.isfinite(res.estimate)):
            return _fallback(last, "non_finite_estimate", **diag)
        return res

    reason = _spectrum_reason(eigs, unit, mode, tol)
    if reason:
        return _fallback(last, reason, **diag)
    est_c, selected, selection = _readout(fit, unit, mode, m, horizon)
    if not np.all(np.isfinite(est_c)):
        reason = "diverging" if mode == "horizon" and radius > 1.0 else "non_finite_estimate"
        return _fallback(last, reason, **diag)
    est = est_c.real
    if np.linalg.norm(est_c.imag) > imag_rtol * max(np.linalg.norm(est), np.finfo(float).tiny):
        return _fallback(last, "complex_estimate", **diag)
    return DMDResult(
        est * fit.scale, eigs, radius, fit.rank, fit.residual, False, "", diag["n_unit"],
        selected=selected, imag_norm=float(np.linalg.norm(est_c.imag * fit.scale)), selection=selection,
    )
