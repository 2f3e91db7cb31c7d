"""Shared fixtures and the one skip condition for tests that need the real datasets.

Markers (registered in pyproject.toml):

* ``slow``: minutes; left out by default (``-m slow`` runs them);
* ``e2e``: end to end through the CLI or DVC (``-m 'not e2e'`` leaves them out);
* ``realdata``: needs the original MNIST / Fashion-MNIST files of
  ``../shared/datasets`` (or ``$GLOCAL_SHARED_DATASETS``); skipped where they are
  missing. Such tests get the folder from the ``shared_data`` fixture.
"""

import os
import shutil
import tempfile
from pathlib import Path

# One XLA compilation cache for the whole run (JAX's persistent cache, set before JAX is imported):
# many tests compile the same program (a LeNet window of the same shapes, a runner rebuilt on resume),
# and it is then compiled once. The xdist workers and the CLI subprocesses of end-to-end tests inherit
# the environment, so they share it. A cache folder the caller set is used as it is and kept.
_OWN_XLA_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_XLA_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="glocal-tests-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small programs too

import jax  # noqa: E402  (after the cache settings)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from data_fixtures import real_data_dir, shared_datasets_dir, write_mnist_files  # noqa: E402


def pytest_unconfigure(config):
    if _OWN_XLA_CACHE is not None:  # the process that made it (with xdist: the controller, after its workers)
        shutil.rmtree(_OWN_XLA_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if real_data_dir() is not None:
        return
    skip = pytest.mark.skip(reason=f"real dataset files not found in {shared_datasets_dir()} (set GLOCAL_SHARED_DATASETS)")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding ``mnist/`` and ``fashion_mnist/`` original files (tests marked ``realdata``)."""
    path = real_data_dir()
    if path is None:
        pytest.skip("real dataset files not found (set GLOCAL_SHARED_DATASETS)")
    return path


#: Images kept of each split by ``small_real_data``.
SMALL_TRAIN, SMALL_TEST = 6000, 1000


@pytest.fixture(scope="session")
def small_real_data(shared_data, tmp_path_factory) -> Path:
    """A prepared folder (``mnist.npz``, ``fashion_mnist.npz``) of the real datasets cut to their first
    ``SMALL_TRAIN`` training and ``SMALL_TEST`` test images, for tests that train end to end and check
    what training does: reading and splitting 60 000 images and evaluating 10 000 test images a window
    cost those tests more than the training they check. The readers of the original files are tested on
    the whole files (test_data_real)."""
    from glocal_cli.data import load_dataset, prepare_dataset

    src, out = tmp_path_factory.mktemp("small_real_originals"), tmp_path_factory.mktemp("small_real_data")
    for name in ("mnist", "fashion_mnist"):
        ds = load_dataset(name, shared_data)
        cut = (ds.train_images[:SMALL_TRAIN, ..., 0], ds.train_labels[:SMALL_TRAIN],
               ds.test_images[:SMALL_TEST, ..., 0], ds.test_labels[:SMALL_TEST])
        write_mnist_files(src / name, *cut)  # in the original format, then prepared as `glocal download` does
        prepare_dataset(name, src / name, out, verify=False)  # a cut set has no official checksums
    return out


@pytest.fixture
def run_cli(capsys):
    """``run_cli(args) -> (exit code, stdout, non-blank stderr lines)`` of ``glocal ARGS`` in this process."""
    from glocal_cli import cli

    def run(args):
        try:
            cli.main(args)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return code, out.out, [ln for ln in out.err.splitlines() if ln.strip()]

    return run


@pytest.fixture
def network_ok(monkeypatch):
    """The download sources count as reachable (tfds mock-data tests run offline)."""
    from glocal_cli.data import network

    monkeypatch.setattr(network, "unreachable", lambda urls, timeout=network.DEFAULT_TIMEOUT: None)


@pytest.fixture
def x64():
    """Run a test with 64-bit JAX types (where precision is the point)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def tiny_data(monkeypatch):
    """352 random 28x28 images, split by the seed (train 256 / val 32 / test 64) in place of a dataset: training
    runs of seconds, not minutes (a test module may define its own)."""
    from glocal_cli import train as train_mod
    from glocal_cli.data.splits import Splits

    rng = np.random.default_rng(0)
    x = rng.random((352, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 352).astype(np.int32)

    def load(cfg, datasets=None):
        order = np.concatenate([np.random.default_rng(cfg.seed).permutation(288), np.arange(288, 352)])
        xs, ys = x[order], y[order]
        return Splits(xs[:256], ys[:256], xs[256:288], ys[256:288], xs[288:], ys[288:], np.zeros(1, np.float32),
                      np.ones(1, np.float32), 10, "fashion_mnist")

    monkeypatch.setattr(train_mod, "load_splits", load)
