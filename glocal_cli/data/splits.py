"""Train / validation / test arrays for training, and the seeded minibatch index stream."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from glocal_cli.data.prepare import Dataset
from glocal_cli.errors import UserError


class Splits(NamedTuple):
    """Float arrays ready for training.

    Attributes:
        train_x, val_x, test_x: float32 ``[N, H, W, C]``, pixels scaled to [0, 1] and, for
            3-channel datasets (CIFAR, SVHN), normalized per channel with ``mean``/``std``.
        train_y, val_y, test_y: int32 ``[N]``.
        mean, std: float32 ``[C]`` applied to the [0, 1] pixels (0 and 1 for 1-channel data).
        num_classes: number of classes.
        name: dataset name.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    num_classes: int
    name: str


def _check_seed(seed: int) -> int:
    if int(seed) != seed or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    return int(seed)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of uint8 ``images`` ``[N, H, W, C]`` scaled to [0, 1].

    Computed from 256-bin histograms (no float copy of the images).

    Returns:
        float32 ``[C]`` mean and std.
    """
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for ch in range(images.shape[-1]):
        hist = np.bincount(images[..., ch].reshape(-1), minlength=256).astype(np.float64)
        n = hist.sum()
        m = (hist * levels).sum() / n
        var = (hist * (levels - m) ** 2).sum() / n
        means.append(m)
        stds.append(np.sqrt(var))
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def to_float(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` -> float32 ``(x / 255 - mean) / std``, same shape."""
    x = images.astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    x -= mean.astype(np.float32)
    x /= std.astype(np.float32)
    return x


def splits_from_indices(dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray) -> Splits:
    """Build :class:`Splits` from index arrays into ``dataset``'s training split.

    Normalization statistics come from ``dataset.train_images[train_idx]`` only.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    train_u8 = dataset.train_images[train_idx]
    channels = train_u8.shape[-1]
    if channels == 3:
        mean, std = channel_stats(train_u8)
        std = np.maximum(std, np.float32(1e-6))
    else:
        mean, std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
    return Splits(
        train_x=to_float(train_u8, mean, std),
        train_y=dataset.train_labels[train_idx].astype(np.int32),
        val_x=to_float(dataset.train_images[val_idx], mean, std),
        val_y=dataset.train_labels[val_idx].astype(np.int32),
        test_x=to_float(dataset.test_images, mean, std),
        test_y=dataset.test_labels.astype(np.int32),
        mean=mean,
        std=std,
        num_classes=int(dataset.num_classes),
        name=dataset.name,
    )


def holdout_indices(n: int, seed: int, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random hold-out of ``round(val_fraction * n)`` examples.

    Returns:
        ``(train_idx, val_idx)``: sorted, disjoint int64 indices covering ``range(n)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(_check_seed(seed)).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def make_splits(dataset: Dataset, seed: int, val_fraction: float = 0.1) -> Splits:
    """Hold out ``val_fraction`` of the training split (seeded) and convert to float32.

    Test = the official test split. See :class:`Splits` for shapes and normalization.
    """
    train_idx, val_idx = holdout_indices(dataset.train_labels.shape[0], seed, val_fraction)
    return splits_from_indices(dataset, train_idx, val_idx)


def epoch_permutation(n_train: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of ``epoch``: int64 permutation of ``range(n_train)`` drawn from
    ``np.random.default_rng((seed, epoch))`` (read-only; the last few are cached, since
    every window of an epoch asks for it)."""
    return _epoch_permutation(int(n_train), _check_seed(seed), int(epoch))


@functools.lru_cache(maxsize=32)
def _epoch_permutation(n_train: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng((seed, epoch)).permutation(n_train)
    perm.flags.writeable = False
    return perm


def epoch_batch_indices(n_train: int, batch_size: int, seed: int, start_step: int, n_steps: int) -> np.ndarray:
    """Minibatch indices of global steps ``start_step .. start_step + n_steps - 1``.

    Each epoch is a fresh seeded permutation (:func:`epoch_permutation`) cut into
    ``n_train // batch_size`` batches; the remainder of each epoch is dropped. The result
    is a pure function of the arguments, so any window of steps can be recomputed exactly
    (resuming gives the same stream as an uninterrupted run).

    Returns:
        int32 ``[n_steps, batch_size]``.
    """
    if batch_size < 1 or n_train < batch_size:
        raise UserError(f"batch_size must be in 1..{n_train} (the training set size), got {batch_size}")
    if start_step < 0 or n_steps < 0:
        raise UserError(f"start_step and n_steps must be >= 0, got {start_step} and {n_steps}")
    per_epoch = n_train // batch_size
    out = np.empty((n_steps, batch_size), dtype=np.int32)
    step = start_step
    row = 0
    while row < n_steps:
        epoch, pos = divmod(step, per_epoch)
        take = min(per_epoch - pos, n_steps - row)
        perm = epoch_permutation(n_train, seed, epoch)
        out[row : row + take] = perm[pos * batch_size : (pos + take) * batch_size].reshape(take, batch_size)
        row += take
        step += take
    return out
