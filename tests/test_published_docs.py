"""The templates of docs/sgld.md and docs/method.md (glocal_cli/report/published_docs.py) on small records built by
hand: the statistics they print are the convention's, and the words follow the numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from glocal_cli.report import published, published_docs
from glocal_cli.report.records import CONVENTION


class FakeCog:
    def __init__(self, page: Path):
        self.inFile = str(page)
        self.text = ""

    def out(self, s: str) -> None:
        self.text += s


def _write(tmp_path: Path, name: str, rec: dict) -> FakeCog:
    (tmp_path / "records").mkdir(exist_ok=True)
    (tmp_path / "records" / name).write_text(json.dumps(rec))
    return FakeCog(tmp_path / "page.md")


def _variant(acc, seeds=(0, 1, 2), windows=None, split=None, fallbacks=None, val_loss=None):
    v = {"seeds": list(seeds), "status": ["complete"] * len(seeds), "test_accuracy": list(acc),
         "val_loss": list(val_loss or [1.0] * len(seeds)), "commit": ["abcdef0123"] * len(seeds),
         "dirty": [False] * len(seeds), "dmd_fallbacks": list(fallbacks or [0] * len(seeds))}
    if windows is not None:
        v["windows"] = windows
    if split is not None:
        v["dmd_windows"] = split
    return v


def _lt_record() -> dict:
    w = lambda hs, w3: {"h_used_norm": hs, "w(L=0.1)": [0.5, 0.6], "w(L=1)": [0.9, 0.8], "w(L=3)": [1.0, w3]}  # noqa
    steady = [w([1.0, 1.0, 1.0], 1.0)] * 3
    jumpy = [w([1.0, 4.0, 1.0], 0.5)] * 3
    return {"record": "lt_rerun", "date": "2026-12-06", "pm": dict(CONVENTION),
            "setting": {"imbalance_factor": 50, "profile": "lt_quick", "steps": 200, "tau": 20, "sigma": 4, "m": 2,
                        "batch_size": 128, "outer_lr": 0.01},
            "variants": {
                "none": _variant([0.70, 0.68, 0.66]),
                "local": _variant([0.60, 0.62, 0.64]),
                "glocal": _variant([0.61, 0.64, 0.64], split={"tol": [8, 9, 10], "nearest": [2, 1, 0]}),
                "glocal-strict": _variant([0.60, 0.62, 0.64], split={"fallback": [10, 10, 10]}, fallbacks=[10] * 3),
                "sgld": _variant([0.70, 0.71, 0.72], windows=steady, val_loss=[0.9, 1.0, 1.1]),
                "sgld-persist-z": _variant([0.60, 0.61, 0.62], windows=jumpy)}}


def test_lt_rerun_table_and_sentence(tmp_path):
    cog = _write(tmp_path, "lt.json", _lt_record())
    published_docs.lt_rerun_table(cog, "records/lt.json")
    t = cog.text
    assert "| glocal (the paper's estimator) | 0.610, 0.640, 0.640 | 0.630 ± 0.017 (n=3) | +0.010 ± 0.006 (n=3) |" in t
    assert "27 within tol of 1, 3 nearest eigenvalue" in t and "30 fallback to local" in t
    assert "| local | 0.600, 0.620, 0.640 | 0.620 ± 0.020 (n=3) | (reference) | – |" in t
    assert "seeds 0–2" in t and "commit abcdef0" in t
    cog = _write(tmp_path, "lt.json", _lt_record())
    published_docs.lt_rerun_sentence(cog, "records/lt.json")
    s = " ".join(cog.text.split())
    # glocal − local per seed: 0.01, 0.02, 0.00 → mean 0.01, SE = std(ddof 1) / √3 = 0.01 / √3
    assert f"+0.0100 ± {0.01 / math.sqrt(3):.4f}" in s
    assert "0.630 ± 0.017 (local 0.620 ± 0.020; mean ± std of 3 seeds" in s
    assert "with 0 fallbacks in its 30 windows (27 within tol of 1, 3 nearest eigenvalue)" in s


def test_sgld_z_table_and_reading(tmp_path):
    cog = _write(tmp_path, "lt.json", _lt_record())
    published_docs.sgld_z_table(cog, "records/lt.json")
    t = cog.text
    assert "| reset (default) | 0.710 ± 0.010 | 1.000 ± 0.100 | 1, 1, 1 | 0.00 | 0.60, 0.80, 1.00 |" in t
    # |log 4| = 1.386 twice: the median jump is log 4
    assert f"| persistent | 0.610 ± 0.010 | 1.000 ± 0.000 | 1, 4, 1 | {math.log(4):.2f} | 0.60, 0.80, 0.50 |" in t
    cog = _write(tmp_path, "lt.json", _lt_record())
    published_docs.sgld_z_reading(cog, "records/lt.json")
    s = " ".join(cog.text.split())
    # persistent − reset = −0.10 at every seed: SE 0 → no 2-SE verdict possible, said as neither
    assert "neither helped nor hurt" in s and f"norm is {math.log(4):.2f} against the reset's 0.00" in s
    rec = _lt_record()
    rec["variants"]["sgld-persist-z"]["test_accuracy"] = [0.60, 0.62, 0.61]  # −0.10, −0.09, −0.11: clearly worse
    cog = _write(tmp_path, "lt.json", rec)
    published_docs.sgld_z_reading(cog, "records/lt.json")
    assert "The persistent z hurt here (persistent − reset = −0.100 ± 0.006 balanced" in " ".join(cog.text.split())


def test_collapse_measured(tmp_path):
    run = lambda status, lr, acc, n, fail=None: {  # noqa
        "command": "glocal train --dataset fmnist --steps 40 --data-dir ../shared/datasets"
                   + (" --outer-lr 0.1" if lr == 0.1 else ""),
        "status": status, "failure": fail, "outer_steps": n, "test_accuracy": acc, "outer_lr": lr, "steps": 40,
        "hyperparams": {"w(L=0.1)": 0.5, "w(L=1)": 0.654, "w(L=3)": 0.876}, "windows": {"h_used_norm": [1.0] * n},
        "commit": "0123456789", "dirty": False}
    rec = {"record": "collapse_probe", "date": "2026-12-06", "pm": dict(CONVENTION),
           "runs": {"outer_lr_0.1": run("collapsed", 0.1, None, 3, "meta MLP collapsed: every weight (max 0.00522); "
                                        "try a smaller --outer-lr"),
                    "default": run("complete", 0.01, 0.19, 4)}}
    cog = _write(tmp_path, "c.json", rec)
    published_docs.collapse_measured(cog, "records/c.json")
    s = " ".join(cog.text.split())
    assert "`glocal train --dataset fmnist --steps 40 --outer-lr 0.1`" in s
    assert 'outer step 3 with status `collapsed`: "meta MLP collapsed: every weight (max 0.00522)"' in s
    assert "(lr 0.01) ended with status `complete`, with w(L=0.1) = 0.50, w(L=1) = 0.65, w(L=3) = 0.88" in s
    assert "test accuracy 0.19 after 40 steps" in s and "commit 0123456" in s


def test_eigen_stats():
    # window 1: nearest 1 at distance 0.01, radius 1.2; window 2: 0.3 and 0.95 (NaN padding ignored); window 3: none
    e = np.array([[1.01, 0.5, 1.2], [0.7, 0.95j, np.nan], [np.nan, np.nan, np.nan]], complex)
    s = published_docs.eigen_stats(e, [0.02, 0.1, 0.5], [0.5])
    assert s["n"] == 2
    assert s["dist"] == [pytest.approx((0.01 + 0.3) / 2)]
    assert s["rho"] == [pytest.approx((1.2 + 0.95) / 2)]
    assert s["none_within"] == {0.02: 0.5, 0.1: 0.5, 0.5: 0.0}
    assert published_docs.rows_quantiles([1, 2, 3, float("nan")], [0.5]) == [2.0]


def test_near_one_templates(tmp_path):
    rng = np.random.default_rng(0)
    for name, scale in (("a", 0.01), ("b", 0.3)):
        d = tmp_path / "records" / "runs" / name
        d.mkdir(parents=True)
        eig = 1 + scale * rng.uniform(0.5, 1.5, (10, 1)) * np.array([1, 3])  # nearest at scale × U(0.5, 1.5)
        np.savez(d / "dmd.npz", eigenvalues=eig.astype(complex))
        rows = ["outer_step,dmd_selected,h_local_norm,h_used_norm"] + [
            f"{i},{1 + scale:.4f}+0.01j;{1 + scale:.4f}-0.01j,1.0,{0.5 + 0.1 * i}" for i in range(10)]
        (d / "history.csv").write_text("\n".join(rows) + "\n")
    rec = {"record": "near_one", "date": "2026-12-06", "pm": dict(CONVENTION), "tols": [0.02, 0.1, 0.2],
           "quantiles": [0.1, 0.5, 0.9], "rows": [{"label": "paper", "runs": ["runs/a"]},
                                                  {"label": "few", "runs": ["runs/b"]}]}
    cog = _write(tmp_path, "n.json", rec)
    published_docs.near_one_table(cog, "records/n.json")
    t = cog.text
    assert "| paper, 10 windows |" in t and "| few, 10 windows |" in t
    assert "| 0 % / 0 % / 0 % |" in t  # the paper row: every nearest distance ≤ 0.015
    assert "| 100 % / 100 % / " in t  # the few row: every nearest distance is ≥ 0.15
    cog = _write(tmp_path, "n.json", rec)
    published_docs.near_one_reading(cog, "records/n.json")
    s = " ".join(cog.text.split())
    assert "0.1 holds the eigenvalue nearest 1 in 100 % of the paper setting's windows" in s
    assert "100 % of the last row's windows have none within 0.1" in s
    cog = _write(tmp_path, "n.json", rec)
    published_docs.selected_above_one(cog, "records/n.json")
    s = " ".join(cog.text.split())
    assert "(the first row, 10 windows)" in s and "above 1 in 100 %" in s and "a complex pair in 100 %" in s
    ratios = np.quantile([0.5 + 0.1 * i for i in range(10)], [0.1, 0.5, 0.9])
    assert " / ".join(f"{x:.2f}" for x in ratios) + " × the local" in s


def test_dmd_use_table(tmp_path):
    for name, split, reasons, acc in (("s", {"fallback": 25, "tol": 0}, {"diverging": 18, "no_unit_eigenvalue": 7},
                                       0.8148),
                                      ("g", {"tol": 16, "nearest": 9, "fallback": 0}, {}, 0.81514)):
        d = tmp_path / "records" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"dmd_windows": split, "dmd_fallback_reasons": reasons,
                                                    "test_accuracy": acc}))
    rec = {"record": "near_one", "date": "2026-12-06", "pm": dict(CONVENTION),
           "dmd_use": [{"label": "strict", "run": "s"}, {"label": "paper", "run": "g"}]}
    cog = _write(tmp_path, "n.json", rec)
    published_docs.dmd_use_table(cog, "records/n.json")
    assert "| strict | 0 / 25 (18 `diverging`, 7 `no_unit_eigenvalue`) | 0.8148 |" in cog.text
    assert "| paper | **25 / 25** (16 within tol of 1, 9 nearest eigenvalue) | 0.8151 |" in cog.text


def test_the_pages_blocks_are_exported():
    """published.py re-exports every template the pages call as P.<name>."""
    for name in ("lt_rerun_table", "lt_rerun_sentence", "sgld_z_table", "sgld_z_reading", "collapse_measured",
                 "near_one_table", "near_one_reading", "selected_above_one", "dmd_use_table"):
        assert getattr(published, name) is getattr(published_docs, name)
    assert "docs/sgld.md" in published.FILES and "docs/method.md" in published.FILES
