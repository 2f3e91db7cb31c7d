"""Fixed inner optimizers (method none), hypergradient descent and the tuned baseline (issue 19).

Each optimizer against its reference (optax / optax.contrib built here by hand, closed-form
schedules, NumPy for Baydin's hypergradient descent) in float64; schedule-free evaluated at
its averaged iterate; bitwise resume and seed groups; bad choices; the tuned baseline picks by
validation loss, never by test accuracy.
"""

import json
import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import optax
import pytest
from optax import contrib

from glocal_cli import cli, config, inner_optim
from glocal_cli.config import from_mapping
from glocal_cli.inner_optim import baseline_optimizer, eval_params, hypergradient_descent, learnable_sgd, sgd_phi0
from glocal_cli.report import build_report
from glocal_cli.report.baselines import select_by_validation
from glocal_cli.report.collect import Group, Run
from glocal_cli.train import CHECKPOINT, run_seeds, seed_configs

LR0, MOM, WD, T = 0.05, 0.3, 1e-3, 12


def _problem(seed=0):
    """A small tanh regression (float64 under x64): params and a gradient function of (params, step)."""
    rng = np.random.default_rng(seed)
    xs, ys = jnp.asarray(rng.normal(size=(T, 8, 3))), jnp.asarray(rng.normal(size=(T, 8, 2)))
    params = {"w1": jnp.asarray(rng.normal(size=(3, 5)) * 0.5), "b": jnp.zeros(5), "w2": jnp.asarray(rng.normal(size=(5, 2)))}

    def grad(p, t):
        return jax.grad(lambda p_: jnp.mean((jnp.tanh(xs[t] @ p_["w1"] + p_["b"]) @ p_["w2"] - ys[t]) ** 2))(p)

    return params, jax.jit(grad)


def _cosine(k, lr0=LR0, steps=T):
    return lr0 * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))


def _warmup_cosine(k, lr0=LR0, steps=T):
    w = max(1, round(0.05 * steps))
    return lr0 * k / w if k < w else lr0 * 0.5 * (1 + math.cos(math.pi * (k - w) / (steps - w)))


SCHED = {"constant": lambda k: LR0, "cosine": _cosine, "warmup_cosine": _warmup_cosine}


def _run(tx, params, grad, steps=T):
    state = tx.init(params)
    for t in range(steps):
        u, state = tx.update(grad(params, t), state, params)
        params = optax.apply_updates(params, u)
    return params, state


