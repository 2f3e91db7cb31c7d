"""Readers of the original formats, on tiny files written in those exact formats."""

import gzip
import pickle
import tarfile

import numpy as np
import pytest
from data_fixtures import idx_bytes, write_cifar_extracted, write_cifar_tar, write_idx_gz, write_mnist_like, write_svhn

from glocal_cli.data import readers
from glocal_cli.data.registry import IDX_FILENAMES
from glocal_cli.errors import UserError


def test_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    got = readers.read_idx_gz(write_idx_gz(tmp_path / "x.gz", arr))
    np.testing.assert_array_equal(got, arr)
    assert got.dtype == np.uint8 and got.flags.writeable


def test_idx_pair_kmnist_names(tmp_path):
    tr_x, tr_y, _, _ = write_mnist_like(tmp_path, n_train=13, n_test=5)
    x, y = readers.read_idx_pair(tmp_path / IDX_FILENAMES[0], tmp_path / IDX_FILENAMES[1])
    assert x.shape == (13, 28, 28, 1) and y.dtype == np.int32
    np.testing.assert_array_equal(x, tr_x)
    np.testing.assert_array_equal(y, tr_y)


def test_idx_truncated_gz(tmp_path):
    path = write_idx_gz(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz"):
        readers.read_idx_gz(path)


def test_idx_not_gzip(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz"):
        readers.read_idx_gz(path)


def test_idx_short_payload_and_bad_magic(tmp_path):
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10])
    with pytest.raises(UserError, match="short.gz.*found"):
        readers.read_idx_gz(short)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(UserError, match="bad magic"):
        readers.read_idx_gz(bad)


@pytest.mark.parametrize("kind, n_train", [("cifar10", 30), ("cifar100", 30)])
def test_cifar_tarball(tmp_path, kind, n_train):
    tr_x, tr_y, te_x, te_y = write_cifar_tar(tmp_path, kind)
    name = "cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz"
    with tarfile.open(tmp_path / name) as tar:
        names = set(tar.getnames())
    if kind == "cifar10":
        assert {f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)} | {
            "cifar-10-batches-py/test_batch",
            "cifar-10-batches-py/batches.meta",
        } == names
    else:
        assert names == {"cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"}
    got = readers.read_cifar(tmp_path / name, kind)
    assert got.train_images.shape == (n_train, 32, 32, 3) and got.train_images.dtype == np.uint8
    assert got.train_labels.dtype == np.int32
    np.testing.assert_array_equal(got.train_images, tr_x)
    np.testing.assert_array_equal(got.train_labels, tr_y)
    np.testing.assert_array_equal(got.test_images, te_x)
    np.testing.assert_array_equal(got.test_labels, te_y)


def test_cifar_channel_layout(tmp_path):
    """Rows are channel-major (1024 R, 1024 G, 1024 B); pixel (0, 1) of R is data[1]."""
    batch = {b"data": np.arange(3072, dtype=np.int64).astype(np.uint8)[None], b"labels": [3]}
    x, y = readers.cifar_batch_arrays(batch, "labels", "test")
    assert x.shape == (1, 32, 32, 3) and y.tolist() == [3]
    assert x[0, 0, 1, 0] == 1 and x[0, 0, 0, 1] == 1024 % 256 and x[0, 1, 0, 2] == (2048 + 32) % 256


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_extracted_folder(tmp_path, kind):
    tr_x, tr_y, te_x, te_y = write_cifar_extracted(tmp_path, kind)
    folder = tmp_path / ("cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python")
    got = readers.read_cifar(folder, kind)
    np.testing.assert_array_equal(got.train_images, tr_x)
    np.testing.assert_array_equal(got.test_labels, te_y)


def test_cifar_truncated_tarball(tmp_path):
    write_cifar_tar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-python.tar.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="cifar-10-python.tar.gz"):
        readers.read_cifar(path, "cifar10")


def test_cifar_missing_member(tmp_path):
    path = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(write_idx_gz(tmp_path / "x.gz", np.zeros(3, np.uint8)), arcname="cifar-100-python/meta")
    with pytest.raises(UserError, match="cifar-100-python/train"):
        readers.read_cifar(path, "cifar100")


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_cifar_extracted(tmp_path, "cifar100")
    (folder / "train").write_bytes(pickle.dumps({b"data": __import__("os").getcwd}))
    with pytest.raises(UserError, match="disallowed global"):
        readers.read_cifar(folder, "cifar100")


def test_svhn_mat(tmp_path):
    tr_x, tr_y, te_x, te_y = write_svhn(tmp_path)
    assert (tr_y == 0).any()
    x, y = readers.read_svhn_mat(tmp_path / "train_32x32.mat")
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x, tr_x)
    np.testing.assert_array_equal(y, tr_y)  # 10 decoded as 0
    assert y.max() <= 9


def test_svhn_corrupt(tmp_path):
    write_svhn(tmp_path)
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="test_32x32.mat"):
        readers.read_svhn_mat(path)


def test_file_digests(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    seen = []
    d = readers.file_digests(path, lambda done, total: seen.append((done, total)))
    assert d.md5 == "900150983cd24fb0d6963f7d28e17f72" and d.size == 3
    assert d.sha256.startswith("ba7816bf") and seen[-1] == (3, 3)
