"""The data-reweighting task (WRN-16-2 + 385-parameter meta MLP) on a tiny CIFAR-10 in its original format."""

import numpy as np
import pytest

from glocal_cli.config import TrainConfig
from glocal_cli.data import prepare_dataset
from glocal_cli.hypergrad import choose_mode
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
def test_reweight_local_runs_reverse_mode(tiny_cifar, tmp_path, model):
    """The paper uses WRN-16-2 (slow on CPU: marked slow); LeNet runs the same code path quickly."""
    cfg = TrainConfig(
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
    )
    splits = load_splits(cfg)
    counts = np.bincount(splits.train_y, minlength=10)
    assert counts[0] > counts[-1]  # long-tailed
    assert np.all(np.bincount(splits.val_y, minlength=10) == 2)  # balanced validation
    assert choose_mode(385) == "reverse"
    metrics = run_training(cfg)
    assert metrics["status"] == "complete"
    assert np.isfinite(metrics["test_loss"])
    w = metrics["hyperparams"]
    assert set(w) == {"w(L=0.1)", "w(L=1)", "w(L=3)"} and all(0 < v < 1 for v in w.values())
