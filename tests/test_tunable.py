"""Hypergradients through the optimizers people use (issue 29): Adam, SGD, schedule-free SGD and Prodigy with
named hyperparameters driven by φ (float64: finite differences, fixed values, the names each optimizer has)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from glocal_cli import hypergrad, inner_optim
from glocal_cli.inner_optim import TRANSFORMS, baseline_optimizer, eval_params, learnable_names, transform_of, tunable_optimizer

LEARN = {
    "adam": ("lr", "b1", "weight_decay"),
    "sgd": ("lr", "momentum", "weight_decay"),
    "schedule_free_sgd": ("lr", "b1", "weight_decay"),
    "prodigy": ("lr", "weight_decay"),
}
START = dict(lr0=0.05, momentum=0.5, weight_decay=0.01)
STEPS = 6
STEPS_OF = {"prodigy": 40}  # Prodigy's step starts at d = estim_lr0 = 1e-6 and needs a few dozen steps to grow


def _problem(seed=0, steps=STEPS):
    """Least squares with a tanh feature layer: params {w [4, 3], v [3]}, batches of row indices, a validation set."""
    rng = np.random.default_rng(seed)
    x, xv = rng.normal(size=(64, 4)), rng.normal(size=(32, 4))
    w_true = rng.normal(size=(4, 3))
    y, yv = np.tanh(x @ w_true).sum(1), np.tanh(xv @ w_true).sum(1)
    data = jax.tree_util.tree_map(jnp.asarray, {"x": x, "y": y, "xv": xv, "yv": yv})
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)) * 0.3), "v": jnp.asarray(rng.normal(size=3) * 0.3)}
    batches = jnp.asarray(np.stack([rng.choice(64, 16, replace=False) for _ in range(steps)]))

    def loss(p, x_, y_):
        return jnp.mean((jnp.tanh(x_ @ p["w"]) @ p["v"] - y_) ** 2)

    return params, data, batches, loss


def _step_and_val(name, opt, loss):
    def step(state, phi, idx, d):
        params, opt_state = state
        g = jax.grad(loss)(params, d["x"][idx], d["y"][idx])
        updates, opt_state = opt.update(g, opt_state, params, phi=phi)
        return optax.apply_updates(params, updates), opt_state

    def val_loss(state, d):  # at the parameters the optimizer evaluates (schedule-free: its averaged iterate)
        return loss(eval_params(name, state[1], state[0]), d["xv"], d["yv"])

    return step, val_loss


@pytest.mark.parametrize("name", sorted(LEARN))
def test_hypergradient_matches_central_differences(name, x64):
    """h = d val_loss(θ_K) / dφ through K inner steps of the optimizer, forward mode, against central differences."""
    steps = STEPS_OF.get(name, STEPS)
    params, data, batches, loss = _problem(steps=steps)
    opt, phi0, _ = tunable_optimizer(name, LEARN[name], **START)
    step, val_loss = _step_and_val(name, opt, loss)
    state0 = (params, opt.init(params))
    out = hypergrad.forward_window(step, val_loss, state0, jnp.asarray(phi0), batches, 1, data=data)
    h = np.asarray(out.hypergrads[-1])

    @jax.jit
    def run(phi):
        return val_loss(jax.lax.fori_loop(0, steps, lambda t, s: step(s, phi, batches[t], data), state0), data)

    def final_val(phi):
        return float(run(phi))

    def central(e, eps):
        return (final_val(jnp.asarray(phi0 + eps * e)) - final_val(jnp.asarray(phi0 - eps * e))) / (2 * eps)

    # Richardson-extrapolated central differences: truncation ~eps^4 at eps 2e-4 (float64; the rounding of
    # 40 Prodigy steps already shows at eps 1e-6)
    fd = np.array([(4 * central(e, 1e-4) - central(e, 2e-4)) / 3 for e in np.eye(len(phi0))])
    assert np.all(np.abs(h) > 1e-8), h  # every learned hyperparameter moves the validation loss
    np.testing.assert_allclose(h, fd, rtol=1e-5, atol=1e-10)
    rev = hypergrad.reverse_window(step, val_loss, state0, jnp.asarray(phi0), batches, 1, data)
    np.testing.assert_allclose(np.asarray(rev.hypergrads[-1]), h, rtol=1e-9)


def _plain(name, start, learned):
    """The same optimizer built with fixed values (no φ, no injection)."""
    from optax import contrib

    lr, wd = start.get("lr", START["lr0"]), start.get("weight_decay", START["weight_decay"])
    if name == "adam":
        return optax.adamw(lr, b1=start.get("b1", 0.9), weight_decay=wd if "weight_decay" in learned else 0.0)
    if name == "sgd":
        return optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=start.get("momentum", 0.5)))
    if name == "schedule_free_sgd":
        return contrib.schedule_free_sgd(lr, b1=start.get("b1", 0.9), weight_decay=wd if "weight_decay" in learned else None)
    return contrib.prodigy(start.get("lr", 1.0), weight_decay=wd if "weight_decay" in learned else 0.0)


def _assert_same_steps(name, opt, phi0, fixed, params, data, batches, loss):
    """STEPS steps of ``opt`` with φ held at ``phi0`` give ``fixed``'s parameters (an optax optimizer, no φ)."""
    step, _ = _step_and_val(name, opt, loss)
    a, b = (params, opt.init(params)), (params, fixed.init(params))
    for t in range(STEPS):
        a = step(a, jnp.asarray(phi0), batches[t], data)
        g = jax.grad(loss)(b[0], data["x"][batches[t]], data["y"][batches[t]])
        u, s = fixed.update(g, b[1], b[0])
        b = (optax.apply_updates(b[0], u), s)
    for x, y in zip(jax.tree_util.tree_leaves(a[0]), jax.tree_util.tree_leaves(b[0])):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(LEARN))
