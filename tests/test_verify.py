"""glocal verify: comparisons on hand-made examples, the tangent run against closed forms and against the
loop it replaced, the expected-global reference against independent single-order runs, glocal's if_empty
alternatives on the same windows, the quadratic where the truth is known, and the command's outputs (keys,
ranges, files) on a tiny problem."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glocal_cli import quadratic, verify
from glocal_cli.cli import main
from glocal_cli.estimators import ESTIMATORS
from glocal_cli.hpo import HPOConfig, InnerProblem
from glocal_cli.runner import HPORunner
from glocal_cli.hypergrad import make_window_fn
from signals import linear_signal

needs_data = pytest.mark.realdata
STATS = {"n", "cosine_mean", "cosine_median", "rel_err_median", "rel_err_mean", "sign_agreement",
         "sign_agreement_per_component", "fallbacks", "fallback_reasons", "closer_than_local",
         "cost_tangent_steps", "cost_seconds_mean"}
VARIANTS = ["glocal(if_empty=zero)", "glocal(if_empty=local)"]


_OLD_FNS = {}


def old_tangent_loop(problem, sigma, inner, phi, start, T, tau, lookaheads, runner=None):
    """verify.TangentRunner.run as it was before the tangent-to-T loop was unified with
    HPORunner.hypergrad_to_end (commit 869219b), kept as the reference the new loop must reproduce.
    Its window functions are compiled here as TangentRunner did (once per problem), or taken from
    ``runner`` (the same functions; saves the compilation on the classifier).
    Returns (local [σ, q], {k: [q]}, truth [q], finite, chunks)."""
    key = (problem.step, problem.val_loss, sigma)
    if runner is not None:
        fns = {n: runner.window_fn(n, "forward") for n in (sigma, 1, 0)}
    else:
        if key not in _OLD_FNS:
            _OLD_FNS[key] = {n: make_window_fn(problem.step, problem.val_loss, n, "forward") for n in (sigma, 1, 0)}
        fns = _OLD_FNS[key]
    n = (T - start) // tau
    q = phi.shape[0]
    tangents, local, h, look = None, None, None, {}
    for w in range(n):
        k = w + 1
        n_rec = sigma if w == 0 else (1 if (k in lookaheads or k == n) else 0)
        out = fns[n_rec](inner, phi, problem.batches(start + w * tau, tau), problem.data, tangents)
        jax.block_until_ready(out.hypergrads)
        inner, tangents = out.state, out.tangents
        if n_rec:
            h = np.asarray(out.hypergrads, np.float64)
        if w == 0:
            local = h
        if not bool(out.finite) or not np.all(np.isfinite(h)):
            nan = np.full(q, np.nan)
            return local, {k_: nan for k_ in lookaheads}, nan, False, k
        if k in lookaheads:
            look[k] = h[-1].copy()
    for k_ in lookaheads:
        if k_ > n:
            look[k_] = h[-1].copy()
    return local, look, h[-1].copy(), True, n


def noisy_linear_problem(seed=0):
    """A linear inner problem whose steps depend on the minibatch (batches = per-step noise vectors)."""
    A = jnp.asarray([[0.8, 0.1, 0.0], [0.1, 0.6, 0.2], [0.0, 0.2, 0.9]])
    B = jnp.asarray([[1.0, 0.0], [0.5, -1.0], [0.0, 0.3]])
    target = jnp.asarray([1.0, -1.0, 0.5])

    def step(theta, phi, batch, data):
        return theta - 0.1 * (A @ theta - B @ jnp.tanh(phi) + batch * (1.0 + theta))

    def val_loss(theta, data):
        return 0.5 * jnp.sum((theta - target) ** 2)

    def batches_of(order):
        def batches(start, n):
            return np.stack([np.random.default_rng([order, start + i]).normal(size=3) for i in range(n)])
        return batches

    return InnerProblem(jnp.zeros(3), step, val_loss, batches_of(seed)), batches_of


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
    """Local hypergradients, look-aheads and the truth of a tangent run equal the quadratic's closed forms."""
    qp = quadratic.make_quadratic(p=3, q=2, seed=1, lr=0.1)
    theta0, phi = np.array([0.5, -1.0, 2.0]), np.array([0.3, -0.2])
    prob = quadratic.inner_problem(qp, theta0)
    tau, sigma, T, start = 10, 4, 100, 30
    theta_s = quadratic.theta_closed_form(qp, theta0, phi, start)
    runner = HPORunner(prob, HPOConfig(steps=T, tau=tau, sigma=sigma, m=2))
    tr = verify.tangent_run(runner, jnp.asarray(theta_s), jnp.asarray(phi), start, (2, 4, 9))
    assert tr.finite and tr.chunks == 7
    want_local = [quadratic.hypergrad_closed_form(qp, theta_s, phi, t) for t in range(tau - sigma + 1, tau + 1)]
    np.testing.assert_allclose(tr.local, want_local, rtol=1e-10, atol=1e-13)
    for k in (2, 4):
        np.testing.assert_allclose(tr.lookahead[k], quadratic.hypergrad_closed_form(qp, theta_s, phi, k * tau), rtol=1e-10)
    truth = quadratic.hypergrad_closed_form(qp, theta_s, phi, T - start)
    np.testing.assert_allclose(tr.truth, truth, rtol=1e-10)
    np.testing.assert_allclose(tr.lookahead[9], truth)  # beyond T: the truth itself
    assert set(tr.seconds) == {"window", 2, 4, 9, "truth"} and tr.seconds["window"] <= tr.seconds[4] <= tr.seconds["truth"]


