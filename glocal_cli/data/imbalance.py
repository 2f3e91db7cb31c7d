"""Long-tailed (imbalanced) training sets following Cui et al. 2019 ("Class-Balanced Loss").

Class ``c`` (0-based, ``C`` classes) keeps ``floor(n_max * factor ** (-c / (C - 1)))``
training examples, so class 0 keeps ``n_max`` and the last class exactly
``n_max / factor``. The paper's text writes the exponent as ``c / C``; we use
``c / (C - 1)`` by default (``exponent="cui"``) so that ``factor`` is exactly the ratio of
the largest to the smallest class, as in Cui et al.'s released code. ``exponent="paper"``
is the paper's literal ``c / C`` (the smallest class then keeps ``n_max / factor^((C-1)/C)``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from glocal_cli.atomic import save_npz
from glocal_cli.data.prepare import Dataset, load_dataset
from glocal_cli.data.registry import get_spec
from glocal_cli.errors import UserError


def check_factor(factor: float) -> float:
    """Return ``factor`` as float; UserError unless it is finite and > 1."""
    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise UserError(f"factor must be a number > 1, got {factor!r}") from None
    if not math.isfinite(f) or f <= 1:
        raise UserError(f"factor must be > 1, got {factor}")
    return f


EXPONENTS = ("cui", "paper")


def long_tailed_counts(n_max: int, num_classes: int, factor: float, exponent: str = "cui") -> np.ndarray:
    """Per-class example counts of the long-tailed profile.

    Returns:
        int64 ``[num_classes]``: ``floor(n_max * factor ** (-c / D))`` with ``D = num_classes - 1``
        (``exponent="cui"``) or ``D = num_classes`` (``"paper"``); a tiny tolerance makes exact
        ratios such as ``4900 / 100`` land on 49, not 48.
    """
    factor = check_factor(factor)
    if num_classes < 2:
        raise UserError(f"a long-tailed profile needs at least 2 classes, got {num_classes}")
    if exponent not in EXPONENTS:
        raise UserError(f"imbalance exponent {exponent!r} is not one of: {', '.join(EXPONENTS)}")
    c = np.arange(num_classes, dtype=np.float64)
    denom = num_classes - 1 if exponent == "cui" else num_classes
    return np.floor(n_max * factor ** (-c / denom) + 1e-9).astype(np.int64)


def make_long_tailed(
    dataset: Dataset, factor: float, seed: int, n_val: int = 1000, exponent: str = "cui"
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced validation set + long-tailed training subset of ``dataset``'s training split.

    1. From each class take ``n_val / C`` random examples as the validation set.
    2. From the remainder, class ``c`` keeps a random ``floor(n_max * factor ** (-c/(C-1)))``
       examples, ``n_max`` being the largest per-class remainder (capped at what the
       class has).

    Args:
        dataset: the dataset (only ``train_labels`` int [N] and ``num_classes`` are used).
        factor: imbalance ratio > 1 (largest / smallest class).
        seed: non-negative seed; the result is a pure function of the arguments.
        n_val: validation size, a multiple of the number of classes.
        exponent: ``"cui"`` (``c/(C-1)``) or ``"paper"`` (``c/C``), see :func:`long_tailed_counts`.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 indices into the training split, disjoint.
    """
    factor = check_factor(factor)
    num_classes = int(dataset.num_classes)
    labels = np.asarray(dataset.train_labels)
    if n_val < 0 or n_val % num_classes:
        raise UserError(f"n_val must be a non-negative multiple of the number of classes ({num_classes}), got {n_val}")
    per_class_val = n_val // num_classes
    rng = np.random.default_rng(seed)
    pools = []
    val_parts = []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if idx.size < per_class_val:
            raise UserError(f"class {c} has {idx.size} training examples, fewer than the {per_class_val} needed for validation")
        val_parts.append(idx[:per_class_val])
        pools.append(idx[per_class_val:])
    n_max = max(p.size for p in pools)
    counts = long_tailed_counts(n_max, num_classes, factor, exponent)
    train_parts = [pool[: min(int(k), pool.size)] for pool, k in zip(pools, counts)]
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def imbalanced_path(name: str, factor: float, seed: int, out_dir: str | Path) -> Path:
    """``out_dir/<name>_lt<factor>_seed<seed>.npz`` (factor written with ``%g``: 50, 2.5)."""
    return Path(out_dir) / f"{get_spec(name).name}_lt{check_factor(factor):g}_seed{int(seed)}.npz"


def prepare_imbalanced(
    name: str, factor: float, seed: int, data_dir: str | Path, out_dir: str | Path, n_val: int = 1000
) -> np.ndarray:
    """Write the long-tailed split of ``name`` and return its per-class training counts.

    The file (see :func:`imbalanced_path`) holds ``train_idx`` int64 ``[n]``, ``val_idx``
    int64 ``[n_val]``, ``train_counts`` / ``val_counts`` int64 ``[C]``, ``factor``,
    ``seed`` (written atomically).

    Returns:
        int64 ``[C]``: training examples kept per class.
    """
    factor = check_factor(factor)
    path = imbalanced_path(name, factor, seed, out_dir)
    dataset = load_dataset(name, data_dir)
    train_idx, val_idx = make_long_tailed(dataset, factor, seed, n_val)
    c = dataset.num_classes
    train_counts = np.bincount(dataset.train_labels[train_idx], minlength=c).astype(np.int64)
    val_counts = np.bincount(dataset.train_labels[val_idx], minlength=c).astype(np.int64)
    save_npz(
        path,
        train_idx=train_idx,
        val_idx=val_idx,
        train_counts=train_counts,
        val_counts=val_counts,
        factor=np.float64(factor),
        seed=np.int64(seed),
    )
    return train_counts


def load_imbalanced(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(train_idx, val_idx)`` back from a file written by :func:`prepare_imbalanced`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"imbalanced split file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["train_idx"], z["val_idx"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise UserError(f"corrupt imbalanced split file {path}: {type(exc).__name__}") from None
