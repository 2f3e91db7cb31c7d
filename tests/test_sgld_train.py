"""The sgld method in the driver, task-aware defaults, the collapse status, Table 3b options (tiny data)."""

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from glocal_cli import tasks
from glocal_cli.config import from_mapping
from glocal_cli.data import long_tailed_counts, prepare_dataset
from glocal_cli.errors import UserError
from glocal_cli.params import train_config
from glocal_cli.train import load_splits, run_training

from data_fixtures import write_mnist_like


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    write_mnist_like(src, n_train=400, n_test=50)
    out = tmp_path_factory.mktemp("raw")
    prepare_dataset("mnist", str(src), out, verify=False)
    return out


def _cfg(data, tmp_path, name, **kw):
    base = dict(dataset="mnist", method="sgld", steps=6, tau=3, batch_size=16, lr0=0.05, val_fraction=0.1,
                eval_every=0, checkpoint_every=1, data_dir=str(data), out=str(tmp_path / name))
    base.update(kw)
    return from_mapping(base)


def _rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_sgld_weight_decay_runs(tiny_mnist, tmp_path):
    cfg = _cfg(tiny_mnist, tmp_path, "whole", learn=("weight_decay",), sgld_burn_in=1)
    whole = run_training(cfg)
    assert whole["status"] == "complete" and whole["outer_steps"] == 2
    rows = _rows(tmp_path / "whole" / "history.csv")
    h = [float(r["h_used_0"]) for r in rows]
    assert all(math.isfinite(x) for x in h) and any(x != 0 for x in h)
    assert whole["hyperparams"]["weight_decay"] != pytest.approx(1e-3, rel=1e-6)  # log-parameterised, moved
    assert 0.0 <= whole["test_balanced_accuracy"] <= 1.0


@pytest.mark.slow
def test_sgld_resume_equals_uninterrupted(tiny_mnist, tmp_path):
    """The Langevin noise and validation draws are pure functions of (seed, window): resuming repeats them."""
    whole = run_training(_cfg(tiny_mnist, tmp_path, "whole", learn=("weight_decay",), sgld_burn_in=1))
    split_cfg = _cfg(tiny_mnist, tmp_path, "split", learn=("weight_decay",), sgld_burn_in=1)
    assert run_training(split_cfg, stop_after=1)["status"] == "stopped"
    resumed = run_training(split_cfg)
    assert resumed["hyperparams"] == whole["hyperparams"]
    assert resumed["test_accuracy"] == whole["test_accuracy"]


def test_sgld_reweight_and_persistent_z(tiny_mnist, tmp_path):
    cfg = _cfg(tiny_mnist, tmp_path, "rw", task="reweight", imbalance_factor=5.0, reweight_val=50,
               sgld_persist_z=True, sgld_damping=0.1)
    m = run_training(cfg)
    assert m["status"] == "complete"
    assert set(m["hyperparams"]) == {"w(L=0.1)", "w(L=1)", "w(L=3)"}
    assert m["config"]["outer_lr"] is None  # task default, resolved in TrainConfig.resolved_hpo()
    assert from_mapping(dict(task="reweight")).resolved_hpo().outer_lr == 0.01


@pytest.mark.parametrize("learn", [("lr",), ("momentum",), ("lr", "weight_decay")])
def test_sgld_rejects_step_size_and_momentum(learn):
    with pytest.raises(UserError, match="Langevin target"):
        from_mapping(dict(method="sgld", learn=learn))


def test_cli_sgld_learn_lr_one_line_exit_2():
    res = subprocess.run([sys.executable, "-m", "glocal_cli.cli", "train", "--method", "sgld", "--learn", "lr"],
                         capture_output=True, text=True)
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "zero" in lines[0], res.stderr


@pytest.mark.parametrize("kw, match", [
    (dict(sgld_burn_in=3), "burn_in"), (dict(sgld_thin=0), "thin"), (dict(sgld_damping=-1.0), "damping"),
    (dict(sgld_temperature=-1.0), "temperature"), (dict(sgld_step_size=0.0), "step size"),
    (dict(reweight_loss="median"), "reweight-loss"), (dict(imbalance_exponent="c/C"), "imbalance-exponent"),
    (dict(outer_lr=0.0), "outer_lr"),
])
def test_bad_sgld_settings_are_user_errors(kw, match):
    base = dict(method="sgld", learn=("weight_decay",), steps=6, tau=3)
    with pytest.raises(UserError, match=match):
        from_mapping({**base, **kw})