@pytest.mark.parametrize("start", [30, 90])
def test_unified_tangent_loop_equals_the_old_loop(x64, start):
    """tangent_run (HPORunner.hypergrad_to_end with record) returns what the old TangentRunner loop did,
    bit for bit: σ local hypergradients, look-aheads (one beyond T), truth; and the global method's
    hypergrad_to_end (no record) the same h_T. start=90 leaves one window (σ and h_T from the same chunk)."""
    qp = quadratic.make_quadratic(p=3, q=2, seed=2, lr=0.1)
    prob = quadratic.inner_problem(qp, np.array([0.5, -1.0, 2.0]))
    phi = jnp.asarray([0.1, 0.4])
    theta = jnp.asarray(quadratic.theta_closed_form(qp, prob.init_state, phi, start))
    runner = HPORunner(prob, HPOConfig(steps=100, tau=10, sigma=5, m=2))
    local, look, truth, finite, chunks = old_tangent_loop(prob, 5, theta, phi, start, 100, 10, (2, 3))
    tr = verify.tangent_run(runner, theta, phi, start, (2, 3))
    assert tr.finite == finite and tr.chunks == chunks
    np.testing.assert_array_equal(tr.local, local)
    np.testing.assert_array_equal(tr.truth, truth)
    for k in (2, 3):
        np.testing.assert_array_equal(tr.lookahead[k], look[k])
    end = runner.hypergrad_to_end(theta, phi, start)
    np.testing.assert_array_equal(end.hypergrads[0], truth)
    with pytest.raises(ValueError, match="record must map windows"):
        runner.hypergrad_to_end(theta, phi, start, record={99: 1})


