"""End-to-end training on real Fashion-MNIST (small), resume, failures and CLI errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from glocal_cli.config import TrainConfig, from_mapping
from glocal_cli.errors import UserError
from glocal_cli.estimators import make_estimator
from glocal_cli.train import run_training
from glocal_cli.windows import estimate_counts


@pytest.fixture
def small_cfg(small_real_data):
    """``(tmp_path, method, **overrides) -> TrainConfig``: a 60-step run on real Fashion-MNIST images (6 000 of them)."""
    return lambda tmp_path, method, **kw: _small_cfg(small_real_data, tmp_path, method, **kw)


def _small_cfg(data, tmp_path, method, **kw):
    base = dict(
        dataset="fashion_mnist",
        method=method,
        steps=60,
        tau=20,
        sigma=8,
        m=3,
        batch_size=64,
        lr0=0.1,
        momentum0=0.5,
        val_fraction=0.01,
        eval_every=1,
        checkpoint_every=1,
        data_dir=str(data),
        out=str(tmp_path / method),
    )
    base.update(kw)
    return from_mapping(base)


def read_history(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["none", pytest.param("local", marks=pytest.mark.slow), "glocal"])  # local: ~35 s
def test_short_run_learns(tmp_path, small_cfg, method):
    cfg = small_cfg(tmp_path, method)
    metrics = run_training(cfg)
    assert metrics["status"] == "complete"
    assert metrics["test_accuracy"] > 0.5  # chance is 0.1
    assert metrics["inner_steps"] == 60 and metrics["outer_steps"] == 3
    saved = json.loads((tmp_path / method / "metrics.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    import jax

    prov = saved["provenance"]  # the software stack and the code version this result came from
    assert prov["jax"] == jax.__version__ and prov["backend"] == jax.default_backend()
    assert {"python", "jaxlib", "flax", "optax", "numpy", "device_kind", "commit", "dirty"} <= set(prov)
    rows = read_history(tmp_path / method / "history.csv")
    lrs = [float(r["lr"]) for r in rows]
    assert len(rows) == 3 and all(r["test_accuracy"] for r in rows)
    if method == "none":
        assert len(set(lrs)) == 1 and lrs[0] == pytest.approx(0.1, rel=1e-5)
    else:
        assert metrics["hyperparams"]["lr"] != pytest.approx(0.1, rel=1e-4)
        assert all(np.isfinite(float(r["val_loss"])) for r in rows)
    if method == "glocal":
        # Each window's update is the paper estimator's value on its σ recorded local hypergradients,
        # the saved eigenvalues are that fit's, and the paper rule never falls back on these windows.
        saved = np.load(tmp_path / method / "dmd.npz")
        hg, eigs = saved["hypergrads"], saved["eigenvalues"]
        assert hg.shape == (3, cfg.hpo.sigma, 3) and len(eigs) == 3
        q = hg.shape[2]
        estimator = make_estimator("glocal", m=cfg.hpo.m, tol=cfg.hpo.dmd_tol, rank_rtol=cfg.hpo.dmd_rank_rtol)
        for row, h, eig in zip(rows, hg, eigs):
            ref = estimator(h, cfg.hpo.steps - int(row["step"]))
            assert ref.rank > 0
            np.testing.assert_allclose(eig[: len(ref.eigenvalues)], ref.eigenvalues, rtol=1e-9, atol=1e-12)
            assert np.all(np.isnan(eig[len(ref.eigenvalues) :]))
            used = [float(row[f"h_used_{i}"]) for i in range(q)]
            np.testing.assert_allclose([float(row[f"h_local_{i}"]) for i in range(q)], h[-1], rtol=1e-6)
            np.testing.assert_allclose(used, ref.value, rtol=1e-9, atol=1e-12)
            assert row["estimator"] == "glocal" and row["dmd_fallback"] == "0" and row["dmd_reason"] == ""
            assert int(row["dmd_n_selected"]) >= 1 and len(row["dmd_selected"].split(";")) == int(row["dmd_n_selected"])
            assert float(row["dmd_spectral_radius"]) > 0 and float(row["dmd_imag_norm"]) >= 0
        assert metrics["dmd_fallbacks"] == sum(r["dmd_fallback"] == "1" for r in rows) == 0
        # metrics.json splits the windows by how the estimate was made, as the history rows say
        split = json.loads((tmp_path / method / "metrics.json").read_text())["dmd_windows"]
        assert split == estimate_counts(rows) and sum(split.values()) == 3 and split["fallback"] == 0
    assert not (tmp_path / method / "checkpoint.json").exists() and not list((tmp_path / method).glob("checkpoint.*"))


@pytest.mark.slow  # ~95 s; default: test_reliability's interrupt + exact resume, test_baselines' bitwise group resume
@pytest.mark.realdata
def test_resume_equals_uninterrupted(tmp_path, small_cfg):
    whole = run_training(small_cfg(tmp_path, "local", out=str(tmp_path / "whole")))
    cfg = small_cfg(tmp_path, "local", out=str(tmp_path / "split"))
    first = run_training(cfg, stop_after=1)
    assert first["status"] == "stopped" and (tmp_path / "split" / "checkpoint.json").exists()
    resumed = run_training(cfg)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert resumed["hyperparams"] == whole["hyperparams"]
    a = read_history(tmp_path / "whole" / "history.csv")
    b = read_history(tmp_path / "split" / "history.csv")
    assert [r["lr"] for r in a] == [r["lr"] for r in b]


@pytest.mark.realdata
def test_divergence_is_recorded_not_raised(tmp_path, small_cfg):
    cfg = small_cfg(tmp_path, "local", lr0=0.999, momentum0=0.999, outer_lr=1e-6, steps=200, tau=20, eval_every=0)
    metrics = run_training(cfg)
    assert metrics["status"] == "diverged"
    assert "non-finite" in metrics["failure"]
    assert json.loads((tmp_path / "local" / "metrics.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(method="best"), "method"),
        (dict(lr0=1.5), "lr0"),
        (dict(steps=100, tau=30), "multiple of tau"),
        (dict(model="vgg"), "model"),
        (dict(estimator="koopman"), "estimator 'koopman' is not one of"),
    ],
)
def test_bad_config_is_user_error(kw, match):
    with pytest.raises(UserError, match=match):
        from_mapping(kw)


def test_variants_get_distinct_run_dirs():
    dirs = {from_mapping(dict(method=m, estimator=e)).run_dir() for m, e in
            [("glocal", "glocal"), ("glocal", "glocal-strict"), ("glocal", "mean"), ("glocal", "local"), ("local", "glocal")]}
    assert len(dirs) == 5
    assert from_mapping(dict(method="glocal", estimator="mean")).variant == "glocal-mean"
    assert from_mapping(dict(method="glocal", estimator="glocal-strict")).variant == "glocal-strict"
    assert from_mapping(dict(method="local", estimator="mean")).variant == "local"  # estimators apply to glocal only


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "glocal_cli.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--method", "best"], "Invalid value for '--method': 'best' is not one of 'none', 'local'"),
        (["train", "--estimator", "best"], "Invalid value for '--estimator': 'best' is not one of 'glocal'"),
        (["train", "--dataset", "imagenet"], "Invalid value for '--dataset': 'imagenet' is not one of 'mnist'"),
        (["train", "--steps", "abc"], "Invalid value for '--steps'"),
        (["train", "--data-dir", "/nonexistent"], "does not exist"),
        (["train", "--params", "/nonexistent.yaml"], "no such file"),
        (["download", "nope", "--source", "/tmp"], "unknown dataset"),
    ],
)
def test_cli_bad_input_one_line_exit_2(args, needle):
    res = _cli(*args)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr
