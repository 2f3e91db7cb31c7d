"""Synthetic hypergradient trajectories with known steady states (shared by the DMD and estimator tests)."""

from __future__ import annotations

import numpy as np


def linear_signal(sigma: int, q: int, lams, seed: int = 0, t0: int = 1):
    """``h_t = c + Σ_i λ_i^t v_i`` for ``t = t0 .. t0+σ-1``: ``([σ, q], c [q], V [len(lams), q])``.

    ``c`` and ``V`` are standard normal draws from ``seed``; the steady state
    (the only mode at λ = 1) is ``c``.
    """
    rng = np.random.default_rng(seed)
    c = rng.normal(size=q)
    V = rng.normal(size=(len(lams), q))
    t = np.arange(t0, t0 + sigma)[:, None]
    h = c + sum((np.asarray(lam) ** t) * V[i] for i, lam in enumerate(lams))
    return h, c, V


def complex_pair(sigma=30, r=0.85, w=0.6):
    """c + r^t (cos(wt) u + sin(wt) v): a complex pair far from 1."""
    t = np.arange(1, sigma + 1)[:, None]
    c = np.array([0.3, -1.2])
    h = c + (r**t) * (np.cos(w * t) * np.array([1.0, 0.5]) + np.sin(w * t) * np.array([-0.2, 0.7]))
    return h, c
