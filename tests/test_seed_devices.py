"""Seeds across devices: a seed group split over 2 and 4 devices equals the one-device run.

The multi-device runs need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before
JAX starts, so they run in a subprocess (``tests/multi_device.py``) and this process (and
the rest of the suite) keeps its devices. Comparisons at lr0 1e-3: at 0.05 training is
chaotic and float-level differences between two compiled programs grow within a window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from glocal_cli import cli
from glocal_cli.config import from_mapping
from glocal_cli.data import prepare_dataset
from glocal_cli.errors import UserError
from glocal_cli.hpo import HPOConfig
from glocal_cli.runner import SeedGroupRunner
from glocal_cli.seeds import seed_layout
from data_fixtures import write_mnist_like
from test_seeds import _assert_rows_close, _history, _quadratic

HERE = Path(__file__).resolve().parent
FAKE_DEVICES = 4


def _multi_device(*args: str, timeout: int = 600) -> None:
    """``python tests/multi_device.py ARGS`` with 4 fake CPU devices and this checkout's code."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={FAKE_DEVICES}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, str(HERE / "multi_device.py"), *args], env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, f"multi_device.py {args[0]} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


@pytest.mark.parametrize("n_seeds, n_devices, layout", [
    (4, 4, (4, 4)), (3, 4, (3, 3)), (3, 2, (2, 4)), (5, 4, (3, 6)), (6, 4, (3, 6)), (7, 4, (4, 8)),
    (2, 8, (2, 2)), (1, 4, (1, 1)), (5, 1, (1, 5)),
])
def test_seed_layout_gives_each_device_the_fewest_seeds_with_the_least_padding(n_seeds, n_devices, layout):
    used, padded = seed_layout(n_seeds, n_devices)
    assert (used, padded) == layout
    assert padded % used == 0 and padded >= n_seeds and used <= min(n_seeds, n_devices)
    assert padded // used == -(-n_seeds // min(n_seeds, n_devices))  # no layout gives a device fewer seeds
    assert padded - n_seeds < padded // used  # padding fills part of one device's block, never a whole block


def test_one_device_keeps_the_unsharded_program():
    """One device builds no mesh, for every method: arrays are placed and padded as before."""
    cfgs = [HPOConfig(method="local", steps=20, tau=10, outer_lr=0.05, seed=s) for s in range(3)]
    group = SeedGroupRunner([_quadratic(s) for s in range(3)], cfgs, devices=jax.devices()[:1])
    assert group.mesh is None and group.n_devices == 1 and group.n_padded == 3
    gs = group.init([np.zeros(2, np.float32)] * 3)
    assert group.placed(gs) is gs and group.place(group.data) is group.data
    assert group.batches(0, 10).shape[0] == 3
    for method in ("global", "sgld"):  # their seeds are one program too (global: its chunks of tau steps)
        cfgs = [HPOConfig(method=method, steps=20, tau=10, outer_lr=0.05, seed=s) for s in range(3)]
        problems = [_quadratic(s) for s in range(3)]
        if method == "sgld":
            continue  # the quadratic has no training loss; sgld's group: tests/test_sgld_train.py
        group = SeedGroupRunner(problems, cfgs, devices=jax.devices()[:1])
        assert group.mesh is None and group.n_padded == 3


def test_seed_devices_setting():
    assert from_mapping({}).seed_devices == 0
    assert from_mapping({}).resolved_seed_devices() == jax.local_devices()
    assert from_mapping({"seed_devices": 1}).resolved_seed_devices() == jax.local_devices()[:1]
    with pytest.raises(UserError, match="--seed-devices must be >= 0"):
        from_mapping({"seed_devices": -1})
    too_many = len(jax.devices()) + 1
    with pytest.raises(UserError, match=f"--seed-devices {too_many}: this machine has {len(jax.devices())} "):
        from_mapping({"seed_devices": too_many}).resolved_seed_devices()


