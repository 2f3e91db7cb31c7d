"""Estimators of the hypergradient a glocal window hands to the outer optimizer.

One interface for every choice, chosen by name (``hpo.estimator`` in
``params.yaml``, ``--estimator`` on the command line)::

    estimator = make_estimator(name, m=m, tol=tol, rank_rtol=rank_rtol)
    est = estimator(h, steps_left)   # h: [σ, q] local hypergradients of the window, oldest first

and ``est.value`` (``[q]`` float64) is what the outer optimizer gets.

* ``glocal``: the paper's Eq. 20 (:func:`glocal_cli.dmd.hankel_dmd_estimate`,
  ``mode="paper"``): the sum of the DMD modes near 1, first-block readout,
  real part; no fallback except non-finite input or estimate, fewer than 3
  snapshots, or rank 0. When no eigenvalue is within ``tol`` of 1 it sums the
  eigenvalue(s) nearest 1 (the literal empty sum is ``if_empty="zero"`` of
  :func:`~glocal_cli.dmd.hankel_dmd_estimate`).
* ``glocal-strict``: the earlier rules of this package (mean of the blocks,
  fallback to ``h_σ`` on a spectral radius above 1 + tol, an oscillating mode,
  no eigenvalue within tol, a complex estimate). An ablation.
* ``glocal-horizon``: the finite-horizon estimate of ``h_T``, ``steps_left``
  steps after the window (strict rules).
* ``glocal-robust``: ``glocal`` on total-least-squares DMD at the rank of the
  optimal hard threshold (a noise-robust fit).
* ``mean``: the mean of the σ local hypergradients (denoising without Koopman
  extrapolation: the control).
* ``local``: ``h_σ``, the window's last local hypergradient.

``tol=None`` means each DMD mode's default (:data:`glocal_cli.dmd.DEFAULT_TOL`
for ``glocal``/``glocal-robust``, :data:`glocal_cli.dmd.STRICT_TOL` for
``glocal-strict``/``glocal-horizon``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from glocal_cli import dmd

ESTIMATORS = ("glocal", "glocal-strict", "glocal-horizon", "glocal-robust", "mean", "local")

_EMPTY_C = np.zeros((0,), np.complex128)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What an estimator returns for one window.

    Attributes:
      value: ``[q]`` float64, what the outer optimizer gets; finite whenever
        ``h[-1]`` is finite.
      fallback: True when ``value`` is the local ``h_σ`` because the estimator
        could not produce its own.
      reason: ``""`` or a fallback reason (:data:`glocal_cli.dmd.FALLBACK_REASONS`).
      selected: ``[k]`` complex128 eigenvalues whose modes were summed (empty
        for ``mean`` / ``local`` and on a fallback; all of them for the horizon).
      spectral_radius: ``max |λ|``; NaN when no DMD was fitted.
      residual: relative DMD fit residual; NaN when no DMD was fitted.
      rank: DMD rank; 0 when no DMD was fitted.
      imag_norm: ``‖Im ĥ‖`` before taking the real part (0.0 when none).
      eigenvalues: ``[r]`` complex128 all DMD eigenvalues (empty when none).
      estimator: the estimator's name.
      selection: how the modes were chosen (``"tol"``, ``"nearest"``,
        ``"empty"``, ``"all"``), ``""`` without DMD or on a fallback.
    """

    value: np.ndarray
    fallback: bool
    reason: str
    selected: np.ndarray
    spectral_radius: float
    residual: float
    rank: int
    imag_norm: float
    eigenvalues: np.ndarray
    estimator: str = ""
    selection: str = ""

    @property
    def n_selected(self) -> int:
        return int(self.selected.shape[0])


def _check(h) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] < 1:
        raise ValueError(f"hypergrads must be [sigma >= 1, q], got shape {h.shape}")
    return h


def _from_dmd(name: str, r: dmd.DMDResult) -> Estimate:
    fitted = r.rank > 0
    return Estimate(
        value=np.asarray(r.estimate, np.float64),
        fallback=bool(r.fallback),
        reason=r.reason,
        selected=np.asarray(r.selected, np.complex128) if not r.fallback else _EMPTY_C,
        spectral_radius=float(r.spectral_radius) if fitted else float("nan"),
        residual=float(r.residual) if fitted else float("nan"),
        rank=int(r.rank),
        imag_norm=float(r.imag_norm),
        eigenvalues=np.asarray(r.eigenvalues, np.complex128),
        estimator=name,
        selection=r.selection,
    )


def _plain(name: str, value: np.ndarray, fallback: bool = False, reason: str = "") -> Estimate:
    nan = float("nan")
    return Estimate(np.asarray(value, np.float64), fallback, reason, _EMPTY_C, nan, nan, 0, 0.0, _EMPTY_C, name)


def make_estimator(
    name: str, *, m: int, tol: Optional[float] = None, rank_rtol: float = dmd.DEFAULT_RANK_RTOL,
    if_empty: str = "nearest",
) -> Callable[[np.ndarray, int], Estimate]:
    """``estimator(h [σ, q], steps_left: int) -> Estimate`` by name; an unknown name is a ``ValueError``.

    ``steps_left``: inner steps from the window's last hypergradient to T (used
    by ``glocal-horizon`` only). ``if_empty`` (``glocal`` and ``glocal-robust``):
    what a window with no eigenvalue within ``tol`` of 1 does, one of
    :data:`glocal_cli.dmd.IF_EMPTY` (``"nearest"``, the default: the nearest
    eigenvalue(s); ``"zero"``: the paper's literal empty sum; ``"local"``: fall back
    to ``h_σ``); ``glocal verify`` compares the three on the same windows.
    """
    if name not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {name!r}")
    if if_empty not in dmd.IF_EMPTY:
        raise ValueError(f"if_empty must be one of {', '.join(dmd.IF_EMPTY)}, got {if_empty!r}")
    kw = dict(tol=tol, rank_rtol=rank_rtol)

    if name == "local":

        def estimate(h, steps_left: int) -> Estimate:
            return _plain(name, _check(h)[-1])

    elif name == "mean":

        def estimate(h, steps_left: int) -> Estimate:
            h = _check(h)
            if not np.all(np.isfinite(h)):
                last = h[-1]
                return _plain(name, np.where(np.isfinite(last), last, 0.0), True, "non_finite")
            return _plain(name, h.mean(axis=0))

    else:
        mode = {"glocal": "paper", "glocal-robust": "paper", "glocal-strict": "strict", "glocal-horizon": "horizon"}[name]
        robust = name == "glocal-robust"

        def estimate(h, steps_left: int) -> Estimate:
            horizon = int(steps_left) if mode == "horizon" else None
            r = dmd.hankel_dmd_estimate(_check(h), m, mode=mode, horizon=horizon, robust=robust,
                                        **kw, **({"if_empty": if_empty} if mode == "paper" else {}))
            return _from_dmd(name, r)

    estimate.name = name
    return estimate


def needs_window(name: str) -> bool:
    """True when the estimator reads more than the last local hypergradient (records σ of them)."""
    return name != "local"
