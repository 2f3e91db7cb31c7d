"""The runtime benchmark's logic on tiny settings (no timing assertions: the CPU is shared)."""

import json
import math

import pytest

from conftest import shared_datasets
from glocal_cli import bench

DATA = shared_datasets()
needs_data = pytest.mark.skipif(DATA is None, reason="../shared/datasets not found")

KEYS = ("local_over_none", "glocal_over_local", "glocal_over_none", "glocal_over_local_floor", "W_s", "V_s", "device")


def test_settings():
    paper = bench.bench_settings()
    assert (paper.tau, paper.sigma, paper.m, paper.batch_size) == (50, 20, 10, 128)
    quick = bench.bench_settings(quick=True, steps=45)
    assert quick.quick and quick.windows == 3  # 45 steps -> 3 windows of tau 20
    with pytest.raises(ValueError):
        bench.bench_settings(steps=0)


@needs_data
def test_run_bench_tiny(tmp_path):
    s = bench.BenchSettings(data_dir=str(DATA), tau=4, sigma=4, m=2, batch_size=16, val_fraction=0.01,
                            windows=1, global_steps=8, horizon=40)
    res = bench.run_bench(s)
    for k in KEYS:
        assert k in res
    for k in KEYS[:-1] + ("global_over_none",):
        assert math.isfinite(res[k]) and res[k] > 0, k
    for m in bench.METHOD_ORDER:
        assert res["seconds_per_1000_steps"][m] > 0
    assert "extrapolated" in res["global_measured"]["note"]
    bench.write_results(res, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["V_s"] > 0
    bench.results_table(res)  # renders
    assert len(bench.summary_lines(res)) == 4
