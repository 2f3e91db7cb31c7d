"""Readers of the ORIGINAL distribution formats, plus file checksums.

* idx ``.gz`` (MNIST, Fashion-MNIST, Kuzushiji-MNIST),
* CIFAR python tarballs (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``) or their
  extracted folders (``cifar-10-batches-py/`` / ``cifar-100-python/``),
* SVHN ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5, read with scipy).

Every reader returns uint8 images ``[N, H, W, C]`` and int32 labels ``[N]``. A corrupt or
truncated file raises :class:`~glocal_cli.errors.UserError` naming the file.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from glocal_cli.errors import UserError

#: ``hook(bytes_done, bytes_total)`` called while a file is hashed.
ByteProgress = Callable[[int, int], None]

_CHUNK = 1 << 22


class SplitArrays(NamedTuple):
    """Raw arrays of one dataset: uint8 images ``[N, H, W, C]``, int32 labels ``[N]``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


class Digests(NamedTuple):
    """Checksums of one file: hex md5, hex sha256, size in bytes."""

    md5: str
    sha256: str
    size: int


def file_digests(path: Path, progress: ByteProgress | None = None) -> Digests:
    """md5 and sha256 of ``path`` in one streaming pass (``progress`` gets byte counts)."""
    path = Path(path)
    total = path.stat().st_size
    md5, sha = hashlib.md5(), hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return Digests(md5.hexdigest(), sha.hexdigest(), done)


# --------------------------------------------------------------------------- idx


def read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzip-compressed idx file of unsigned bytes.

    Returns:
        uint8 array with the shape stored in the header (``[N]`` for labels,
        ``[N, 28, 28]`` for images).
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"corrupt or truncated gzip file {path}: {short_error(exc)}") from None
    return parse_idx(data, path)


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse decompressed idx bytes (big-endian header, type code 0x08 = uint8)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"corrupt idx file {path}: bad magic number (expected an idx file of unsigned bytes)")
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if ndim == 0 or len(data) < header_len:
        raise UserError(f"corrupt or truncated idx file {path}: incomplete header")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(data) - header_len
    if got != expected:
        raise UserError(f"corrupt or truncated idx file {path}: header says {expected} bytes of data, found {got}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of an MNIST-family dataset.

    Returns:
        images uint8 ``[N, H, W, 1]`` and labels int32 ``[N]``.
    """
    images = read_idx_gz(images_path)
    labels = read_idx_gz(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise UserError(f"unexpected idx shapes: {images_path} {images.shape}, {labels_path} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise UserError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        )
    return images[..., None], labels.astype(np.int32)


# --------------------------------------------------------------------------- CIFAR

#: Pickle members of the CIFAR archives (paths inside the tarball).
CIFAR10_TRAIN = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("cifar-10-batches-py/test_batch",)
CIFAR100_TRAIN = ("cifar-100-python/train",)
CIFAR100_TEST = ("cifar-100-python/test",)

_NUMPY_GLOBALS = frozenset({"_reconstruct", "ndarray", "dtype", "scalar", "frombuffer"})


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and builtin containers (no code execution)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in _NUMPY_GLOBALS:
            return getattr(_numpy_multiarray(), name)
        if module in ("numpy", "numpy.core.numeric", "numpy._core.numeric") and name in _NUMPY_GLOBALS:
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles written by Python 3
            return codecs.encode
        raise pickle.UnpicklingError(f"disallowed global {module}.{name}")


def _numpy_multiarray() -> Any:
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        return importlib.import_module("numpy.core.multiarray")


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"corrupt CIFAR batch {where}: {short_error(exc)}") from None
    if not isinstance(obj, dict):
        raise UserError(f"corrupt CIFAR batch {where}: expected a dict, got {type(obj).__name__}")
    return obj


def _get(batch: dict, key: str, where: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise UserError(f"corrupt CIFAR batch {where}: no {key!r} entry")


def cifar_batch_arrays(batch: dict, label_key: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert one unpickled CIFAR batch to arrays.

    ``batch[b'data']`` is uint8 ``[N, 3072]`` (channel-major 3x32x32 rows).

    Returns:
        images uint8 ``[N, 32, 32, 3]`` and labels int32 ``[N]``.
    """
    data = np.asarray(_get(batch, "data", where), dtype=np.uint8)
    labels = np.asarray(_get(batch, label_key, where), dtype=np.int32).reshape(-1)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise UserError(f"corrupt CIFAR batch {where}: data {data.shape}, labels {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _cifar_members(fmt: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    if fmt == "cifar10":
        return CIFAR10_TRAIN, CIFAR10_TEST, "labels"
    if fmt == "cifar100":
        return CIFAR100_TRAIN, CIFAR100_TEST, "fine_labels"
    raise ValueError(f"not a CIFAR format: {fmt}")


def read_cifar(source: Path, fmt: str) -> SplitArrays:
    """Read CIFAR-10 (``fmt="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels).

    Args:
        source: the ``.tar.gz`` tarball, or the extracted folder (``cifar-10-batches-py/``
            or ``cifar-100-python/``) holding the pickled batches.
    """
    source = Path(source)
    train_members, test_members, label_key = _cifar_members(fmt)
    if source.is_dir():
        raw = {m: _read_member_file(source, m) for m in train_members + test_members}
    else:
        raw = _read_tar_members(source, train_members + test_members)
    splits = []
    for members in (train_members, test_members):
        parts = [cifar_batch_arrays(_unpickle(raw[m], f"{source}:{m}"), label_key, f"{source}:{m}") for m in members]
        splits.append((np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))
    return SplitArrays(splits[0][0], splits[0][1], splits[1][0], splits[1][1])


def _read_member_file(folder: Path, member: str) -> bytes:
    path = folder / member.split("/", 1)[1]
    if not path.is_file():
        raise UserError(f"missing file {path.name} in {folder}")
    return path.read_bytes()


def _read_tar_members(path: Path, members: tuple[str, ...]) -> dict[str, bytes]:
    """Read the named regular-file members of a gzip tarball (nothing is extracted)."""
    wanted = set(members)
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for info in tar:
                if info.name in wanted and info.isfile():
                    f = tar.extractfile(info)
                    assert f is not None
                    out[info.name] = f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise UserError(f"corrupt or truncated archive {path}: {short_error(exc)}") from None
    missing = [m for m in members if m not in out]
    if missing:
        raise UserError(f"corrupt archive {path}: member {missing[0]} not found")
    return out


# --------------------------------------------------------------------------- SVHN


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN cropped-digits ``.mat`` file.

    The file holds ``X`` uint8 ``[32, 32, 3, N]`` and ``y`` ``[N, 1]`` where 10 means digit 0.

    Returns:
        images uint8 ``[N, 32, 32, 3]`` and labels int32 ``[N]`` in ``0..9``.
    """
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except (ValueError, OSError, TypeError, EOFError, zlib.error, NotImplementedError) as exc:
        raise UserError(f"corrupt or truncated .mat file {path}: {short_error(exc)}") from None
    if "X" not in mat or "y" not in mat:
        raise UserError(f"corrupt .mat file {path}: variables X and y expected")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
        raise UserError(f"corrupt .mat file {path}: X {x.shape}, y {y.shape}")
    labels = y.astype(np.int32)
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2), dtype=np.uint8), labels


def short_error(exc: BaseException) -> str:
    """First line of an exception message, prefixed by its type name."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
