"""The estimator interface (glocal_cli.estimators) on lifted-linear systems and edge cases."""

import numpy as np
import pytest

from glocal_cli import dmd
from glocal_cli.estimators import ESTIMATORS, Estimate, make_estimator
from signals import complex_pair, linear_signal


def lifted_linear(sigma=30, q=3, lams=(0.8, 0.6, -0.5), seed=0, t0=1):
    """h_t = c + Σ_i a_i λ_i^t v_i, t = t0 .. t0+σ-1; every other mode has |λ - 1| > 0.1."""
    return linear_signal(sigma, q, lams, seed, t0)


@pytest.mark.parametrize("name", ["glocal", "glocal-strict", "glocal-robust"])
@pytest.mark.parametrize("m", [2, 5, 10])
def test_steady_state_exact(name, m):
    h, c, _ = lifted_linear()
    est = make_estimator(name, m=m)(h, 100)
    assert not est.fallback, est.reason
    np.testing.assert_allclose(est.value, c, rtol=1e-8, atol=1e-10)
    assert est.n_selected == 1 and abs(est.selected[0] - 1.0) < 1e-8
    assert est.imag_norm < 1e-10
    assert est.spectral_radius == pytest.approx(1.0, abs=1e-8)
    assert est.residual < 1e-10 and est.rank == 4


@pytest.mark.parametrize("name", ["glocal", "glocal-strict", "glocal-robust"])
def test_steady_state_exact_with_complex_modes(name):
    h, c = complex_pair()
    est = make_estimator(name, m=8)(h, 0)
    assert not est.fallback, est.reason
    np.testing.assert_allclose(est.value, c, rtol=1e-8)
    assert np.any(np.abs(est.eigenvalues.imag) > 0.1)


@pytest.mark.parametrize("n", [0, 1, 7, 100])
def test_horizon_equals_future_value(n):
    h, _, _ = lifted_linear()
    est = make_estimator("glocal-horizon", m=10)(h, n)
    assert not est.fallback, est.reason
    future, _, _ = lifted_linear(sigma=1, t0=len(h) + n)
    np.testing.assert_allclose(est.value, future[0], rtol=1e-7, atol=1e-9)


def test_mean_and_local_definitions():
    h, _, _ = lifted_linear(sigma=12)
    mean = make_estimator("mean", m=4)(h, 5)
    local = make_estimator("local", m=4)(h, 5)
    np.testing.assert_array_equal(mean.value, h.mean(axis=0))
    np.testing.assert_array_equal(local.value, h[-1])
    for est in (mean, local):
        assert not est.fallback and est.reason == "" and est.rank == 0 and est.n_selected == 0
        assert np.isnan(est.spectral_radius) and np.isnan(est.residual) and est.eigenvalues.size == 0


def test_empty_selection_sums_nearest_mode():
    """No eigenvalue within tol of 1: the paper's sum is empty; glocal sums the nearest mode(s) instead.

    h_t = 0.8^t u + 0.5^t v: the nearest mode is 0.8 and its first-block
    readout (amplitudes at the last snapshot g_N, N = σ - m + 1) is 0.8^N u.
    """
    sigma, m = 20, 5
    t = np.arange(1, sigma + 1)[:, None]
    u, v = np.array([1.0, -2.0]), np.array([0.3, 0.3])
    h = 0.8**t * u + 0.5**t * v
    est = make_estimator("glocal", m=m)(h, 0)
    assert not est.fallback and est.selection == "nearest"
    np.testing.assert_allclose(est.selected, [0.8], atol=1e-8)
    np.testing.assert_allclose(est.value, 0.8 ** (sigma - m + 1) * u, rtol=1e-7)
    # the literal empty sum, and the fallback, as options of the DMD function
    zero = dmd.hankel_dmd_estimate(h, m, if_empty="zero")
    assert not zero.fallback and zero.selection == "empty" and zero.n_unit == 0
    np.testing.assert_array_equal(zero.estimate, np.zeros(2))
    loc = dmd.hankel_dmd_estimate(h, m, if_empty="local")
    assert loc.fallback and loc.reason == "no_unit_eigenvalue"
    np.testing.assert_array_equal(loc.estimate, h[-1])
    # ... and of the estimator (glocal verify compares the three on the same windows)
    zero_e = make_estimator("glocal", m=m, if_empty="zero")(h, 0)
    assert zero_e.selection == "empty" and not zero_e.fallback
    np.testing.assert_array_equal(zero_e.value, np.zeros(2))
    loc_e = make_estimator("glocal", m=m, if_empty="local")(h, 0)
    assert loc_e.fallback and loc_e.reason == "no_unit_eigenvalue"
    np.testing.assert_array_equal(loc_e.value, h[-1])
    with pytest.raises(ValueError, match="if_empty must be one of nearest, zero, local"):
        make_estimator("glocal", m=m, if_empty="none")
    # the strict rules fall back
    strict = make_estimator("glocal-strict", m=m)(h, 0)
    assert strict.fallback and strict.reason == "no_unit_eigenvalue"
    np.testing.assert_array_equal(strict.value, h[-1])