def test_cli_refuses_more_seed_devices_than_the_machine_has(tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(["train", "--seeds", "0,1", "--seed-devices", str(len(jax.devices()) + 1), "--data-dir", str(tmp_path),
                  "--out", str(tmp_path / "r{seed}")])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.startswith("error: --seed-devices") and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_sharded_group_equals_one_device_on_2_and_4_devices(tmp_path):
    """float64 quadratic, local and glocal: 4 seeds on 2 and 4 devices, 3 seeds on 2 (padded to 4) give the
    one-device program's states, validation losses and hypergradients to 1e-12; the state is split over the devices."""
    out = tmp_path / "runner.json"
    _multi_device("runner", str(out))
    res = json.loads(out.read_text())
    assert res["n_devices"] == FAKE_DEVICES
    by = {(r["method"], r["n_seeds"], r["devices_given"]): r for r in res["runs"]}
    for (method, n_seeds, n_dev), r in by.items():
        used, padded = seed_layout(n_seeds, n_dev)
        assert (r["n_devices"], r["n_padded"]) == (used, padded)
        assert r["state_devices"] == [used]  # every state leaf split over the devices used
        if method == "glocal":  # one estimate per real seed, none for the padding
            assert r["n_estimates"] == [n_seeds] * len(r["n_estimates"])
        ref = by[(method, n_seeds, 1)]
        for key in ("inner", "phi"):
            np.testing.assert_allclose(r[key], ref[key], rtol=1e-12, atol=1e-14)
        for key in ("val_loss", "hypergrad_used"):  # rows of the padding (copies of the last seed) ignored
            a = np.asarray(r[key], float)[:, :n_seeds]
            np.testing.assert_allclose(a, np.asarray(ref[key], float), rtol=1e-12, atol=1e-14)
    assert not np.allclose(by[("glocal", 4, 4)]["phi"][0], by[("glocal", 4, 4)]["phi"][1])  # seeds differ
    assert by[("local", 3, 2)]["n_padded"] == 4 and by[("local", 4, 2)]["n_padded"] == 4


def _cli_runs(tmp_path: Path, method: str, groups: str) -> None:
    """``glocal train`` (LeNet, lr0 1e-3, 2 windows, 400 random images) in the 4-device subprocess; see multi_device.cli."""
    write_mnist_like(tmp_path / "src", n_train=400, n_test=50)
    prepare_dataset("fashion_mnist", str(tmp_path / "src"), tmp_path / "data", verify=False)  # random images: no checksums
    _multi_device("cli", str(tmp_path / "data"), str(tmp_path), method, groups)


def _assert_seed_folders_equal(one: Path, many: Path, n_dev: int, seeds: list) -> None:
    """A seed's folder from the split group against the one-device group's: same files, results to float tolerance."""
    assert sorted(p.name for p in many.iterdir()) == sorted(p.name for p in one.iterdir())
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (one, many))
    assert a["status"] == b["status"] == "complete"
    assert (a["seed_devices"], b["seed_devices"]) == (1, n_dev) and b["seeds_in_program"] == seeds
    assert {k: v for k, v in a["config"].items() if k not in ("out", "seed_devices")} == \
        {k: v for k, v in b["config"].items() if k not in ("out", "seed_devices")}
    for key in ("test_accuracy", "val_accuracy"):
        assert b[key] == pytest.approx(a[key], abs=1e-6)
    for key in ("test_loss", "val_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-5)
    assert b["hyperparams"] == pytest.approx(a["hyperparams"], rel=1e-5)
    _assert_rows_close(_history(many / "history.csv"), _history(one / "history.csv"), rtol=1e-5)
    if (one / "dmd.npz").exists():
        np.testing.assert_allclose(np.load(many / "dmd.npz")["hypergrads"], np.load(one / "dmd.npz")["hypergrads"],
                                   rtol=1e-4, atol=1e-7)


@pytest.mark.e2e
def test_cli_seeds_on_4_devices_equal_one_device(tmp_path):
    """`glocal train --seeds 0,1,2,3` on 4 fake CPU devices (the default: every device) writes the one-device run's
    per-seed folders. Method none keeps the LeNet compilations to two (about 35 s of CPU); the hypergradient methods'
    sharded windows are compared exactly by the test above, and through the CLI by the slow test below."""
    _cli_runs(tmp_path, "none", "one,all")
    for s in range(4):
        _assert_seed_folders_equal(tmp_path / "one" / f"s{s}", tmp_path / "all" / f"s{s}", 4, [0, 1, 2, 3])


@pytest.mark.slow  # three glocal LeNet compilations, about 100 s of CPU; the two tests above cover the same behaviour
def test_cli_glocal_seeds_on_4_and_padded_on_2_devices_equal_one_device(tmp_path):
    """glocal (lr0 1e-3): `--seeds 0,1,2,3` on 4 devices, and `--seeds 0,1,2` on 2 (padded to 4: the padding copy of
    seed 2 writes nothing), equal the one-device run seed by seed (histories, DMD hypergradients, results)."""
    _cli_runs(tmp_path, "glocal", "one,all,padded")
    assert sorted(p.name for p in (tmp_path / "padded").iterdir()) == ["s0", "s1", "s2"]
    for group, seeds, n_dev in (("all", [0, 1, 2, 3], 4), ("padded", [0, 1, 2], 2)):
        for s in seeds:
            _assert_seed_folders_equal(tmp_path / "one" / f"s{s}", tmp_path / group / f"s{s}", n_dev, seeds)
