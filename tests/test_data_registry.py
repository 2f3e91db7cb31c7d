"""Dataset names, aliases and registry facts."""

import pytest

from glocal_cli.data import ALIASES, DATASETS, canonical_name, dataset_names, get_spec
from glocal_cli.errors import UserError


def test_names_and_aliases():
    assert set(dataset_names()) == {"mnist", "fashion_mnist", "kmnist", "svhn", "cifar10", "cifar100"}
    assert canonical_name("fmnist") == "fashion_mnist"
    assert canonical_name("FMNIST") == "fashion_mnist"
    assert canonical_name("mnist") == "mnist"
    assert all(v in DATASETS for v in ALIASES.values())


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UserError) as err:
        get_spec("imagenet")
    msg = str(err.value)
    assert "imagenet" in msg and "cifar100" in msg and "fashion_mnist" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "name, shape, classes, n_train, n_test",
    [
        ("mnist", (28, 28, 1), 10, 60000, 10000),
        ("fashion_mnist", (28, 28, 1), 10, 60000, 10000),
        ("kmnist", (28, 28, 1), 10, 60000, 10000),
        ("svhn", (32, 32, 3), 10, 73257, 26032),
        ("cifar10", (32, 32, 3), 10, 50000, 10000),
        ("cifar100", (32, 32, 3), 100, 50000, 10000),
    ],
)
def test_specs(name, shape, classes, n_train, n_test):
    spec = get_spec(name)
    assert (spec.image_shape, spec.num_classes, spec.n_train, spec.n_test) == (shape, classes, n_train, n_test)
    assert all(len(f.md5) == 32 for f in spec.files)


def test_official_cifar_checksums():
    (c10,) = get_spec("cifar10").files
    (c100,) = get_spec("cifar100").files
    assert (c10.filename, c10.md5, c10.size) == ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071)
    assert (c100.filename, c100.md5, c100.size) == ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437)