def test_phi_held_at_its_start_is_the_fixed_value_run(name, x64):
    params, data, batches, loss = _problem(1)
    opt, phi0, start = tunable_optimizer(name, LEARN[name], **START)
    plain = _plain(name, start, LEARN[name])
    _assert_same_steps(name, opt, phi0, plain, params, data, batches, loss)


@pytest.mark.parametrize("name", ["adam", "sgd", "schedule_free_sgd"])
def test_learning_only_the_rate_is_the_baseline_optimizer(name, x64):
    """Learning the learning rate alone, φ held: the baseline of method none (docs/baselines.md), step for step."""
    params, data, batches, loss = _problem(2)
    opt, phi0, _ = tunable_optimizer(name, ("lr",), **START)
    base = baseline_optimizer(name, lr0=START["lr0"], momentum=START["momentum"], weight_decay=START["weight_decay"],
                              steps=STEPS)
    _assert_same_steps(name, opt, phi0, base, params, data, batches, loss)


def test_names_come_from_the_optimizer_and_bad_ones_are_one_line():
    assert learnable_names("learnable_sgd") == ("lr", "momentum", "weight_decay")
    assert learnable_names("adam") == ("lr", "b1", "b2", "eps", "eps_root", "weight_decay")
    assert "weight_decay" in learnable_names("schedule_free_sgd") and "weight_decay" in learnable_names("prodigy")
    for name, learn, needle in [("adam", ("momentum",), "adam has no momentum; it can learn lr, b1"),
                                ("sgd", ("lr", "lr"), "names a hyperparameter twice"),
                                ("adam", ("eps_root",), "starts it at 0, outside (0, inf) of its exp transform"),
                                ("dog", ("lr",), "not tuned by a hypergradient")]:
        with pytest.raises(ValueError) as e:
            tunable_optimizer(name, learn, **START)
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_transforms_keep_each_value_in_its_range():
    assert transform_of("b1") == transform_of("momentum") == "sigmoid"
    assert transform_of("lr") == transform_of("weight_decay") == transform_of("eps") == "exp"
    for kind, (fwd, inv, (lo, hi)) in TRANSFORMS.items():
        for v in (1e-4, 0.3, 0.9) + ((2.5, 100.0) if hi == math.inf else ()):
            assert lo < float(fwd(jnp.asarray(inv(v)))) < hi
            assert float(fwd(jnp.asarray(inv(v)))) == pytest.approx(v, rel=1e-6)
    # a Prodigy learning-rate multiplier may exceed 1 (exp), an SGD momentum may not (sigmoid)
    opt, phi0, _ = tunable_optimizer("prodigy", ("lr",), **START)
    assert float(opt.hyperparams(jnp.asarray(phi0 + 2.0))["learning_rate"]) > 1.0
    assert inner_optim.TUNABLE.keys() == {"sgd", "adam", "schedule_free_sgd", "prodigy"}


# ---------------------------------------------------------------------------------------------- glocal train


def test_each_optimizer_checks_its_own_range():
    from glocal_cli.config import from_mapping

    sf = from_mapping({"method": "none", "inner_optimizer": "schedule_free_sgd", "lr0": 1.0})  # its best grid value
    assert sf.lr0 == 1.0
    local = from_mapping({"method": "local", "inner_optimizer": "schedule_free_sgd", "lr0": 1.0, "learn": "lr"})
    assert local.variant == "local-schedule_free_sgd"
    assert from_mapping({"method": "glocal", "inner_optimizer": "adam", "learn": "lr,b1"}).variant == "glocal-adam"
    assert from_mapping({"method": "local"}).variant == "local"  # learnable_sgd: the run folders of before


def _history(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.realdata
def test_local_over_adam_learns_and_resumes_bitwise_after_kill_9(tmp_path, small_real_data):
    """`glocal train --method local --inner-optimizer adam --learn lr,b1` on Fashion-MNIST: the learned values move
    window by window, and a run killed with SIGKILL after a checkpoint resumes to the uninterrupted run's bits."""
    import json
    import signal
    import subprocess
    import sys
    import time

    def args(out):
        return [sys.executable, "-m", "glocal_cli.cli", "train", "--method", "local", "--inner-optimizer", "adam",
                "--learn", "lr,b1", "--dataset", "fmnist", "--data-dir", str(small_real_data), "--steps", "30",
                "--tau", "10", "--batch-size", "32", "--val-fraction", "0.01", "--eval-every", "0",
                "--checkpoint-every", "1", "--out", str(out)]

    whole = subprocess.run(args(tmp_path / "whole"), capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-2000:]
    rows = _history(tmp_path / "whole" / "history.csv")
    lr, b1 = [float(r["lr"]) for r in rows], [float(r["b1"]) for r in rows]
    assert lr[0] == pytest.approx(1e-3, rel=1e-6) and b1[0] == pytest.approx(0.9, rel=1e-6)
    assert len(set(lr)) == len(lr) and len(set(b1)) == len(b1)  # every window moved both
    proc = subprocess.Popen(args(tmp_path / "split"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    ckpt = tmp_path / "split" / "checkpoint.json"
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and json.loads(ckpt.read_text())["outer_step"] < 3
    again = subprocess.run(args(tmp_path / "split"), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "resuming from window" in again.stdout, again.stdout + again.stderr[-2000:]
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "split"))
    assert (a["test_accuracy"], a["test_loss"], a["hyperparams"]) == (b["test_accuracy"], b["test_loss"], b["hyperparams"])
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop(rows) == drop(_history(tmp_path / "split" / "history.csv"))
    assert a["runtime"] == b["runtime"] and a["config"]["inner_optimizer"] == "adam"
