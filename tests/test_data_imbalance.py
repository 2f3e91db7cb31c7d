"""Long-tailed CIFAR following Cui et al. 2019."""

import io

import numpy as np
import pytest
from data_fixtures import write_cifar_tar
from rich.console import Console

from glocal_cli.commands import imbalance as imbalance_command
from glocal_cli.data import Dataset, imbalanced_path, load_imbalanced, long_tailed_counts, make_long_tailed, prepare_imbalanced
from glocal_cli.errors import UserError


def _balanced(per_class: int, num_classes: int, seed: int = 0) -> Dataset:
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    np.random.default_rng(seed).shuffle(labels)
    images = np.zeros((labels.size, 1, 1, 3), np.uint8)
    return Dataset(images, labels, images[:0], labels[:0], num_classes, "cifar10")


def test_profile_cifar10_factor_100():
    counts = long_tailed_counts(4900, 10, 100)
    assert counts[0] == 4900 and counts[-1] == 49
    assert np.all(np.diff(counts) < 0)
    assert counts.tolist() == [4900, 2937, 1760, 1055, 632, 379, 227, 136, 81, 49]


def test_make_long_tailed_cifar10_shape():
    ds = _balanced(5000, 10)
    train_idx, val_idx = make_long_tailed(ds, 50, seed=0)
    assert val_idx.size == 1000 and np.bincount(ds.train_labels[val_idx]).tolist() == [100] * 10
    assert np.intersect1d(train_idx, val_idx).size == 0
    counts = np.bincount(ds.train_labels[train_idx], minlength=10)
    assert counts.tolist() == long_tailed_counts(4900, 10, 50).tolist()
    assert counts[-1] == 4900 // 50


def test_make_long_tailed_cifar100():
    ds = _balanced(500, 100)
    train_idx, val_idx = make_long_tailed(ds, 50, seed=1)
    assert np.bincount(ds.train_labels[val_idx], minlength=100).tolist() == [10] * 100
    counts = np.bincount(ds.train_labels[train_idx], minlength=100)
    assert counts[0] == 490 and counts[-1] == 9  # floor(490 / 50)


def test_seeded():
    ds = _balanced(300, 10)
    a = make_long_tailed(ds, 10, seed=3, n_val=100)
    b = make_long_tailed(ds, 10, seed=3, n_val=100)
    c = make_long_tailed(ds, 10, seed=4, n_val=100)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("factor", [0.5, 1, -3, float("nan")])
def test_factor_must_exceed_one(factor):
    with pytest.raises(UserError) as err:
        make_long_tailed(_balanced(20, 10), factor, seed=0, n_val=10)
    assert str(err.value) == f"factor must be > 1, got {factor}"


def test_factor_message():
    with pytest.raises(UserError, match=r"^factor must be > 1, got 0.5$"):
        long_tailed_counts(100, 10, 0.5)


def test_prepare_imbalanced_and_stage(tmp_path):
    write_cifar_tar(tmp_path / "src", "cifar10", n_per_batch=40)  # 200 training examples
    with pytest.raises(UserError):
        prepare_imbalanced("cifar10", 1.0, 0, tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    from glocal_cli.data import prepare_dataset

    prepare_dataset("cifar10", tmp_path / "src", tmp_path / "raw", verify=False)
    console = Console(file=io.StringIO(), width=120)
    counts = imbalance_command.run(dataset="cifar10", factor=5, seed=2, data_dir=tmp_path / "raw", out=tmp_path / "out", console=console, n_val=50)
    path = imbalanced_path("cifar10", 5, 2, tmp_path / "out")
    assert path.name == "cifar10_lt5_seed2.npz" and path.is_file()
    train_idx, val_idx = load_imbalanced(path)
    assert val_idx.size == 50 and train_idx.size == counts.sum()
    with np.load(path) as z:
        assert z["train_counts"].tolist() == counts.tolist() and z["val_counts"].tolist() == [5] * 10
    assert counts[0] >= counts[-1] and "total" in console.file.getvalue()