def _sgd_numpy(params, grad, sched, steps=T):
    """SGD with momentum and L2 weight decay at the closed-form learning rate of step k."""
    p = {k: np.asarray(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t in range(steps):
        g = {k: np.asarray(x) for k, x in grad({k: jnp.asarray(x) for k, x in p.items()}, t).items()}
        for k in p:
            v[k] = g[k] + WD * p[k] + MOM * v[k]
            p[k] = p[k] - sched(t) * v[k]
    return p


def _hd_numpy(params, grad, beta, momentum, steps=T):
    """Baydin et al. 2018, SGD-HD (Algorithm 2) with heavy-ball momentum on the direction; returns (params, alpha)."""
    p = {k: np.asarray(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    alpha = LR0
    for t in range(steps):
        g = {k: np.asarray(x) + WD * p[k] for k, x in grad({k: jnp.asarray(x) for k, x in p.items()}, t).items()}
        alpha = alpha + beta * sum(float(np.vdot(g[k], v[k])) for k in p)  # α_t = α_{t-1} + β g_t · v_{t-1}
        for k in p:
            v[k] = g[k] + momentum * v[k]
            p[k] = p[k] - alpha * v[k]
    return p, alpha


REFERENCES = {
    "prodigy": lambda: contrib.prodigy(),
    "dadapt_adamw": lambda: contrib.dadapt_adamw(),
    "schedule_free_sgd": lambda: contrib.schedule_free_sgd(learning_rate=LR0),
    "mechanize_sgd": lambda: contrib.mechanize(optax.sgd(learning_rate=1.0)),
    "dog": lambda: contrib.dog(),
}


def _build(name, schedule="constant", hd_beta=1e-3):
    return baseline_optimizer(name, lr0=LR0, momentum=MOM, weight_decay=WD, steps=T, schedule=schedule, hd_beta=hd_beta)


def _assert_trees_close(a, b, rtol=1e-12, atol=1e-14):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_contrib_optimizers_equal_optax_contrib(x64, name):
    params, grad = _problem()
    ours, _ = _run(_build(name), params, grad)
    ref, _ = _run(REFERENCES[name](), params, grad)
    _assert_trees_close(ours, ref, rtol=0, atol=0)  # the same optax code: bitwise
    assert not np.allclose(ours["w2"], params["w2"])  # it moved


@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine"])
def test_sgd_with_a_schedule_equals_closed_form(x64, schedule):
    params, grad = _problem()
    ours, _ = _run(_build("sgd", schedule), params, grad)
    # optax joins the warmup and the cosine in float32 (the count is int32): 1e-7 relative on the lr
    tol = 1e-6 if schedule == "warmup_cosine" else 1e-12
    _assert_trees_close(ours, _sgd_numpy(params, grad, SCHED[schedule]), rtol=tol, atol=tol * 1e-2)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine"])
def test_adam_with_a_schedule_equals_closed_form(x64, schedule):
    params, grad = _problem()
    ours, _ = _run(_build("adam", schedule), params, grad)
    ref_tx = optax.chain(optax.scale_by_adam(), optax.scale_by_schedule(lambda k: -jnp.asarray(
        [SCHED[schedule](i) for i in range(T + 1)])[k]))
    ref, _ = _run(ref_tx, params, grad)
    tol = 1e-6 if schedule == "warmup_cosine" else 1e-12
    _assert_trees_close(ours, ref, rtol=tol, atol=tol * 1e-2)


def test_sgd_constant_is_the_papers_sgd_bitwise():
    """none with the paper's learnable SGD at fixed lr0 / momentum0 / weight_decay0 == --inner-optimizer sgd."""
    params, grad = _problem()
    ours, _ = _run(_build("sgd"), params, grad)
    paper = learnable_sgd(fixed={"lr": LR0, "momentum": MOM, "weight_decay": WD})
    phi = jnp.asarray(sgd_phi0(LR0, MOM, WD), jnp.float32)
    p, s = params, paper.init(params)
    for t in range(T):
        u, s = paper.update(grad(p, t), s, p, phi=phi)
        p = optax.apply_updates(p, u)
    _assert_trees_close(ours, p, rtol=1e-6, atol=1e-7)  # sigmoid(logit(x)) is x to float32 rounding


@pytest.mark.parametrize("momentum", [0.0, MOM])
def test_hypergradient_descent_equals_baydin_algorithm(x64, momentum):
    params, grad = _problem(1)
    tx = optax.chain(optax.add_decayed_weights(WD), hypergradient_descent(LR0, 0.01, momentum))
    ours, state = _run(tx, params, grad)
    ref, alpha = _hd_numpy(params, grad, 0.01, momentum)
    _assert_trees_close(ours, ref)
    assert float(state[1].learning_rate) == pytest.approx(alpha, rel=1e-12)
    assert abs(alpha - LR0) > 1e-4  # the learning rate did adapt
    if momentum:  # baseline_optimizer's hd is this chain with the run's momentum and weight decay
        _assert_trees_close(_run(_build("hd", hd_beta=0.01), params, grad)[0], ref)


def test_hypergradient_descent_with_beta_zero_is_sgd(x64):
    params, grad = _problem()
    _assert_trees_close(_run(_build("hd", hd_beta=0.0), params, grad)[0], _run(_build("sgd"), params, grad)[0])


def test_schedule_is_refused_for_optimizers_without_an_lr0():
    with pytest.raises(ValueError, match="applies to sgd | adam"):
        _build("prodigy", schedule="cosine")


def test_config_choices_are_the_optimizers_registry():
    assert config.INNER_OPTIMIZERS == inner_optim.INNER_OPTIMIZERS  # config takes them from inner_optim
    assert config.SCHEDULES == inner_optim.SCHEDULES and config.SCHEDULED == inner_optim.SCHEDULED


# ------------------------------------------------------------------ training runs (tiny random data, LeNet)


class _TinyNet(nn.Module):
    """[B, 28, 28, 1] -> [B, 10]: a small MLP in place of LeNet (compiles in a fraction of the time)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_classes)(nn.tanh(nn.Dense(16)(x.reshape((x.shape[0], -1)))))


@pytest.fixture
def tiny_data(monkeypatch):
    """352 random 28x28 images (train 256 / val 32 / test 64) and a small MLP: seconds, not minutes."""
    from glocal_cli import tasks
    from glocal_cli import train as train_mod
    from glocal_cli.data.splits import Splits

    monkeypatch.setattr(tasks, "get_model", lambda name, num_classes, conv_impl=None: _TinyNet(num_classes))

    def splits(cfg, datasets=None):
        rng = np.random.default_rng(cfg.seed)
        x = rng.random((352, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, 352).astype(np.int32)
        return Splits(x[:256], y[:256], x[256:288], y[256:288], x[288:], y[288:], np.zeros(1, np.float32),
                      np.ones(1, np.float32), 10, "fashion_mnist")

    monkeypatch.setattr(train_mod, "load_splits", splits)
    return splits


def _cfg(out, optimizer, **kw):
    base = dict(dataset="fashion_mnist", method="none", inner_optimizer=optimizer, steps=20, tau=10, batch_size=32,
                lr0=0.05, val_fraction=0.01, eval_every=0, checkpoint_every=1, data_dir=".", out=str(out))
    base.update(kw)
    return from_mapping(base)


def test_schedule_free_evaluates_at_the_averaged_iterate(tiny_data):
    """Validation (the problem's val loss) and test (Task.params_of) use schedule_free_eval_params."""
    from glocal_cli.tasks import build_task

    cfg = _cfg(".", "schedule_free_sgd")
    task = build_task(cfg, tiny_data(cfg))
    p = task.problem
    params, opt_state = p.init_state
    tx, rng = contrib.schedule_free_sgd(cfg.lr0), np.random.default_rng(0)
    for _ in range(3):  # the optimizer's own steps on random gradients: z and y part ways
        grads = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    state = (params, opt_state)
    averaged = contrib.schedule_free_eval_params(opt_state, params)
    _assert_trees_close(task.params_of(state), averaged, rtol=0, atol=0)
    flat = lambda t: np.asarray(jax.flatten_util.ravel_pytree(t)[0])  # noqa: E731
    assert not np.allclose(flat(averaged), flat(params))  # x is not the training point y
    val_x, val_y = np.asarray(p.data["val_x"]), np.asarray(p.data["val_y"])
    at_x, at_y = task.evaluate(averaged, val_x, val_y)["loss"], task.evaluate(params, val_x, val_y)["loss"]
    assert float(p.val_loss(state, p.data)) == pytest.approx(at_x, rel=1e-5) and at_x != pytest.approx(at_y, rel=1e-5)
    assert eval_params("prodigy", opt_state, params) is params


def _same_results(a, b):
    for key in ("test_accuracy", "test_loss", "val_loss", "val_accuracy", "inner_steps"):
        assert a[key] == b[key], key


def test_resume_after_a_stop_is_bitwise(tmp_path, tiny_data):
    """schedule_free_sgd (optax.contrib), two seeds in one program: stopped after its first checkpoint
    and resumed, every seed ends exactly as in an uninterrupted group."""
    whole = run_seeds(seed_configs(_cfg(tmp_path / "whole-{seed}", "schedule_free_sgd"), [0, 1]))
    cfgs = seed_configs(_cfg(tmp_path / "split-{seed}", "schedule_free_sgd"), [0, 1])
    stopped = run_seeds(cfgs, stop_after=1)
    assert stopped[0]["status"] == "stopped" and (tmp_path / "split-1" / CHECKPOINT).exists()
    resumed = run_seeds(cfgs)
    for a, b in zip(whole, resumed):
        assert a["status"] == b["status"] == "complete" and a["seeds_in_program"] == [0, 1]
        _same_results(a, b)
    assert whole[0]["test_loss"] != whole[1]["test_loss"]  # the seeds really differ


@pytest.mark.parametrize("name", [n for n in inner_optim.INNER_OPTIMIZERS if n != "learnable_sgd"])
def test_every_optimizer_state_survives_a_checkpoint_bitwise(tmp_path, name):
    """The optimizer state after two steps (counts, bool flags, schedule-free's z, DoG's x0, ...)
    is written and read back leaf for leaf, same dtype and bits."""
    from glocal_cli.checkpoint import load_checkpoint, save_checkpoint
    from glocal_cli.hpo import HPOState
    from glocal_cli.runtime import resolve

    cfg = _cfg(tmp_path, name)
    params, grad = _problem()
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), params)
    tx = baseline_optimizer(name, lr0=LR0, momentum=MOM, weight_decay=WD, steps=T, hd_beta=0.01)
    state, p = tx.init(params), params
    for t in range(2):
        u, state = tx.update(jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), grad(p, t)), state, p)
        p = optax.apply_updates(p, u)
    phi = jnp.zeros(3, jnp.float32)
    runtime = resolve(cfg.resolved_hpo(), cfg)
    save_checkpoint(tmp_path, HPOState((p, state), phi, (), 2), cfg, runtime, [{}, {}], [], [], 1.0)
    loaded = load_checkpoint(tmp_path, cfg, runtime, HPOState((params, tx.init(params)), phi, (), 0))["hpo_state"]
    assert loaded.outer_step == 2
    for a, b in zip(jax.tree_util.tree_leaves((p, state)), jax.tree_util.tree_leaves(loaded.inner)):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree_util.tree_structure(loaded.inner) == jax.tree_util.tree_structure((p, state))


@pytest.mark.slow
@pytest.mark.realdata
def test_kill_9_and_resume_is_bitwise_cli(tmp_path, shared_data):
    """`glocal train --inner-optimizer prodigy` killed with SIGKILL after a checkpoint resumes to the
    uninterrupted result (Fashion-MNIST, 60 steps; a minute or two of CPU compilation)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))

    def args(out):
        return [sys.executable, "-m", "glocal_cli.cli", "train", "--method", "none", "--inner-optimizer", "prodigy",
                "--dataset", "fmnist", "--data-dir", str(shared_data), "--steps", "60", "--tau", "10",
                "--batch-size", "32", "--val-fraction", "0.01", "--eval-every", "0", "--checkpoint-every", "1",
                "--out", str(out)]

    whole = subprocess.run(args(tmp_path / "whole"), capture_output=True, text=True, env=env)
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen(args(tmp_path / "split"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not (tmp_path / "split" / CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "split" / CHECKPOINT).exists()
    again = subprocess.run(args(tmp_path / "split"), capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "resuming from window" in again.stdout, again.stdout + again.stderr
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "split"))
    _same_results(a, b)


@pytest.mark.parametrize("args, needle", [
    (["--inner-optimizer", "adamm"], "'--inner-optimizer': 'adamm' is not one of 'learnable_sgd', 'sgd', 'adam', 'hd', 'prodigy'"),
    (["--inner-optimizer", "dog", "--method", "glocal"], "--inner-optimizer dog is read by --method none on --task optimizer"),
    (["--inner-optimizer", "prodigy", "--method", "glocal"], "--learn lr,momentum,weight_decay: prodigy has no momentum"),
    (["--inner-optimizer", "adam", "--method", "sgld", "--learn", "weight_decay"],
     "--inner-optimizer adam is read by --method none / local / glocal / global"),
    (["--inner-optimizer", "prodigy", "--schedule", "cosine", "--method", "none"],
     "--schedule cosine applies to --inner-optimizer sgd | adam, not prodigy"),
    (["--schedule", "linear", "--method", "none"], "'--schedule': 'linear' is not one of 'constant', 'cosine', 'warmup_cosine'"),
    (["--inner-optimizer", "hd", "--hd-beta", "-1", "--method", "none"], "--hd-beta must be a finite number >= 0"),
    # a hypergradient method tuning an optax optimizer (issue 29): its names, each once, in range
    (["--method", "local", "--inner-optimizer", "adam", "--learn", "momentum"],
     "--learn momentum: adam has no momentum; it can learn lr, b1, b2, eps, eps_root, weight_decay"),
    (["--method", "local", "--learn", "lr,lr"], "--learn lr,lr: choose each of lr, momentum, weight_decay at most once"),
    (["--method", "glocal", "--inner-optimizer", "adam", "--learn", "lr,b1,lr"], "names a hyperparameter twice"),
    (["--method", "local", "--inner-optimizer", "prodigy", "--learn", "weight_decay", "--weight-decay0", "0"],
     "--weight-decay0 must be a finite number > 0 for --inner-optimizer prodigy"),
    (["--method", "local", "--lr0", "1.0"], "--lr0 must be in (0, 1) (it is sigmoid(phi)), got 1.0"),
    (["--method", "local", "--inner-optimizer", "sgd", "--learn", "lr", "--schedule", "cosine"],
     "--schedule cosine applies to --method none"),
])
def test_bad_choice_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as ex:
        cli.main(["train", "--data-dir", str(tmp_path), "--out", "run", *args])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert ex.value.code == 2 and len(err) == 1 and needle in err[0], err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the tuned baseline and the report table


def _fake_run(tmp_path, variant, seed, lr0, val_loss, test_acc, status="complete", window_s=1.0, tau=20, **cfg):
    method, optimizer, schedule = {"none": ("none", "learnable_sgd", "constant"),
                                   "glocal": ("glocal", "learnable_sgd", "constant"),
                                   "sgd-cosine": ("none", "sgd", "cosine"), "prodigy": ("none", "prodigy", "constant"),
                                   "schedule_free_sgd": ("none", "schedule_free_sgd", "constant"),
                                   "local-schedule_free_sgd": ("local", "schedule_free_sgd", "constant"),
                                   "local-prodigy": ("local", "prodigy", "constant")}[variant]
    config_ = dict(dataset="fashion_mnist", method=method, inner_optimizer=optimizer, schedule=schedule, lr0=lr0,
                   seed=seed, steps=600, tau=tau, sigma=10, m=4, batch_size=128, val_fraction=0.02, **cfg)
    metrics = dict(status=status, test_accuracy=test_acc, val_loss=val_loss, wall_s=10.0 * window_s,
                   window_s=window_s, outer_steps=30, config=config_, device="cpu")
    d = tmp_path / "runs" / "baselines" / f"fashion_mnist-{variant}-lr{lr0:g}" / f"seed{seed}"  # as dvc.yaml writes
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    return Run(d, "baselines", metrics, {})


def test_tuned_baseline_picks_by_validation_never_test(tmp_path):
    """lr0 0.3 has the best test accuracy for every seed, lr0 0.1 the best validation loss: 0.1 is kept;
    a diverged run (no validation loss) is never chosen; the tie goes to the smaller lr0."""
    runs = {lr: [] for lr in (0.03, 0.1, 0.3, 0.9)}
    for seed in range(3):
        runs[0.03].append(_fake_run(tmp_path, "sgd-cosine", seed, 0.03, 0.70, 0.70))
        runs[0.1].append(_fake_run(tmp_path, "sgd-cosine", seed, 0.1, 0.40, 0.80))
        runs[0.3].append(_fake_run(tmp_path, "sgd-cosine", seed, 0.3, 0.45 if seed else 0.40, 0.90))
        runs[0.9].append(_fake_run(tmp_path, "sgd-cosine", seed, 0.9, float("nan"), 0.95, status="diverged"))
    groups = [Group("baselines", "fashion_mnist", lr, "sgd-cosine", (), rs) for lr, rs in runs.items()]
    chosen = select_by_validation(groups)
    assert {s: r.lr0 for s, r in chosen.items()} == {0: 0.1, 1: 0.1, 2: 0.1}
    assert [r.value("test_accuracy") for r in chosen.values()] == [0.80] * 3  # a test-set choice would give 0.90


def test_report_writes_the_baselines_table(tmp_path):
    for seed, (g_acc, p_acc) in enumerate([(0.70, 0.80), (0.72, 0.83), (0.71, 0.80)]):
        _fake_run(tmp_path, "none", seed, 0.001, 1.5, 0.33, window_s=2.0)  # one inner step: 2.0 / 20 = 0.1 s
        _fake_run(tmp_path, "glocal", seed, 0.001, 0.8, g_acc, window_s=6.0)  # 6.0 × 30 windows / 0.1 = 1800
        _fake_run(tmp_path, "prodigy", seed, 0.001, 0.5, p_acc, window_s=2.2)
        _fake_run(tmp_path, "sgd-cosine", seed, 0.01, 0.6, 0.75, window_s=2.0)
        _fake_run(tmp_path, "sgd-cosine", seed, 0.1, 0.45, 0.84 + 0.01 * seed, window_s=2.0)
        _fake_run(tmp_path, "sgd-cosine", seed, 0.3, 0.50, 0.90, window_s=2.0)
    timing = {"rounds": 2, "seeds": [0], "device": "cpu", "variants": {
        "none": {"inner_steps_per_window": 20.0}, "glocal": {"inner_steps_per_window": 50.0},
        "prodigy": {"inner_steps_per_window": 21.0}, "sgd-cosine": {"inner_steps_per_window": 20.0}}}
    (tmp_path / "runs" / "baselines" / "cost.json").write_text(json.dumps(timing))
    report = build_report(tmp_path / "runs", tmp_path / "results")
    text = (tmp_path / "results" / "tables" / "baselines.md").read_text()
    lines = {ln.split(" | ")[0].strip("| "): ln for ln in text.splitlines() if ln.startswith("| ")}
    # the chosen runs' accuracies 0.84, 0.85, 0.86: mean ± sample std (ddof 1)
    assert "0.8500 ± 0.0100 (n=3)" in lines["sgd-cosine, tuned: best of lr0 ∈ {0.01, 0.1, 0.3} by validation loss"]
    s = report.summary
    base = "baselines/fashion_mnist"
    assert s[f"{base}/none/cost_inner_steps_from_runs"] == pytest.approx(600)
    assert s[f"{base}/glocal/cost_inner_steps_from_runs"] == pytest.approx(1800)
    assert s[f"{base}/sgd-cosine (tuned)/cost_inner_steps_from_runs"] == pytest.approx(3 * 600)  # the whole grid
    assert s[f"{base}/glocal/cost_inner_steps"] == pytest.approx(50 * 30)  # timed: per window × 30 windows
    assert s[f"{base}/prodigy/cost_inner_steps"] == pytest.approx(21 * 30)
    assert s[f"{base}/sgd-cosine (tuned)/cost_inner_steps"] == pytest.approx(3 * 600)
    assert s[f"{base}/sgd-cosine (tuned)/wall_s"] == pytest.approx(3 * 20.0)
    assert s[f"{base}/prodigy/diff_vs_glocal_mean"] == pytest.approx((0.10 + 0.11 + 0.09) / 3)
    assert s[f"{base}/prodigy/diff_vs_glocal_se"] == pytest.approx(np.std([0.10, 0.11, 0.09], ddof=1) / np.sqrt(3))
    assert "| 0.1 | 0.4500 ± 0.0000 (n=3) | 0.8500 ± 0.0100 (n=3) | 0 | 0, 1, 2 |" in text
    assert "What should I use?" in (tmp_path / "results" / "README.md").read_text()

    # the table's record: every row's seeds (a grid: the chosen runs, and every lr0), its cost; the published
    # pages compute from it what the report's table says
    from glocal_cli.report import records

    rec = records.load(tmp_path / "results" / "records" / "baselines_fashion_mnist.json", "baselines")
    assert list(rec["variants"]) == ["none", "glocal", "prodigy", "sgd-cosine (tuned)"] and rec["reference"] == "glocal"
    tuned = rec["variants"]["sgd-cosine (tuned)"]
    assert tuned["lr0"] == [0.1] * 3 and tuned["test_accuracy"] == [0.84, 0.85, 0.86]
    assert [g["lr0"] for g in tuned["grid"]] == [0.01, 0.1, 0.3] and tuned["grid"][2]["test_accuracy"] == [0.9] * 3
    v = rec["variants"]
    d, se, n = records.paired(records.by_seed(v["prodigy"]), records.by_seed(v["glocal"]))
    assert (d, se, n) == (pytest.approx(s[f"{base}/prodigy/diff_vs_glocal_mean"]),
                          pytest.approx(s[f"{base}/prodigy/diff_vs_glocal_se"]), 3)
    assert records.mean_std(tuned["test_accuracy"])[1] == pytest.approx(0.01)
    assert tuned["cost_timed"] == pytest.approx(1800) and v["glocal"]["cost_from_runs"] == pytest.approx(1800)
    assert "lr0" not in rec["setting"] and rec["setting"]["steps"] == 600

    # and as a chart for `dvc plots show` (dvc.yaml: results/plots/baselines_<dataset>.csv, bar_horizontal_sorted)
    import csv

    with open(tmp_path / "results" / "plots" / "baselines_fashion_mnist.csv") as f:
        chart = {r["variant"]: r for r in csv.DictReader(f)}
    assert list(chart) == ["none", "glocal", "prodigy", "sgd-cosine (tuned)"]
    assert float(chart["prodigy"]["test_accuracy"]) == pytest.approx(s[f"{base}/prodigy/test_accuracy_mean"])
    assert float(chart["glocal"]["minus_glocal"]) == 0 and float(chart["glocal"]["cost"]) == pytest.approx(1500)


def test_fixed_optimizers_get_their_own_variant_and_run_folder():
    cfgs = [from_mapping(dict(method="none", inner_optimizer=o, schedule=s)) for o, s in
            [("learnable_sgd", "constant"), ("sgd", "constant"), ("sgd", "cosine"), ("prodigy", "constant")]]
    assert [c.variant for c in cfgs] == ["none", "sgd", "sgd-cosine", "prodigy"]
    assert len({c.run_dir() for c in cfgs}) == 4


def test_report_puts_each_tuned_optimizer_beside_the_optimizer_alone(tmp_path):
    """Issue 29's table: local over schedule-free SGD at two lr0s (two rows, never a grid) each paired with the
    optimizer alone at its lr0; local over Prodigy with Prodigy (its lr0 plays no part); paired mean ± SE."""
    sf = {0.001: [0.30, 0.32, 0.31], 1.0: [0.86, 0.87, 0.85]}
    tuned = {0.001: [0.60, 0.66, 0.61], 1.0: [0.86, 0.88, 0.86]}
    for seed in range(3):
        _fake_run(tmp_path, "none", seed, 0.001, 1.5, 0.33, window_s=2.0)
        _fake_run(tmp_path, "glocal", seed, 0.001, 0.8, 0.7, window_s=6.0)
        _fake_run(tmp_path, "prodigy", seed, 0.001, 0.5, 0.86, window_s=2.0)
        _fake_run(tmp_path, "local-prodigy", seed, 0.001, 0.5, 0.85 + 0.01 * seed, window_s=4.0,
                  learn=["weight_decay"])  # as metrics.json stores it
        for lr0 in sf:
            _fake_run(tmp_path, "schedule_free_sgd", seed, lr0, 0.5, sf[lr0][seed], window_s=2.0)
            _fake_run(tmp_path, "local-schedule_free_sgd", seed, lr0, 0.5, tuned[lr0][seed], window_s=4.0,
                      learn="lr,weight_decay")
    report = build_report(tmp_path / "runs", tmp_path / "results")
    s, base = report.summary, "optimizer_tuning/fashion_mnist"
    for lr0 in sf:
        diffs = np.subtract(tuned[lr0], sf[lr0])
        assert s[f"{base}/local-schedule_free_sgd@{lr0:g}/diff_mean"] == pytest.approx(diffs.mean())
        assert s[f"{base}/local-schedule_free_sgd@{lr0:g}/diff_se"] == pytest.approx(diffs.std(ddof=1) / np.sqrt(3))
    assert s[f"{base}/local-prodigy@0.001/diff_mean"] == pytest.approx(0.0)
    # cost in inner steps of the optimizer alone (its window 2.0 s / τ 20): alone 600, tuned 4.0 × 30 / 0.1
    assert s[f"{base}/local-schedule_free_sgd@1/cost"] == pytest.approx(1200)
    text = (tmp_path / "results" / "tables" / "optimizer_tuning.md").read_text()
    assert "| local | schedule_free_sgd | 1 | lr, weight_decay | 0.8600 ± 0.0100 (n=3) |" in text
    assert "| local | prodigy | – | weight_decay |" in text
    # the what-should-I-use table keeps the two lr0s of a hypergradient row apart (a grid is method none's only)
    bl = (tmp_path / "results" / "tables" / "baselines.md").read_text()
    assert "local-schedule_free_sgd (lr0 0.001)" in bl and "local-schedule_free_sgd (lr0 1)" in bl
    assert "schedule_free_sgd, tuned: best of lr0 ∈ {0.001, 1}" in bl
    from glocal_cli.report import records

    rec = records.load(tmp_path / "results" / "records" / "optimizer_tuning_fashion_mnist.json", "optimizer_tuning")
    assert {p["tuned"]: p["alone"] for p in rec["pairs"]} == {
        "local-prodigy@0.001": "prodigy@0.001", "local-schedule_free_sgd@0.001": "schedule_free_sgd@0.001",
        "local-schedule_free_sgd@1": "schedule_free_sgd@1"}
    v = rec["variants"]
    assert v["local-schedule_free_sgd@1"]["test_accuracy"] == tuned[1.0] and v["local-prodigy@0.001"]["learn"] == "weight_decay"
    d, se, n = records.paired(records.by_seed(v["local-schedule_free_sgd@1"]), records.by_seed(v["schedule_free_sgd@1"]))
    assert n == 3 and d == pytest.approx(s[f"{base}/local-schedule_free_sgd@1/diff_mean"])
    # the published answer (README) from that record: a table and the verdict per pair, classified by 2 SE
    from glocal_cli.report import published

    page = tmp_path / "page.md"
    (tmp_path / "tuning.json").write_text(json.dumps(rec))
    got = []

    class Cog:
        inFile = str(page)

        def out(self, text):
            got.append(text)

    published.optimizer_tuning(Cog(), "tuning.json")
    text = "".join(got)
    assert text.count("\n| local over `") == 3 and "**It depends on the optimizer.**" in text
    flat = " ".join(text.split())
    # per optimizer and lr0, each method's paired difference, its verdict by 2 SE and its cost against the optimizer's
    assert "`prodigy`: local +0.000 ± 0.006 (no difference, 2.0× the cost)" in flat
    assert "`schedule_free_sgd` from lr0 0.001: local +0.313 ± 0.013 (better, 2.0× the cost); from lr0 1: local" in flat
    assert "| local over `prodigy` (learns weight_decay) | 0.860 ± 0.000 | 0.860 ± 0.010 | +0.000 ± 0.006 | 3 |" in text
    # from the worst lr0 (0.001: alone 0.31) against the optimizer alone at the best (1: 0.86), paired by seed
    worst = np.subtract(tuned[0.001], sf[1.0])
    assert (f"from `schedule_free_sgd`'s worst lr0 (0.001), local reaches 0.623 ({worst.mean():+.3f} ± "
            f"{worst.std(ddof=1) / np.sqrt(3):.3f}, 3 paired seeds), against 0.860 for `schedule_free_sgd` alone at its "
            "best (1)").replace("-", "−") in flat
    assert "did not complete" not in text


def test_tuning_table_leaves_a_diverged_seed_out_of_its_pair_and_says_so(tmp_path):
    """A seed that diverged (here alone and tuned alike) is left out of the paired difference (n 2), named under
    the table, and its early stop does not make the optimizer alone look cheaper than a full run."""
    for seed, (a, t) in enumerate([(0.86, 0.87), (0.85, 0.87), (None, None)]):
        status = "complete" if a is not None else "diverged"
        _fake_run(tmp_path, "schedule_free_sgd", seed, 1.0, 0.5, a, status=status, window_s=2.0)
        _fake_run(tmp_path, "local-schedule_free_sgd", seed, 1.0, 0.5, t, status=status, window_s=4.0,
                  learn="lr,weight_decay")
    for seed in (2,):  # the diverged runs stopped after 5 of 30 windows
        for v in ("schedule_free_sgd", "local-schedule_free_sgd"):
            f = tmp_path / "runs" / "baselines" / f"fashion_mnist-{v}-lr1" / f"seed{seed}" / "metrics.json"
            m = json.loads(f.read_text())
            f.write_text(json.dumps({**m, "outer_steps": 5}))
    build_report(tmp_path / "runs", tmp_path / "results")
    from glocal_cli.report import published, records

    rec = records.load(tmp_path / "results" / "records" / "optimizer_tuning_fashion_mnist.json", "optimizer_tuning")
    assert rec["variants"]["schedule_free_sgd@1"]["cost_from_runs"] == pytest.approx(600)
    assert rec["variants"]["local-schedule_free_sgd@1"]["cost_from_runs"] == pytest.approx(1200)
    got = []

    class Cog:
        inFile = str(tmp_path / "results" / "page.md")

        def out(self, text):
            got.append(text)

    published.optimizer_tuning(Cog(), "records/optimizer_tuning_fashion_mnist.json")
    text = " ".join("".join(got).split())
    assert "| +0.015 ± 0.005 | 2 | 600 | 1 200 |" in text
    assert ("left out of their pair (the n column): local over `schedule_free_sgd` (learns lr, weight_decay; lr0 1): "
            "seed 2 diverged (alone and tuned).") in text


@pytest.mark.parametrize("tuned, head", [
    ([0.90, 0.91, 0.92], "**Yes: at this setting, hypergradient tuning improves on each of these optimizers.**"),
    ([0.80, 0.81, 0.82], "**No: at this setting, hypergradient tuning adds nothing measurable on top of these "
                         "optimizers and takes something away from some.**"),
    ([0.85, 0.86, 0.85], "**No: at this setting, hypergradient tuning adds nothing measurable on top of these "
                         "optimizers.**"),
])
def test_the_tuning_answer_follows_the_paired_differences(tmp_path, tuned, head):
    """The headline is the verdict over every pair by twice its standard error, whichever way it falls."""
    from glocal_cli.report import published

    def variant(method, acc, learn=""):
        return {"method": method, "optimizer": "adam", "lr0": 0.001, "uses_lr0": True, "learn": learn,
                "cost_from_runs": 600.0 if method == "none" else 1800.0, "seeds": [0, 1, 2],
                "status": ["complete"] * 3, "test_accuracy": acc}

    rec = {"record": "optimizer_tuning", "setting": {"steps": 600}, "pairs": [{"tuned": "t", "alone": "a"}],
           "variants": {"t": variant("local", tuned, "lr, b1"), "a": variant("none", [0.85, 0.855, 0.86])}}
    (tmp_path / "r.json").write_text(json.dumps(rec))
    got = []

    class Cog:
        inFile = str(tmp_path / "page.md")

        def out(self, text):
            got.append(text)

    published.optimizer_tuning(Cog(), "r.json")
    flat = " ".join("".join(got).split())
    assert head in flat and "3.0× the cost" in flat
