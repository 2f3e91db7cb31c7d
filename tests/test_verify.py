"""glocal verify: comparisons on hand-made examples, the tangent run against closed forms, the
quadratic where the truth is known, and the command's outputs (keys, ranges, files) on a tiny problem."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from data_fixtures import real_data_dir
from glocal_cli import quadratic, verify
from glocal_cli.cli import main
from glocal_cli.estimators import ESTIMATORS

DATA = real_data_dir()
needs_data = pytest.mark.realdata
STATS = {"n", "cosine_mean", "cosine_median", "rel_err_median", "rel_err_mean", "sign_agreement",
         "sign_agreement_per_component", "fallbacks", "fallback_reasons", "closer_than_local",
         "cost_tangent_steps", "cost_seconds_mean"}


def test_compare_hand_made():
    c = verify.compare(np.array([1.0, -2.0]), np.array([1.0, 2.0]))
    assert c["sign_agree"] == [1, 0] and c["sign_frac"] == 0.5
    assert math.isclose(c["cosine"], -3 / 5) and math.isclose(c["rel_err"], 4 / math.sqrt(5))
    assert math.isnan(verify.compare(np.ones(2), np.zeros(2))["rel_err"])


def test_sign_agreement_hand_made():
    est = np.array([[1.0, -2.0, 0.0], [3.0, 4.0, -1.0]])
    true = np.array([[2.0, 2.0, 0.0], [-1.0, 4.0, -2.0]])
    s = verify.sign_agreement(est, true)
    assert s["overall"] == pytest.approx(4 / 6)
    assert s["per_component"] == pytest.approx([0.5, 0.5, 1.0])
    assert verify.sign_agreement(-est, true)["per_component"] == pytest.approx([0.5, 0.5, 0.5])
    with pytest.raises(ValueError):
        verify.sign_agreement(est, true[:, :2])


def test_lag1_and_noise_stats_hand_made():
    assert verify.lag1_autocorr(np.array([1.0, -1.0, 1.0, -1.0])) == pytest.approx(-0.75)
    assert math.isnan(verify.lag1_autocorr(np.ones(4)))
    # two orders, h_t = mean ± d: std over orders (ddof 1) = sqrt(2)·d
    mean = np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    d = np.array([[0.1, 0.0], [0.2, 0.0], [0.4, 0.0]])
    st = verify.noise_stats(np.stack([mean + d, mean - d]))
    assert st["rel_std_end"] == pytest.approx(math.sqrt(2) * 0.1)
    assert st["rel_std_mean"] == pytest.approx(math.sqrt(2) * 0.1)
    assert st["sign_agree_end"] == pytest.approx(1.0)
    assert st["mean_end"] == pytest.approx([4.0, 0.0])


def test_tangent_run_matches_closed_forms(x64):
    """Local hypergradients, look-aheads and the truth of a TangentRunner run equal the quadratic's closed forms."""
    qp = quadratic.make_quadratic(p=3, q=2, seed=1, lr=0.1)
    theta0, phi = np.array([0.5, -1.0, 2.0]), np.array([0.3, -0.2])
    prob = quadratic.inner_problem(qp, theta0)
    tau, sigma, T, start = 10, 4, 100, 30
    theta_s = quadratic.theta_closed_form(qp, theta0, phi, start)
    tr = verify.TangentRunner(prob, sigma).run(jnp.asarray(theta_s), jnp.asarray(phi), start, T, tau, (2, 4, 9))
    assert tr.finite and tr.chunks == 7
    want_local = [quadratic.hypergrad_closed_form(qp, theta_s, phi, t) for t in range(tau - sigma + 1, tau + 1)]
    np.testing.assert_allclose(tr.local, want_local, rtol=1e-10, atol=1e-13)
    for k in (2, 4):
        np.testing.assert_allclose(tr.lookahead[k], quadratic.hypergrad_closed_form(qp, theta_s, phi, k * tau), rtol=1e-10)
    truth = quadratic.hypergrad_closed_form(qp, theta_s, phi, T - start)
    np.testing.assert_allclose(tr.truth, truth, rtol=1e-10)
    np.testing.assert_allclose(tr.lookahead[9], truth)  # beyond T: the truth itself


