"""Write tiny dataset files in the exact ORIGINAL formats (idx .gz, CIFAR tarballs, SVHN .mat).

Each writer returns the arrays it wrote as ``(train_x, train_y, test_x, test_y)`` with
uint8 NHWC images and int labels (SVHN labels as digits 0..9, i.e. before the 10-for-0 coding).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


REAL_FILES = ("mnist/train-images-idx3-ubyte.gz", "fashion_mnist/train-images-idx3-ubyte.gz")


def real_data_dir() -> Path | None:
    """The folder of original dataset files when it holds MNIST and Fashion-MNIST, else None (the one skip condition)."""
    path = shared_datasets_dir()
    return path if all((path / f).is_file() for f in REAL_FILES) else None


def shared_datasets_dir() -> Path:
    """``$GLOCAL_SHARED_DATASETS`` or ``<repo>/../shared/datasets``."""
    env = os.environ.get("GLOCAL_SHARED_DATASETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _random(n: int, shape: tuple[int, ...], num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    return x, y


def idx_bytes(array: np.ndarray) -> bytes:
    """Uncompressed idx encoding of a uint8 array (magic 0x0000 08 ndim, big-endian dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as a gzip-compressed idx file (level 1: a test file, written fast)."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(idx_bytes(array))
    return path


def write_mnist_files(folder: Path, train_x, train_y, test_x, test_y) -> None:
    """The four MNIST-family ``.gz`` files of these arrays (uint8 images ``[N, 28, 28]``, labels ``[N]``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(IDX_NAMES, (train_x, train_y, test_x, test_y)):
        write_idx_gz(folder / name, arr)


def write_mnist_like(folder: Path, n_train: int = 50, n_test: int = 20, seed: int = 0):
    """The four MNIST-family ``.gz`` files (28x28 images, 10 classes) in ``folder``."""
    tr_x, tr_y = _random(n_train, (28, 28), 10, seed)
    te_x, te_y = _random(n_test, (28, 28), 10, seed + 1)
    write_mnist_files(folder, tr_x, tr_y, te_x, te_y)
    return tr_x[..., None], tr_y, te_x[..., None], te_y


def _pickle(obj: dict) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _cifar_batch(x: np.ndarray, y: np.ndarray, label_key: bytes, title: bytes) -> bytes:
    data = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # channel-major rows, as distributed
    batch = {
        b"batch_label": title,
        label_key: [int(v) for v in y],
        b"data": np.ascontiguousarray(data, dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(y))],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [int(v) // 5 for v in y]
    return _pickle(batch)


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def cifar_members(kind: str, n_per_batch: int = 6, n_test: int = 8, seed: int = 0):
    """``({member: bytes}, arrays)`` of a tiny CIFAR-10 (``kind="cifar10"``) or CIFAR-100."""
    if kind == "cifar10":
        train_names = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]
        test_name, key, classes = "cifar-10-batches-py/test_batch", b"labels", 10
        meta = ("cifar-10-batches-py/batches.meta", {b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072})
    else:
        train_names = ["cifar-100-python/train"]
        test_name, key, classes = "cifar-100-python/test", b"fine_labels", 100
        meta = ("cifar-100-python/meta", {b"fine_label_names": [b"f%d" % i for i in range(100)]})
        n_per_batch *= 5
    members: dict[str, bytes] = {}
    xs, ys = [], []
    for i, name in enumerate(train_names):
        x, y = _random(n_per_batch, (32, 32, 3), classes, seed + i)
        members[name] = _cifar_batch(x, y, key, b"training batch")
        xs.append(x)
        ys.append(y)
    te_x, te_y = _random(n_test, (32, 32, 3), classes, seed + 100)
    members[test_name] = _cifar_batch(te_x, te_y, key, b"testing batch")
    members[meta[0]] = _pickle(meta[1])
    return members, (np.concatenate(xs), np.concatenate(ys), te_x, te_y)


def write_cifar_tar(folder: Path, kind: str = "cifar10", **kw):
    """``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` in ``folder``; returns arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    members, arrays = cifar_members(kind, **kw)
    name = "cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz"
    with tarfile.open(folder / name, "w:gz") as tar:
        for member, payload in members.items():
            _add(tar, member, payload)
    return arrays


def write_cifar_extracted(folder: Path, kind: str = "cifar10", **kw):
    """The extracted folder (``cifar-10-batches-py/`` or ``cifar-100-python/``) in ``folder``."""
    members, arrays = cifar_members(kind, **kw)
    for member, payload in members.items():
        path = folder / member
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    return arrays


def write_svhn(folder: Path, n_train: int = 30, n_test: int = 12, seed: int = 0):
    """``train_32x32.mat`` and ``test_32x32.mat``: X uint8 [32,32,3,N], y [N,1] with 10 for 0."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n, s in (("train_32x32.mat", n_train, seed), ("test_32x32.mat", n_test, seed + 1)):
        x, y = _random(n, (32, 32, 3), 10, s)
        coded = np.where(y == 0, 10, y).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(folder / name, {"X": x.transpose(1, 2, 3, 0), "y": coded})
        out += [x, y]
    return tuple(out)