def test_task_aware_outer_lr():
    assert from_mapping(dict(task="optimizer", dataset="fashion_mnist")).resolved_outer_lr() == 0.1
    assert from_mapping(dict(task="reweight")).resolved_outer_lr() == 0.01
    assert from_mapping(dict(task="optimizer", model="wrn28_2", dataset="cifar10")).resolved_outer_lr() == 0.01
    assert from_mapping(dict(task="reweight", outer_lr=0.1)).resolved_outer_lr() == 0.1  # the user's value wins
    assert from_mapping(dict(task="reweight", method="sgld")).resolved_sgld_step_size() == 0.1
    assert from_mapping(dict(lr0=0.05, method="sgld", learn="weight_decay")).resolved_sgld_step_size() == 0.05


def test_params_hpo_sgld_section():
    params = {"hpo": {"tau": 5, "sigma": 4, "m": 2, "sgld": {"temperature": 0.5, "burn_in": 2, "persist_z": True}}}
    cfg = train_config(params, None, {})
    assert (cfg.hpo.tau, cfg.hpo.sgld.temperature, cfg.hpo.sgld.burn_in, cfg.hpo.sgld.persist_z) == (5, 0.5, 2, True)
    with pytest.raises(UserError, match="unknown parameter hpo.sgld.bogus"):
        train_config({"hpo": {"sgld": {"bogus": 1}}}, None, {})
    with pytest.raises(UserError, match="hpo.sgld"):
        train_config({"hpo": {"sgld": 3}}, None, {})


def test_collapse_is_a_failure_status(tiny_mnist, tmp_path, monkeypatch):
    """A meta MLP whose probe weights are all below the threshold ends the run as `collapsed`."""
    monkeypatch.setattr(tasks, "COLLAPSE_THRESHOLD", 1.0)  # sigmoid < 1 everywhere: always "collapsed"
    cfg = _cfg(tiny_mnist, tmp_path, "col", method="local", task="reweight", imbalance_factor=5.0, reweight_val=50)
    m = run_training(cfg)
    assert m["status"] == "collapsed" and "collapsed" in m["failure"]
    assert math.isnan(m["test_accuracy"]) and math.isnan(m["test_balanced_accuracy"])
    assert json.loads((tmp_path / "col" / "metrics.json").read_text())["status"] == "collapsed"


def test_health_probe_detects_zero_weights(tiny_mnist, tmp_path):
    cfg = _cfg(tiny_mnist, tmp_path, "h", method="local", task="reweight", imbalance_factor=5.0, reweight_val=50)
    task = tasks.build_task(cfg, load_splits(cfg))
    assert task.health(task.phi0) == ""
    from jax.flatten_util import ravel_pytree

    from glocal_cli.models import MetaMLP

    meta = MetaMLP().init(jax.random.PRNGKey(0), jnp.zeros((1,)))["params"]
    meta["out"]["bias"] = jnp.full_like(meta["out"]["bias"], -40.0)  # sigmoid(-40) ~ 4e-18 at every loss
    meta["out"]["kernel"] = jnp.zeros_like(meta["out"]["kernel"])
    dead = np.asarray(ravel_pytree(meta)[0])
    assert dead.shape == task.phi0.shape
    assert "collapsed" in task.health(dead)


def test_reweight_sum_is_batch_times_mean(tiny_mnist, tmp_path):
    kw = dict(method="local", task="reweight", imbalance_factor=5.0, reweight_val=50)
    losses = []
    for red in ("mean", "sum"):
        cfg = _cfg(tiny_mnist, tmp_path, red, reweight_loss=red, **kw)
        t = tasks.build_task(cfg, load_splits(cfg))
        idx = jnp.arange(16)
        losses.append(float(t.problem.train_loss(t.problem.init_state[0], jnp.asarray(t.phi0), idx, t.problem.data)))
    assert losses[1] == pytest.approx(16 * losses[0], rel=1e-5)


def test_imbalance_exponent_paper():
    cui = long_tailed_counts(1000, 10, 50.0, "cui")
    paper = long_tailed_counts(1000, 10, 50.0, "paper")
    assert cui[-1] == 20 and cui[0] == paper[0] == 1000
    assert paper[-1] == int(np.floor(1000 * 50.0 ** (-9 / 10)))  # 29


def test_balanced_accuracy_is_mean_recall():
    class Identity:
        def apply(self, variables, x):
            return x

    evaluate = tasks._evaluator(Identity(), 3)
    y = np.array([0, 0, 0, 0, 1, 2])
    pred = np.array([0, 0, 0, 1, 1, 0])  # recalls 3/4, 1, 0
    logits = np.eye(3, dtype=np.float32)[pred] * 5
    out = evaluate(None, logits, y)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["balanced_accuracy"] == pytest.approx((0.75 + 1.0 + 0.0) / 3)
