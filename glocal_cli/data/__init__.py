"""Data layer: the paper's datasets, read from tensorflow-datasets or the original files.

Public API::

    prepare_dataset(name, source, out_dir, *, verify=True, progress=None) -> Path
    is_prepared(name, out_dir) -> bool
    load_dataset(name, data_dir, *, verify=True) -> Dataset
    make_long_tailed(dataset, factor, seed, n_val=1000) -> (train_idx, val_idx)
    prepare_imbalanced(name, factor, seed, data_dir, out_dir) -> counts
    make_splits(dataset, seed, val_fraction=0.1) -> Splits
    epoch_batch_indices(n_train, batch_size, seed, start_step, n_steps) -> int32 [n_steps, B]
"""

from glocal_cli.data.imbalance import (
    imbalanced_path,
    load_imbalanced,
    long_tailed_counts,
    make_long_tailed,
    prepare_imbalanced,
)
from glocal_cli.data.prepare import (
    Dataset,
    is_prepared,
    load_dataset,
    manifest_path,
    npz_path,
    prepare_dataset,
)
from glocal_cli.data.registry import ALIASES, DATASETS, DatasetSpec, canonical_name, dataset_names, get_spec
from glocal_cli.data.splits import (
    Splits,
    epoch_batch_indices,
    epoch_permutation,
    holdout_indices,
    make_splits,
    splits_from_indices,
)

__all__ = [
    "ALIASES",
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "Splits",
    "canonical_name",
    "dataset_names",
    "epoch_batch_indices",
    "epoch_permutation",
    "get_spec",
    "holdout_indices",
    "imbalanced_path",
    "is_prepared",
    "load_dataset",
    "load_imbalanced",
    "long_tailed_counts",
    "make_long_tailed",
    "make_splits",
    "manifest_path",
    "npz_path",
    "prepare_dataset",
    "prepare_imbalanced",
    "splits_from_indices",
]
