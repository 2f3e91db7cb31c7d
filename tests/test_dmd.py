"""Hankel DMD against known linear systems."""

import numpy as np
import pytest

from glocal_cli.dmd import FALLBACK_REASONS, hankel_dmd_estimate, hankel_matrix
import signals


def linear_signal(sigma=20, q=3, lams=(0.85, 0.7, -0.5), seed=0, t0=1):
    """h_t = c + Σ_i a_i λ_i^t v_i, t = t0 .. t0+σ-1 -> ([σ, q], c, modes)."""
    return signals.linear_signal(sigma, q, lams, seed, t0)


def test_hankel_matrix_layout():
    h = np.arange(12.0).reshape(6, 2)  # h_k = [2k, 2k+1]
    H = hankel_matrix(h, 3)
    assert H.shape == (6, 4)
    np.testing.assert_array_equal(H[:, 0], np.concatenate([h[0], h[1], h[2]]))
    np.testing.assert_array_equal(H[:, -1], np.concatenate([h[3], h[4], h[5]]))


@pytest.mark.parametrize("m", [2, 5, 10])
def test_exact_on_linear_system(m):
    h, c, _ = linear_signal()
    res = hankel_dmd_estimate(h, m)
    assert not res.fallback, res.reason
    np.testing.assert_allclose(res.estimate, c, rtol=1e-8, atol=1e-10)
    eig = np.sort(res.eigenvalues.real)
    np.testing.assert_allclose(eig, [-0.5, 0.7, 0.85, 1.0], atol=1e-8)
    assert res.rank == 4 and res.n_unit == 1
    assert res.residual < 1e-10
    assert res.spectral_radius == pytest.approx(1.0, abs=1e-8)


def test_complex_modes_give_real_estimate():
    h, c = signals.complex_pair(sigma=20)
    res = hankel_dmd_estimate(h, 8)
    assert not res.fallback, res.reason
    np.testing.assert_allclose(res.estimate, c, rtol=1e-8)
    assert np.any(np.abs(res.eigenvalues.imag) > 0.1)


@pytest.mark.parametrize("n", [0, 1, 7, 100])
def test_finite_horizon_matches_linear_system(n):
    h, c, V = linear_signal()
    sigma = len(h)
    res = hankel_dmd_estimate(h, 10, horizon=n)
    assert not res.fallback, res.reason
    future, _, _ = linear_signal(sigma=1, t0=sigma + n)  # same seed: same c and V
    np.testing.assert_allclose(res.estimate, future[0], rtol=1e-7, atol=1e-9)


def test_noise_bound():
    """With noise of std 1e-3 on |h| ~ 1, the unit-mode estimate stays within 5e-2 of c.

    Noise makes X full rank; the estimate then depends on the truncation. We
    state the bound measured over 20 seeds with rank truncation at 1e-2 s_max.
    """
    errs = []
    for seed in range(20):
        h, c, _ = linear_signal(seed=seed, lams=(0.8, 0.5))
        noisy = h + 1e-3 * np.random.default_rng(100 + seed).normal(size=h.shape)
        res = hankel_dmd_estimate(noisy, 10, rank_rtol=1e-2, tol=0.05)
        if not res.fallback:
            errs.append(np.linalg.norm(res.estimate - c) / np.linalg.norm(c))
    assert len(errs) >= 15
    assert np.median(errs) < 1e-2
    assert max(errs) < 5e-2


def _check_fallback(res, h, reason):
    assert res.fallback and res.reason == reason
    assert reason in FALLBACK_REASONS
    assert np.all(np.isfinite(res.estimate))
    np.testing.assert_array_equal(res.estimate, np.where(np.isfinite(h[-1]), h[-1], 0.0))


def test_strict_fallback_diverging():
    h, _, _ = linear_signal(lams=(1.2, 0.5))
    res = hankel_dmd_estimate(h, 5, mode="strict")
    _check_fallback(res, h, "diverging")
    assert res.spectral_radius == pytest.approx(1.2, rel=1e-6)


def test_strict_fallback_oscillating():
    t = np.arange(1, 21)[:, None]
    h = np.array([1.0, 2.0]) + (-1.0) ** t * np.array([0.5, 0.1])
    res = hankel_dmd_estimate(h, 5, mode="strict")
    _check_fallback(res, h, "oscillating")


def test_strict_fallback_no_unit_eigenvalue():
    t = np.arange(1, 21)[:, None]
    h = 0.8**t * np.array([1.0, -2.0]) + 0.5**t * np.array([0.3, 0.3])
    res = hankel_dmd_estimate(h, 5, mode="strict")
    _check_fallback(res, h, "no_unit_eigenvalue")


def test_fallback_rank_zero():
    h = np.zeros((20, 3))
    _check_fallback(hankel_dmd_estimate(h, 10), h, "rank_zero")


def test_fallback_non_finite():
    h, _, _ = linear_signal()
    h[4, 1] = np.nan
    _check_fallback(hankel_dmd_estimate(h, 10), h, "non_finite")
    h[-1, 0] = np.inf
    res = hankel_dmd_estimate(h, 10)
    assert res.fallback and np.all(np.isfinite(res.estimate))


def test_fallback_too_short():
    h, _, _ = linear_signal(sigma=5)
    _check_fallback(hankel_dmd_estimate(h, 4), h, "too_short")


def test_horizon_overflow_falls_back():
    h, _, _ = linear_signal(lams=(1.5, 0.5))
    res = hankel_dmd_estimate(h, 5, horizon=10**6)
    _check_fallback(res, h, "diverging")


def test_horizon_mode_falls_back_on_growing_mode():
    """A mode with |λ| > 1 + tol makes a finite-horizon extrapolation meaningless too (no huge finite values)."""
    h, _, _ = linear_signal(lams=(1.05, 0.5))
    res = hankel_dmd_estimate(h, 5, horizon=30)
    _check_fallback(res, h, "diverging")
    assert res.spectral_radius == pytest.approx(1.05, rel=1e-6)


def test_fit_predict_matches_signal():
    """HankelFit.predict(n) reproduces the snapshot n steps after the last one (first block = h_{N+n})."""
    from glocal_cli.dmd import hankel_dmd_fit

    h, _, _ = linear_signal(sigma=20)
    fit = hankel_dmd_fit(h, 10)
    future, _, _ = linear_signal(sigma=10, t0=11 + 5)  # g_{N+5} holds h_{N+5} .. h_{N+5+m-1}, N = 11
    np.testing.assert_allclose(fit.predict(5).real, future, rtol=1e-7, atol=1e-9)
