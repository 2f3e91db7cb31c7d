"""Static description of the supported datasets: names, original files, checksums, shapes.

Everything here is immutable data; nothing is downloaded or read.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from glocal_cli.errors import UserError


@dataclass(frozen=True)
class FileSpec:
    """One original distribution file.

    ``md5`` is the official checksum the usual download scripts check; ``size`` is the
    official size in bytes, or ``None`` where it is not recorded here.
    """

    filename: str
    md5: str
    size: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the paper.

    Attributes:
        name: canonical name (also the ``<name>.npz`` / ``<name>.json`` stem).
        fmt: original format: ``"idx"``, ``"cifar10"``, ``"cifar100"`` or ``"svhn"``.
        files: the original files (all required, except that CIFAR's single tarball may be
            replaced by its extracted folder ``extracted_dir``).
        image_shape: ``(H, W, C)`` of one image.
        num_classes: number of labels (labels are ``0 .. num_classes-1``).
        n_train, n_test: official split sizes.
        tfds_name: the tensorflow-datasets builder name.
        extracted_dir: CIFAR only: the folder name inside the tarball.
        download_urls: where tensorflow-datasets downloads the files from (its builder's
            sources), checked for reachability before a download (:mod:`glocal_cli.data.network`).
    """

    name: str
    fmt: str
    files: tuple[FileSpec, ...]
    image_shape: tuple[int, int, int]
    num_classes: int
    n_train: int
    n_test: int
    tfds_name: str
    extracted_dir: str | None = None
    download_urls: tuple[str, ...] = ()


def _idx_files(md5s: tuple[str, str, str, str], sizes: tuple[int | None, ...]) -> tuple[FileSpec, ...]:
    names = IDX_FILENAMES
    return tuple(FileSpec(n, m, s) for n, m, s in zip(names, md5s, sizes))


#: The four idx files of the MNIST family, in the order train images, train labels,
#: test images, test labels.
IDX_FILENAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

_SPECS = (
    DatasetSpec(
        name="mnist",
        fmt="idx",
        files=_idx_files(
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
            (9912422, 28881, 1648877, 4542),
        ),
        image_shape=(28, 28, 1),
        num_classes=10,
        n_train=60000,
        n_test=10000,
        tfds_name="mnist",
        download_urls=("https://storage.googleapis.com/cvdf-datasets/mnist/",),
    ),
    DatasetSpec(
        name="fashion_mnist",
        fmt="idx",
        files=_idx_files(
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
            (26421880, 29515, 4422102, 5148),
        ),
        image_shape=(28, 28, 1),
        num_classes=10,
        n_train=60000,
        n_test=10000,
        tfds_name="fashion_mnist",
        download_urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    DatasetSpec(
        name="kmnist",
        fmt="idx",
        files=_idx_files(
            (
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ),
            (None, None, None, None),
        ),
        image_shape=(28, 28, 1),
        num_classes=10,
        n_train=60000,
        n_test=10000,
        tfds_name="kmnist",
        download_urls=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    ),
    DatasetSpec(
        name="svhn",
        fmt="svhn",
        files=(
            FileSpec("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
            FileSpec("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
        ),
        image_shape=(32, 32, 3),
        num_classes=10,
        n_train=73257,
        n_test=26032,
        tfds_name="svhn_cropped",
        download_urls=("http://ufldl.stanford.edu/housenumbers/",),
    ),
    DatasetSpec(
        name="cifar10",
        fmt="cifar10",
        files=(FileSpec("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071),),
        image_shape=(32, 32, 3),
        num_classes=10,
        n_train=50000,
        n_test=10000,
        tfds_name="cifar10",
        download_urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
        extracted_dir="cifar-10-batches-py",
    ),
    DatasetSpec(
        name="cifar100",
        fmt="cifar100",
        files=(FileSpec("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437),),
        image_shape=(32, 32, 3),
        num_classes=100,
        n_train=50000,
        n_test=10000,
        tfds_name="cifar100",
        download_urls=("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
        extracted_dir="cifar-100-python",
    ),
)

#: Canonical name -> spec (read-only).
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({s.name: s for s in _SPECS})

#: Accepted alternative spellings -> canonical name (read-only).
ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "fmnist": "fashion_mnist",
        "fashion-mnist": "fashion_mnist",
        "fashionmnist": "fashion_mnist",
        "k-mnist": "kmnist",
        "svhn_cropped": "svhn",
        "cifar-10": "cifar10",
        "cifar-100": "cifar100",
    }
)


def dataset_names() -> tuple[str, ...]:
    """The canonical dataset names, in registry order."""
    return tuple(DATASETS)


def canonical_name(name: str) -> str:
    """Map a dataset name or alias (case-insensitive) to its canonical name.

    Raises:
        UserError: unknown name (the message lists the valid names).
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        valid = ", ".join(dataset_names())
        raise UserError(f"unknown dataset {name!r}; valid names: {valid} (alias: fmnist)")
    return key


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name`` (aliases accepted)."""
    return DATASETS[canonical_name(name)]


def folder_names(spec: DatasetSpec) -> tuple[str, ...]:
    """Sub-folder names under which a data folder may hold ``spec``'s original files."""
    names = [spec.name, spec.tfds_name] + [a for a, c in ALIASES.items() if c == spec.name]
    return tuple(dict.fromkeys(names))
