"""Validation hold-out, normalization and the resumable minibatch index stream."""

import numpy as np
import pytest

from glocal_cli.data import Dataset, epoch_batch_indices, holdout_indices, make_splits
from glocal_cli.errors import UserError


def _dataset(n=200, channels=3, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 4, 4, channels), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.int32)
    return Dataset(x, y, x[:30], y[:30], 10, "cifar10" if channels == 3 else "mnist")


def test_holdout_is_seeded_partition():
    tr, va = holdout_indices(1000, seed=0, val_fraction=0.1)
    assert va.size == 100 and tr.size == 900
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(1000))
    tr2, va2 = holdout_indices(1000, seed=0)
    _, va3 = holdout_indices(1000, seed=1)
    assert np.array_equal(va, va2) and not np.array_equal(va, va3)


def test_make_splits_cifar_normalized():
    ds = _dataset()
    s = make_splits(ds, seed=0)
    assert s.train_x.dtype == np.float32 and s.train_x.shape == (180, 4, 4, 3)
    assert s.val_x.shape == (20, 4, 4, 3) and s.test_x.shape == (30, 4, 4, 3)
    assert s.train_y.dtype == np.int32 and s.num_classes == 10
    np.testing.assert_allclose(s.train_x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(s.train_x.std(axis=(0, 1, 2)), 1, atol=1e-4)
    tr, _ = holdout_indices(200, 0)
    np.testing.assert_allclose(s.mean, ds.train_images[tr].mean(axis=(0, 1, 2)) / 255, rtol=1e-6)
    np.testing.assert_allclose(s.std, (ds.train_images[tr] / 255).std(axis=(0, 1, 2)), rtol=1e-5)


def test_make_splits_grayscale_in_unit_interval():
    s = make_splits(_dataset(channels=1), seed=0)
    assert s.train_x.min() >= 0 and s.train_x.max() <= 1 and s.mean.tolist() == [0] and s.std.tolist() == [1]
    assert s.train_x.max() == 1.0


def test_batches_windows_equal_one_long_call():
    full = epoch_batch_indices(103, 10, seed=5, start_step=0, n_steps=47)
    assert full.shape == (47, 10) and full.dtype == np.int32
    parts = [epoch_batch_indices(103, 10, 5, a, b - a) for a, b in [(0, 3), (3, 10), (10, 11), (11, 33), (33, 47)]]
    np.testing.assert_array_equal(np.concatenate(parts), full)


def test_batches_seeded_and_epochwise():
    a = epoch_batch_indices(100, 8, seed=1, start_step=0, n_steps=36)
    np.testing.assert_array_equal(a, epoch_batch_indices(100, 8, 1, 0, 36))
    assert not np.array_equal(a, epoch_batch_indices(100, 8, 2, 0, 36))
    per_epoch = 100 // 8  # 12 batches, remainder of 4 dropped
    for e in range(3):
        epoch = a[e * per_epoch : (e + 1) * per_epoch].ravel()
        assert len(np.unique(epoch)) == epoch.size == 96
        assert epoch.min() >= 0 and epoch.max() < 100
    assert not np.array_equal(a[:per_epoch], a[per_epoch : 2 * per_epoch])


def test_batches_errors():
    with pytest.raises(UserError, match="batch_size"):
        epoch_batch_indices(10, 11, 0, 0, 1)
    with pytest.raises(UserError, match="seed"):
        epoch_batch_indices(10, 2, -1, 0, 1)
    assert epoch_batch_indices(10, 2, 0, 5, 0).shape == (0, 2)