def test_nearest_takes_the_conjugate_pair():
    """A complex pair nearest 1 (none within tol) is summed as a pair: a real estimate."""
    h, _ = complex_pair(r=0.95, w=0.3)
    h = h - np.array([0.3, -1.2])  # no steady state
    est = dmd.hankel_dmd_estimate(h, 8)
    assert est.selection == "nearest" and est.n_unit == 2
    assert est.selected[0] == pytest.approx(np.conj(est.selected[1]))
    assert est.imag_norm < 1e-8 * np.linalg.norm(est.estimate)


def test_complex_estimate_gives_real_part_and_records_imag():
    """A selected complex mode without its conjugate: the real part, with ‖Im‖ recorded (no fallback).

    Exact DMD of real data gives conjugate-closed selections (real estimates),
    so the case is built on a hand-made fit: one mode λ = 1 + 0.01i, q = 2, m = 2.
    """
    phi = np.array([[1.0 + 2.0j], [3.0 - 1.0j], [0.5j], [1.0]])  # [m q, 1]
    fit = dmd.HankelFit(np.array([1.0 + 0.01j]), phi, np.array([2.0 + 0.0j]), np.array([1.0, 10.0]), 1, 0.0, 5)
    res = dmd.paper_estimate(fit)
    assert not res.fallback and res.n_unit == 1
    np.testing.assert_allclose(res.estimate, [2.0, 60.0])  # first block, scaled back
    assert res.imag_norm == pytest.approx(np.linalg.norm([4.0, -20.0]))
    # on real data the selection holds both members of a pair near 1, and the estimate is real
    t = np.arange(1, 31)[:, None]
    z = (0.97 * np.exp(0.05j)) ** t * np.array([1.0 + 0.5j, -0.3 + 1.0j])
    h = 2 * z.real + np.array([1.0, 2.0])
    est = make_estimator("glocal", m=6)(h, 0)
    assert est.n_selected == 3 and est.imag_norm < 1e-8 * np.linalg.norm(est.value)
    # every mode is selected (|λ - 1| ≈ 0.058 for the pair), so the first block is h at snapshot N = σ - m + 1
    np.testing.assert_allclose(est.value, h[30 - 6], rtol=1e-8)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_non_finite_input(name):
    h, _, _ = lifted_linear(sigma=12)
    h[3, 1] = np.nan
    est = make_estimator(name, m=4)(h, 10)
    assert np.all(np.isfinite(est.value))
    if name == "local":
        assert not est.fallback
    else:
        assert est.fallback and est.reason == "non_finite"
        np.testing.assert_array_equal(est.value, h[-1])


@pytest.mark.parametrize("name", ["glocal", "glocal-strict", "glocal-horizon", "glocal-robust"])
def test_dmd_estimators_fall_back_on_short_and_zero(name):
    h, _, _ = lifted_linear(sigma=5)
    est = make_estimator(name, m=4)(h, 3)
    assert est.fallback and est.reason == "too_short" and est.rank == 0 and np.isnan(est.spectral_radius)
    np.testing.assert_array_equal(est.value, h[-1])
    z = np.zeros((12, 3))
    est = make_estimator(name, m=4)(z, 3)
    assert est.fallback and est.reason == "rank_zero"


def test_paper_mode_never_falls_back_on_the_spectrum():
    """A growing mode (radius 1.2) or an oscillating one: glocal still reports its DMD estimate."""
    h, c, _ = lifted_linear(lams=(1.2, 0.5))
    est = make_estimator("glocal", m=5)(h, 0)
    assert not est.fallback and est.spectral_radius == pytest.approx(1.2, rel=1e-6)
    np.testing.assert_allclose(est.value, c, rtol=1e-7)
    assert make_estimator("glocal-strict", m=5)(h, 0).reason == "diverging"


@pytest.mark.parametrize("name", ESTIMATORS)
def test_interface_contract(name):
    rng = np.random.default_rng(3)
    h = rng.normal(size=(10, 3)).cumsum(axis=0)  # a noisy random walk: real-window-like
    est = make_estimator(name, m=4, tol=None, rank_rtol=1e-10)(h, 40)
    assert isinstance(est, Estimate) and est.estimator == name
    assert est.value.shape == (3,) and est.value.dtype == np.float64 and np.all(np.isfinite(est.value))
    assert est.selected.dtype == np.complex128 and est.eigenvalues.dtype == np.complex128
    assert isinstance(est.fallback, bool) and isinstance(est.reason, str) and isinstance(est.rank, int)
    assert (est.reason == "") == (not est.fallback)
    assert est.imag_norm >= 0.0
    if name in ("mean", "local"):
        assert est.rank == 0 and est.eigenvalues.size == 0


def test_unknown_name():
    with pytest.raises(ValueError, match="glocal-strict"):
        make_estimator("koopman", m=4)


def test_robust_denoises_low_rank_signal():
    """Many snapshots, small noise: TLS at the optimal-hard-threshold rank stays near c."""
    errs = {"glocal": [], "glocal-robust": []}
    for seed in range(10):
        h, c, _ = lifted_linear(sigma=60, lams=(0.8,), seed=seed)
        noisy = h + 1e-3 * np.random.default_rng(50 + seed).normal(size=h.shape)
        for name in errs:
            est = make_estimator(name, m=10)(noisy, 0)
            errs[name].append(np.linalg.norm(est.value - c) / np.linalg.norm(c))
    assert np.median(errs["glocal-robust"]) < 1e-2
    assert np.median(errs["glocal-robust"]) < np.median(errs["glocal"])
