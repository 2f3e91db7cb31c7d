"""The data-reweighting task (WRN-16-2 + 385-parameter meta MLP) on a tiny CIFAR-10 in its original format."""

import csv

import numpy as np
import pytest

from glocal_cli import hypergrad
from glocal_cli.config import from_mapping
from glocal_cli.data import prepare_dataset
from glocal_cli.tasks import build_task
from glocal_cli.train import load_splits, run_training

from data_fixtures import write_cifar_tar


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    write_cifar_tar(src, "cifar10", n_per_batch=40, n_test=20)
    out = tmp_path_factory.mktemp("raw")
    prepare_dataset("cifar10", str(src), out, verify=False)
    return out


@pytest.mark.parametrize("model", ["lenet", pytest.param("wrn16_2", marks=pytest.mark.slow)])
def test_reweight_local_runs_reverse_mode(tiny_cifar, tmp_path, model, monkeypatch):
    """The paper uses WRN-16-2 (slow on CPU: marked slow); LeNet runs the same code path quickly.

    The 385 meta parameters take reverse-mode hypergradients (forward mode is made to
    fail here), which are finite and nonzero and move the meta MLP's weights.
    """
    cfg = from_mapping(dict(
        dataset="cifar10",
        task="reweight",
        model=model,
        method="local",
        steps=4,
        tau=2,
        batch_size=8,
        imbalance_factor=5.0,
        reweight_val=20,
        outer_lr=0.01,
        eval_every=0,
        checkpoint_every=0,
        data_dir=str(tiny_cifar),
        out=str(tmp_path / "rw"),
    ))
    splits = load_splits(cfg)
    counts = np.bincount(splits.train_y, minlength=10)
    assert counts[0] > counts[-1]  # long-tailed
    assert np.all(np.bincount(splits.val_y, minlength=10) == 2)  # balanced validation
    task = build_task(cfg, splits)
    assert task.phi0.shape == (385,)
    calls = []
    real_reverse = hypergrad.reverse_window

    def counting_reverse(*args, **kw):
        calls.append(kw.get("n_record", args[5] if len(args) > 5 else None))
        return real_reverse(*args, **kw)

    def no_forward(*args, **kw):
        raise AssertionError("forward mode used for q = 385")

    monkeypatch.setattr(hypergrad, "reverse_window", counting_reverse)
    monkeypatch.setattr(hypergrad, "forward_window", no_forward)
    metrics = run_training(cfg)
    assert metrics["status"] == "complete" and metrics["outer_steps"] == 2
    assert calls and set(calls) == {1}  # the reverse-mode window function (n_record 1) was traced
    assert np.isfinite(metrics["test_loss"])
    with open(tmp_path / "rw" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    norms = [float(r["h_local_norm"]) for r in rows]
    assert len(rows) == 2 and all(np.isfinite(n) and n > 0 for n in norms)
    w0 = task.hyperparams(task.phi0)
    w = metrics["hyperparams"]
    assert set(w) == set(w0) == {"w(L=0.1)", "w(L=1)", "w(L=3)"} and all(0 < v < 1 for v in w.values())
    assert any(abs(w[k] - w0[k]) > 1e-7 for k in w)  # the outer steps moved the meta MLP
