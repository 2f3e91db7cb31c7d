"""The real MNIST and Fashion-MNIST files of ../shared/datasets (or $GLOCAL_SHARED_DATASETS)."""

import json
import time

import numpy as np
import pytest

from glocal_cli.data import load_dataset, prepare_dataset

pytestmark = pytest.mark.realdata

MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(shared_data):
    start = time.perf_counter()
    ds = load_dataset("mnist", shared_data)  # parent folder holding mnist/
    assert time.perf_counter() - start < 20
    return ds


def test_mnist_counts_and_histograms(mnist):
    assert mnist.train_images.shape == (60000, 28, 28, 1) and mnist.test_images.shape == (10000, 28, 28, 1)
    assert mnist.train_images.dtype == np.uint8 and mnist.train_labels.dtype == np.int32
    assert np.bincount(mnist.train_labels).tolist() == MNIST_TRAIN_HIST
    assert np.bincount(mnist.test_labels).tolist() == MNIST_TEST_HIST


def test_mnist_pixel_means(mnist):
    assert round(float(mnist.train_images.mean(dtype=np.float64)), 3) == 33.318
    assert round(float(mnist.test_images.mean(dtype=np.float64)), 3) == 33.791


def test_fashion_mnist_direct_folder(shared_data):
    ds = load_dataset("fmnist", shared_data / "fashion_mnist")  # the folder holding the files itself
    assert ds.name == "fashion_mnist" and ds.num_classes == 10
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert round(float(ds.train_images.mean(dtype=np.float64)), 3) == 72.940
    assert round(float(ds.test_images.mean(dtype=np.float64)), 3) == 73.147


def test_prepare_real_mnist_verified(tmp_path, mnist, capsys, shared_data):
    out = tmp_path / "raw"
    path = prepare_dataset("mnist", shared_data, out)
    manifest = json.loads((out / "mnist.json").read_text())
    assert manifest["files"]["train-images-idx3-ubyte.gz"]["md5"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert manifest["files"]["train-images-idx3-ubyte.gz"]["sha256"] == (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    )
    assert all(f["verified"] for f in manifest["files"].values())
    assert manifest["splits"]["train"]["label_counts"] == MNIST_TRAIN_HIST
    ds = load_dataset("mnist", path.parent)
    np.testing.assert_array_equal(ds.train_images, mnist.train_images)
    np.testing.assert_array_equal(ds.test_labels, mnist.test_labels)
    mtime = path.stat().st_mtime_ns
    prepare_dataset("mnist", shared_data, out)
    assert path.stat().st_mtime_ns == mtime
