"""glocal verify: on the quadratic (exact) glocal beats local; on a tiny LeNet run the outputs appear."""

import json
import math

import numpy as np
import pytest

from conftest import shared_datasets
from glocal_cli import verify

DATA = shared_datasets()
needs_data = pytest.mark.skipif(DATA is None, reason="../shared/datasets not found")


def test_compare():
    c = verify.compare(np.array([1.0, -2.0]), np.array([1.0, 2.0]))
    assert c["sign_agree"] == [1, 0] and c["sign_frac"] == 0.5
    assert math.isclose(c["cosine"], -3 / 5) and math.isclose(c["rel_err"], 4 / math.sqrt(5))


def test_quadratic_glocal_beats_local():
    s = verify.VerifySettings(quad_seeds=(0, 1, 2), quad_windows=(1, 3), lenet=False)
    rows = verify.verify_quadratic(s)
    sm = verify.summarize(rows)["quadratic"]["estimators"]
    for r in rows:
        assert r["glocal_unit"]["rel_err"] < 1e-4 < 0.1 < r["local"]["rel_err"]
        assert r["glocal_horizon"]["rel_err"] < 1e-3
    assert sm["glocal_unit"]["fallbacks"] == 0 and sm["glocal_unit"]["cosine_mean"] > 0.999999


def test_settings_errors():
    with pytest.raises(ValueError):
        verify.verify_settings(steps=410)
    with pytest.raises(ValueError):
        verify.verify_settings(steps=200, windows=[5])


@needs_data
def test_tiny_lenet_outputs(tmp_path):
    s = verify.VerifySettings(data_dir=str(DATA), seeds=(0,), windows=(2,), steps=15, tau=5, sigma=5, m=2,
                              batch_size=16, val_fraction=0.01, quad_seeds=(0,), quad_windows=(1,), quad_steps=200)
    res = verify.run_verify(s, tmp_path)
    for name in ("verify.json", "verify.md", "verify.png"):
        assert (tmp_path / name).stat().st_size > 0
    data = json.loads((tmp_path / "verify.json").read_text())
    lenet = [r for r in data["rows"] if r["problem"] == "lenet"]
    assert len(lenet) == 1
    for e in verify.ESTIMATORS:
        assert math.isfinite(lenet[0][e]["rel_err"]) and math.isfinite(lenet[0][e]["cosine"])
    assert np.all(np.isfinite(lenet[0]["true"]))
    assert "NOT closer" in (tmp_path / "verify.md").read_text() or "CLOSER" in (tmp_path / "verify.md").read_text()
    assert res["summary"]["lenet"]["sweep"]
