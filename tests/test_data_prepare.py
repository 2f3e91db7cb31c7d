"""prepare_dataset / load_dataset on tiny original-format files, the tfds path and errors."""

import dataclasses
import io
import json
import sys

import numpy as np
import pytest
from data_fixtures import write_cifar_extracted, write_cifar_tar, write_mnist_like, write_svhn
from rich.console import Console

from glocal_cli.commands import download as download_command
from glocal_cli.data import is_prepared, load_dataset, prepare_dataset
from glocal_cli.data import prepare as prepare_mod
from glocal_cli.errors import UserError


def _files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("layout", ["direct", "subfolder"])
def test_prepare_kmnist_layouts(tmp_path, layout):
    src = tmp_path / "src"
    folder = src if layout == "direct" else src / "kmnist"
    tr_x, tr_y, te_x, te_y = write_mnist_like(folder, n_train=40, n_test=10)
    out = tmp_path / "out"
    path = prepare_dataset("kmnist", str(src), out, verify=False)
    assert path == out / "kmnist.npz" and _files(out) == ["kmnist.json", "kmnist.npz"]
    manifest = json.loads((out / "kmnist.json").read_text())
    assert manifest["name"] == "kmnist" and manifest["shape"] == [28, 28, 1] and manifest["num_classes"] == 10
    assert manifest["splits"]["train"]["count"] == 40 and manifest["splits"]["test"]["count"] == 10
    assert manifest["splits"]["train"]["label_counts"] == np.bincount(tr_y, minlength=10).tolist()
    entry = manifest["files"]["train-images-idx3-ubyte.gz"]
    assert len(entry["md5"]) == 32 and len(entry["sha256"]) == 64 and entry["verified"] is False
    ds = load_dataset("kmnist", out)
    assert ds.name == "kmnist" and ds.num_classes == 10
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    np.testing.assert_array_equal(ds.train_images, tr_x)
    np.testing.assert_array_equal(ds.test_labels, te_y)
    direct = load_dataset("kmnist", src, verify=False)
    np.testing.assert_array_equal(direct.test_images, te_x)


def test_prepare_twice_is_noop(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "src" / "fashion_mnist")
    out = tmp_path / "out"
    prepare_dataset("fmnist", tmp_path / "src", out, verify=False)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def boom(*a, **k):
        raise AssertionError("second run must not read or write anything")

    monkeypatch.setattr(prepare_mod, "read_originals", boom)
    monkeypatch.setattr(prepare_mod, "save_npz", boom)
    assert prepare_dataset("fashion_mnist", tmp_path / "src", out, verify=False) == out / "fashion_mnist.npz"
    console = Console(file=io.StringIO(), width=200)
    download_command.run(name="fmnist", source=str(tmp_path / "src"), out=str(out), verify=False, console=console)
    assert "nothing to do" in console.file.getvalue()
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_invalid_outputs_are_redone(tmp_path):
    write_mnist_like(tmp_path / "src")
    out = tmp_path / "out"
    prepare_dataset("mnist", tmp_path / "src", out, verify=False)
    raw = (out / "mnist.npz").read_bytes()
    (out / "mnist.npz").write_bytes(raw[: len(raw) // 2])
    assert not is_prepared("mnist", out)
    with pytest.raises(UserError, match="mnist.npz"):
        load_dataset("mnist", out)
    prepare_dataset("mnist", tmp_path / "src", out, verify=False)
    assert is_prepared("mnist", out) and (out / "mnist.npz").read_bytes() == raw


def test_stage_download_summary(tmp_path):
    write_svhn(tmp_path / "src")
    console = Console(file=io.StringIO(), width=200)
    path = download_command.run(name="svhn", source=str(tmp_path / "src"), out=tmp_path / "out", verify=False, console=console)
    text = console.file.getvalue()
    assert path.is_file() and "train" in text and "30" in text and "32x32x3" in text


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_prepare_cifar_tar_and_extracted(tmp_path, kind):
    tr_x, tr_y, _, te_y = write_cifar_tar(tmp_path / "a", kind)
    ds = load_dataset(kind, prepare_dataset(kind, tmp_path / "a", tmp_path / "out_a", verify=False).parent)
    np.testing.assert_array_equal(ds.train_images, tr_x)
    np.testing.assert_array_equal(ds.test_labels, te_y)
    assert ds.num_classes == (10 if kind == "cifar10" else 100)
    write_cifar_extracted(tmp_path / "b" / kind, kind)
    ds_b = load_dataset(kind, tmp_path / "b", verify=False)
    assert ds_b.train_images.shape == tr_x.shape


def test_svhn_labels_decoded(tmp_path):
    tr_x, tr_y, te_x, te_y = write_svhn(tmp_path)
    ds = load_dataset("svhn", tmp_path, verify=False)
    np.testing.assert_array_equal(ds.train_labels, tr_y)
    assert ds.train_labels.max() <= 9 and ds.test_images.shape == (12, 32, 32, 3)


# ---------------------------------------------------------------- errors: one line, nothing written


def _one_line(err):
    assert "\n" not in str(err.value)
    return str(err.value)


def test_checksum_mismatch(tmp_path):
    write_mnist_like(tmp_path / "src")
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        prepare_dataset("mnist", tmp_path / "src", out)
    msg = _one_line(err)
    assert "checksum mismatch" in msg and "train-images-idx3-ubyte.gz" in msg
    assert "expected" in msg and "got" in msg
    assert _files(out) == []
    with pytest.raises(UserError, match="checksum mismatch"):
        load_dataset("mnist", tmp_path / "src")


def test_cifar_checksum_mismatch_names_md5(tmp_path, monkeypatch):
    """With the size check out of the way (size unknown), the md5 comparison reports both values."""
    write_cifar_tar(tmp_path, "cifar10")
    spec = prepare_mod.get_spec("cifar10")
    no_size = dataclasses.replace(spec, files=(dataclasses.replace(spec.files[0], size=None),))
    monkeypatch.setattr(prepare_mod, "get_spec", lambda name: no_size)
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", tmp_path)
    assert "expected md5 c58f30108f718f92721af3b95e74349a, got" in _one_line(err)


def test_cifar_size_mismatch(tmp_path):
    write_cifar_tar(tmp_path, "cifar100")
    with pytest.raises(UserError) as err:
        prepare_dataset("cifar100", tmp_path, tmp_path / "out")
    assert "cifar-100-python.tar.gz" in _one_line(err) and "169001437" in str(err.value)
    assert _files(tmp_path / "out") == []


def test_missing_file(tmp_path):
    folder = tmp_path / "src" / "mnist"
    write_mnist_like(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError) as err:
        prepare_dataset("mnist", tmp_path / "src", tmp_path / "out", verify=False)
    msg = _one_line(err)
    assert "t10k-labels-idx1-ubyte.gz" in msg and str(folder) in msg
    assert _files(tmp_path / "out") == []


def test_no_files_at_all(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", tmp_path)
    assert "cifar-10-python.tar.gz" in _one_line(err) and str(tmp_path) in str(err.value)


def test_corrupt_gz(tmp_path):
    write_mnist_like(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-15])
    with pytest.raises(UserError) as err:
        prepare_dataset("mnist", tmp_path, tmp_path / "out", verify=False)
    assert "train-labels-idx1-ubyte.gz" in _one_line(err)
    assert _files(tmp_path / "out") == []


def test_corrupt_cifar_archive(tmp_path):
    write_cifar_tar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", tmp_path, verify=False)
    assert "cifar-10-python.tar.gz" in _one_line(err)


def test_unknown_dataset_and_bad_source(tmp_path):
    with pytest.raises(UserError) as err:
        prepare_dataset("imagenet", "tfds", tmp_path)
    assert "mnist" in _one_line(err)
    with pytest.raises(UserError) as err:
        prepare_dataset("mnist", str(tmp_path / "nope"), tmp_path / "out")
    assert "tfds" in _one_line(err) and "nope" in str(err.value)
    with pytest.raises(UserError, match="not found"):
        load_dataset("mnist", tmp_path / "nope")
    assert _files(tmp_path) == []


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "src")
    out = tmp_path / "out"

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("mnist", tmp_path / "src", out, verify=False)
    assert _files(out) == []


# ---------------------------------------------------------------- tfds


def test_tfds_missing(tmp_path, monkeypatch, network_ok):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(UserError) as err:
        prepare_dataset("mnist", "tfds", tmp_path)
    assert "pip install 'glocal-cli[tfds]'" in _one_line(err)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("name, shape", [("fmnist", (28, 28, 1)), ("svhn", (32, 32, 3)), ("cifar100", (32, 32, 3))])
def test_tfds_mock(tmp_path, name, shape, network_ok):
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")
    with tfds.testing.mock_data(num_examples=6):
        path = prepare_dataset(name, "tfds", tmp_path / "out", tfds_data_dir=tmp_path / "tfds")
    ds = load_dataset(name, path.parent)
    assert ds.train_images.shape == (6, *shape) and ds.test_images.shape == (6, *shape)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.max() < ds.num_classes
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["source"].startswith("tfds:") and manifest["splits"]["test"]["count"] == 6