def test_expected_global_is_the_mean_of_independent_single_order_truths(x64):
    """The expected-global reference equals the mean of the h_T of K runs with other minibatch orders,
    each computed by the old loop from the same start; the orders give different h_T."""
    prob, batches_of = noisy_linear_problem()
    runner = HPORunner(prob, HPOConfig(steps=60, tau=10, sigma=4, m=2))
    phi, start = jnp.asarray([0.2, -0.5]), 20
    inner = jnp.asarray([0.3, 0.1, -0.2])
    problems = [prob._replace(batches=batches_of(100 + o)) for o in range(4)]
    eg = verify.expected_global(runner, inner, phi, start, problems)
    truths = np.stack([old_tangent_loop(p._replace(batches=batches_of(100 + o)), 4, inner, phi, start, 60, 10, ())[2]
                       for o, p in enumerate(problems)])
    np.testing.assert_allclose(eg["orders"], truths, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(eg["expected_global"], truths.mean(axis=0), rtol=1e-12, atol=1e-15)
    assert eg["finite_orders"] == 4 and eg["order_rel_std"] > 1e-3  # the orders matter
    own = old_tangent_loop(prob, 4, inner, phi, start, 60, 10, ())[2]
    assert not np.allclose(own, eg["expected_global"], rtol=1e-6)


def test_if_empty_variants_are_compared_on_the_same_windows():
    """glocal and its if_empty alternatives are evaluated on every window; they differ only where no eigenvalue
    is within tol of 1 (zero: 0, cosine 0; local: h_τ), and by_selection splits every variant over the same windows."""
    s = verify.profile_settings("cpu", problems=("quadratic",))
    near = linear_signal(20, 3, [0.8, 0.5], seed=1)[0] - linear_signal(20, 3, [], seed=1)[1]  # no mode near 1
    unit, c, _ = linear_signal(20, 3, [0.5], seed=2)  # steady state c at λ = 1
    rows = []
    for i, (h, truth) in enumerate([(near, np.array([0.1, -0.2, 0.3])), (unit, c), (near, np.array([1.0, 1.0, 1.0]))]):
        e = verify.evaluate_window(h, truth, 100, s, expected=truth * 1.1)
        rows.append({"problem": "p", "seed": 0, "window": i, "finite": True, "truth": truth.tolist(),
                     "expected_global": (truth * 1.1).tolist(), "expected_global_finite": True,
                     "truth_vs_expected_global": verify.compare(truth, truth * 1.1), "estimates": e})
    e0 = rows[0]["estimates"]
    assert e0["glocal"]["selection"] == "nearest" and e0["glocal"]["min_dist_to_1"] == pytest.approx(0.2, abs=1e-6)
    assert e0["glocal(if_empty=zero)"]["value"] == [0.0, 0.0, 0.0] and e0["glocal(if_empty=zero)"]["cosine"] == 0.0
    assert e0["glocal(if_empty=local)"]["value"] == pytest.approx(near[-1].tolist())
    assert e0["glocal(if_empty=local)"]["reason"] == "no_unit_eigenvalue"
    assert set(e0["glocal"]["vs_expected_global"]) == {"cosine", "rel_err", "sign_agree", "sign_frac"}
    e1 = rows[1]["estimates"]
    assert e1["glocal"]["selection"] == "tol"
    for v in VARIANTS:
        assert e1[v]["value"] == e1["glocal"]["value"]
    sel = verify.by_selection(rows)
    assert sel["nearest"]["windows"] == 2 and sel["tol"]["windows"] == 1 and "fallback" not in sel
    for group in sel.values():
        for ref in ("truth", "expected_global"):
            assert {v["n"] for v in group[ref].values()} == {group["windows"]}
    assert sel["tol"]["truth"]["glocal(if_empty=zero)"] == {**sel["tol"]["truth"]["glocal"],
                                                           "cost_seconds_mean": sel["tol"]["truth"]["glocal(if_empty=zero)"]["cost_seconds_mean"]}
    assert sel["nearest"]["truth"]["glocal(if_empty=zero)"]["rel_err_median"] == pytest.approx(1.0)
    sm = verify.summarize(rows)["p"]
    assert sm["estimators_vs_expected_global"]["local"]["n"] == 3
    assert sm["expected_global"]["truth_rel_dev_median"] == pytest.approx(0.1 / 1.1)


def test_quadratic_where_the_truth_is_known():
    """Exact DMD recovers h_T; local is > 1 % off; the 4τ look-ahead is closer than 2τ, closer than local."""
    s = verify.profile_settings("cpu", quad_seeds=(0, 1), quad_windows=(1, 3), problems=("quadratic",))
    rows = verify.verify_quadratic(s)
    assert len(rows) == 4
    for r in rows:
        e = r["estimates"]
        assert set(e) == set(ESTIMATORS) | set(VARIANTS) | {"truncated-2tau", "truncated-4tau"}
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


def test_partial_results_are_handed_over_before_the_end():
    """run_verify hands the results so far (complete=False) to on_partial after each study; the end result is complete."""
    s = verify.profile_settings("quick", problems=("quadratic",))
    got = []
    res = verify.run_verify(s, on_partial=got.append)
    assert len(got) == 1 and not got[0].complete and got[0].to_json()["complete"] is False
    assert res.complete and got[0].rows == res.rows and "total" not in got[0].seconds
    assert "Partial results" in verify.markdown(got[0]) and "Partial results" not in verify.markdown(res)


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
    with pytest.raises(ValueError, match="expected_orders must be >= 4"):
        verify.profile_settings("quick", expected_orders=3)
    with pytest.raises(ValueError, match="problems"):
        verify.profile_settings("quick", problems=("classifier", "nope"))
    # the reduced paper-scale run of the GPU job: one seed, N windows, two lr0s, K orders
    p = verify.profile_settings("paper", seeds=(0,), windows_per_seed=3, lr0s=(0.001, 0.1), expected_orders=6,
                                problems=("classifier",))
    assert p.model == "lenet" and p.train.hpo.steps == 20_000 and p.checked_windows() == (1, 198, 396)
    assert p.expected_orders == 6 and p.train.val_fraction == 0.1


def test_cli_bad_input_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", "--profile", "quick", "--windows", "99", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "windows" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@needs_data
def test_tiny_classifier_outputs(tmp_path, small_real_data):
    """The command on a tiny problem: files, JSON keys, value ranges, and the estimators' input is the window's."""
    from glocal_cli.commands import verify as stage

    res = stage.run(profile="quick", data_dir=small_real_data, out=tmp_path, lr0s="0.1")
    for name in ("verify.json", "verify.md", "verify.png"):
        assert (tmp_path / name).stat().st_size > 0
    data = json.loads((tmp_path / "verify.json").read_text())
    names = list(ESTIMATORS) + VARIANTS + ["truncated-2tau", "truncated-4tau"]
    assert data["estimators"] == names and data["complete"] and data["references"] == ["truth", "expected_global"]
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
    # the second reference: K orders per window, every estimator against it, glocal by mode selection
    eg = cl["expected_global"]
    assert eg["orders"] == s["expected_orders"] == 4 and eg["windows"] + eg["non_finite_windows"] == cl["windows"]
    assert set(cl["estimators_vs_expected_global"]) == set(names)
    for v in cl["estimators_vs_expected_global"].values():
        assert set(v) == STATS and v["n"] == eg["windows"]
    assert set(cl["beats_local"]) == {"truth", "expected_global"}
    sel = cl["glocal_by_selection"]
    assert sum(g["windows"] for g in sel.values()) == cl["windows"]
    for g in sel.values():
        assert [v["n"] for v in g["truth"].values()] == [g["windows"]] * len(g["truth"])
    assert "K = 4 minibatch orders" in (tmp_path / "verify.md").read_text()
    assert [n["batch_size"] for n in data["noise"]] == list(s["noise_batch_sizes"])
    for n in data["noise"]:
        assert n["finite"] and n["rel_std_end"] >= 0 and -1.0 <= n["lag1_increment"] <= 1.0
    for r in data["rows"]:
        if r["problem"] != "quadratic":
            assert r["finite"] and np.all(np.isfinite(r["truth"])) and r["steps_left"] == s["steps"] - r["window"] * s["tau"]
            orders = np.array(r["expected_global_orders"])
            assert orders.shape == (4, 3)
            if r["expected_global_finite"]:
                np.testing.assert_allclose(r["expected_global"], orders.mean(axis=0), rtol=1e-12)
    assert "## Conclusions" in (tmp_path / "verify.md").read_text()


@needs_data
def test_estimator_input_is_the_windows_local_hypergradients(small_real_data):
    """The tangent run's first chunk equals the glocal run's window (same state, φ, batches); on the classifier
    the unified loop reproduces the old TangentRunner loop; one order's expected-global run is the old loop on
    the batches of seed ORDER_SEED + o."""
    from glocal_cli.data.splits import epoch_batch_indices

    s = verify.profile_settings("quick", data_dir=str(small_real_data))
    cfg, _, task = verify.classifier_task(s, 0, 0.1)
    runner = HPORunner(task.problem, cfg.resolved_hpo())
    hs = runner.init(task.phi0)
    hs, _ = runner.run_window(hs)
    h = s.train.hpo
    tr = verify.tangent_run(runner, hs.inner, hs.phi, h.tau, (2,))
    local, look, truth, finite, _ = old_tangent_loop(task.problem, h.sigma, hs.inner, hs.phi, h.tau, h.steps, h.tau,
                                                     (2,), runner)
    assert finite and tr.finite
    np.testing.assert_array_equal(tr.local, local)
    np.testing.assert_array_equal(tr.lookahead[2], look[2])
    np.testing.assert_array_equal(tr.truth, truth)
    n_train = int(task.problem.data["train_x"].shape[0])
    order = verify.order_problems(task.problem, n_train, cfg.batch_size, 4)[3]
    eg = verify.expected_global(runner, hs.inner, hs.phi, h.tau, [order])
    mine = task.problem._replace(batches=lambda a, n: epoch_batch_indices(n_train, cfg.batch_size, 10_003, a, n))
    np.testing.assert_array_equal(eg["orders"][0], old_tangent_loop(mine, h.sigma, hs.inner, hs.phi, h.tau, h.steps,
                                                                    h.tau, (), runner)[2])
    _, rec = runner.run_window(hs)
    np.testing.assert_allclose(tr.local, rec.hypergrads, rtol=1e-4, atol=1e-7)
    assert not np.allclose(tr.truth, tr.local[-1], rtol=1e-3)