def test_quadratic_where_the_truth_is_known():
    """Exact DMD recovers h_T; local is > 1 % off; the 4τ look-ahead is closer than 2τ, closer than local."""
    s = verify.profile_settings("cpu", quad_seeds=(0, 1), quad_windows=(1, 3), problems=("quadratic",))
    rows = verify.verify_quadratic(s)
    assert len(rows) == 4
    for r in rows:
        e = r["estimates"]
        assert set(e) == set(ESTIMATORS) | {"truncated-2tau", "truncated-4tau"}
        assert e["glocal-strict"]["rel_err"] < 1e-5 and e["glocal-horizon"]["rel_err"] < 1e-4
        assert e["local"]["rel_err"] > 1e-2
        assert e["truncated-4tau"]["rel_err"] < e["truncated-2tau"]["rel_err"] < e["local"]["rel_err"]
        assert e["truncated-4tau"]["cost_tangent_steps"] == 4 * s.quad_tau and e["local"]["cost_tangent_steps"] == s.quad_tau
    # the paper's glocal with a tolerance that separates the unit mode from the slowest decaying one (0.97)
    s02 = verify.profile_settings("cpu", quad_seeds=(0,), quad_windows=(3,), problems=("quadratic",), dmd_tol=0.02)
    assert verify.verify_quadratic(s02)[0]["estimates"]["glocal"]["rel_err"] < 1e-5
    sm = verify.summarize(rows)["quadratic"]["estimators"]
    assert sm["glocal-strict"]["cosine_mean"] > 0.999999 and sm["glocal-strict"]["fallbacks"] == 0
    assert sm["truncated-4tau"]["closer_than_local"] == 4 and sm["glocal-strict"]["sign_agreement"] == 1.0


def test_settings_are_validated():
    with pytest.raises(ValueError, match="multiple of tau"):
        verify.profile_settings("cpu", steps=1510)
    with pytest.raises(ValueError, match="windows must be"):
        verify.profile_settings("cpu", windows=(31,))
    with pytest.raises(ValueError, match="estimators"):
        verify.profile_settings("cpu", estimators=("glocal", "nope", "local"))
    with pytest.raises(ValueError, match="lr0s"):
        verify.profile_settings("cpu", lr0s=(1.5,))
    with pytest.raises(ValueError, match="profile"):
        verify.profile_settings("huge")
    s = verify.profile_settings("cpu")
    assert len(s.checked_windows()) == 10 and max(s.checked_windows()) <= s.outer_windows - 4
    assert verify.profile_settings("paper").train.hpo.steps == 20_000


def test_cli_bad_input_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", "--profile", "quick", "--windows", "99", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "windows" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@needs_data
def test_tiny_classifier_outputs(tmp_path):
    """The command on a tiny problem: files, JSON keys, value ranges, and the estimators' input is the window's."""
    from glocal_cli.commands import verify as stage

    res = stage.run(profile="quick", data_dir=DATA, out=tmp_path, lr0s="0.1")
    for name in ("verify.json", "verify.md", "verify.png"):
        assert (tmp_path / name).stat().st_size > 0
    data = json.loads((tmp_path / "verify.json").read_text())
    names = list(ESTIMATORS) + ["truncated-2tau", "truncated-4tau"]
    assert data["estimators"] == names
    assert set(data["summary"]) == {"quadratic", "mlp/fashion_mnist/lr0=0.1"}
    s = res.settings
    cl = data["summary"]["mlp/fashion_mnist/lr0=0.1"]
    assert cl["windows"] == len(s["checked_windows"]) * len(s["seeds"])
    for name in names:
        v = cl["estimators"][name]
        assert set(v) == STATS and v["n"] == cl["windows"]
        assert 0.0 <= v["sign_agreement"] <= 1.0 and all(0.0 <= x <= 1.0 for x in v["sign_agreement_per_component"])
        assert len(v["sign_agreement_per_component"]) == 3
        assert -1.0 <= v["cosine_mean"] <= 1.0 and v["rel_err_median"] >= 0.0 and 0 <= v["fallbacks"] <= v["n"]
    assert cl["estimators"]["truncated-4tau"]["cost_tangent_steps"] == 4 * s["tau"]
    assert cl["estimators"]["local"]["closer_than_local"] == 0
    assert [n["batch_size"] for n in data["noise"]] == list(s["noise_batch_sizes"])
    for n in data["noise"]:
        assert n["finite"] and n["rel_std_end"] >= 0 and -1.0 <= n["lag1_increment"] <= 1.0
    for r in data["rows"]:
        if r["problem"] != "quadratic":
            assert r["finite"] and np.all(np.isfinite(r["truth"])) and r["steps_left"] == s["steps"] - r["window"] * s["tau"]
    assert "## Conclusions" in (tmp_path / "verify.md").read_text()


@needs_data
def test_estimator_input_is_the_windows_local_hypergradients():
    """The tangent run's first chunk equals the glocal run's window (same state, φ, batches)."""
    from glocal_cli.hpo import HPORunner

    s = verify.profile_settings("quick", data_dir=str(DATA))
    cfg, _, task = verify._classifier_task(s, 0, 0.1)
    runner = HPORunner(task.problem, cfg.resolved_hpo())
    hs = runner.init(task.phi0)
    hs, _ = runner.run_window(hs)
    h = s.train.hpo
    tr = verify.TangentRunner(task.problem, h.sigma).run(hs.inner, hs.phi, h.tau, h.steps, h.tau, (2,))
    _, rec = runner.run_window(hs)
    np.testing.assert_allclose(tr.local, rec.hypergrads, rtol=1e-4, atol=1e-7)
    assert not np.allclose(tr.truth, tr.local[-1], rtol=1e-3)
