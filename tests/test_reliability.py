"""Reliability (issue 11): safe checkpoints, honest exit codes, bad values refused, offline pipeline.

Fast tests use tiny fake states, the CLI in-process, and LeNet trained for a few windows on
352 random images (``tiny_data``); the real-process Ctrl-C test is marked slow.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from glocal_cli import cli
from glocal_cli.config import TrainConfig, from_mapping
from glocal_cli.errors import DataNotAvailable, Interrupted, UserError
from glocal_cli.hpo import HPOState
from glocal_cli.checkpoint import CHECKPOINT, CheckpointRefused, CheckpointRejected, load_checkpoint, save_checkpoint
from glocal_cli.runtime import Runtime
from glocal_cli.train import Progress, run_lock, run_training

from data_fixtures import real_data_dir

DATA = real_data_dir()
needs_data = pytest.mark.realdata
REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs ``touch marker``: the attack of issue 11."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _template(scale: float = 1.0) -> HPOState:
    phi = jnp.asarray([0.1, -0.2, 0.3], jnp.float32) * scale
    inner = {"w": jnp.arange(6, dtype=jnp.float32).reshape(3, 2) * scale, "b": jnp.zeros(2, jnp.float32)}
    return HPOState(inner, phi, optax.adam(0.1).init(phi), 0)


def _advanced(step: int) -> HPOState:
    t = _template(1.7)
    return HPOState(t.inner, t.phi, t.outer, step)


def _rows(n):
    return [{"outer_step": k, "step": 10 * k, "val_loss": 2.0 / k, "lr": 1e-3 * k, "dmd_reason": "", "x": float("nan")}
            for k in range(1, n + 1)]


RT = Runtime(backend="cpu", val_grad="reverse", val_batch=0, conv_impl="patches", conv_batching="grouped")


def _cfg(out, **kw):
    kw.setdefault("data_dir", "data/raw")
    return from_mapping(dict(out=str(out), **kw))


def _leaves(hs):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves((hs.inner, hs.phi, hs.outer, hs.aux))]


# ------------------------------------------------------------------ 1, 2: checkpoints


def test_checkpoint_roundtrip_is_bitwise_and_paths_are_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    hs = _advanced(2)
    eigs = [np.array([1.0 + 0.5j, 0.3 + 0j]), np.array([0.9 + 0j])]
    hgs = [np.ones((6, 3)), 2 * np.ones((6, 3))]
    save_checkpoint(run, hs, _cfg("runs/a"), RT, _rows(2), eigs, hgs, 12.5)
    assert not list(run.glob("*.pkl"))
    manifest = json.loads((run / CHECKPOINT).read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["sha256"])
    # the same run given an absolute --out (and data dir) resumes
    got = load_checkpoint(run, _cfg(str(run), data_dir=str(tmp_path / "data" / "raw")), RT, _template())
    assert got["hpo_state"].outer_step == 2
    for a, b in zip(_leaves(got["hpo_state"]), _leaves(hs)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "x"} for r in rows]  # noqa: E731
    assert strip(got["rows"]) == strip(_rows(2))
    assert np.isnan(got["rows"][1]["x"]) and got["seconds"] == 12.5
    assert [e.tolist() for e in got["eigs"]] == [e.tolist() for e in eigs]
    assert np.array_equal(got["hypergrads"][1], hgs[1])
    # a newer checkpoint replaces the arrays file of the older one
    save_checkpoint(run, _advanced(3), _cfg("runs/a"), RT, _rows(3), eigs, hgs, 13.0)
    assert sorted(p.name for p in run.glob("checkpoint.*.npz")) == ["checkpoint.3.npz"]


def test_checkpoint_of_another_config_names_the_keys(tmp_path):
    save_checkpoint(tmp_path, _advanced(1), _cfg(tmp_path), RT, _rows(1), [], [], 1.0)
    with pytest.raises(CheckpointRejected, match=r"another config \(differs in: lr0, steps\)"):
        load_checkpoint(tmp_path, _cfg(tmp_path, lr0=0.5, steps=40000), RT, _template())


def test_checkpoint_from_before_a_setting_existed_resumes_at_its_default(tmp_path):
    """A setting added after the checkpoint was written: the run resumes when it is at its default, not otherwise."""
    save_checkpoint(tmp_path, _advanced(1), _cfg(tmp_path), RT, _rows(1), [], [], 1.0)
    man = json.loads((tmp_path / CHECKPOINT).read_text())
    del man["config"]["seed_devices"]  # as written before --seed-devices existed
    (tmp_path / CHECKPOINT).write_text(json.dumps(man))
    assert load_checkpoint(tmp_path, _cfg(tmp_path), RT, _template())["hpo_state"].outer_step == 1
    with pytest.raises(CheckpointRejected, match=r"differs in: seed_devices\)"):
        load_checkpoint(tmp_path, _cfg(tmp_path, seed_devices=1), RT, _template())


def test_checkpoint_under_other_numerics_is_refused_in_one_line(tmp_path):
    """A checkpoint written under one resolved runtime (a CPU's) is refused under another (a GPU's): a UserError
    (exit 2) naming each choice that differs, never a silent resume with other numerics."""
    save_checkpoint(tmp_path, _advanced(1), _cfg(tmp_path), RT, _rows(1), [], [], 1.0)
    gpu = Runtime(backend="gpu", val_grad="forward", val_batch=6, conv_impl="lax", conv_batching="blockdiag")
    with pytest.raises(CheckpointRefused) as err:
        load_checkpoint(tmp_path, _cfg(tmp_path), gpu, _template())
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg and "other numerics" in msg
    for part in ("backend: 'cpu' -> 'gpu'", "val_grad: 'reverse' -> 'forward'", "conv_impl: 'patches' -> 'lax'"):
        assert part in msg
    same = Runtime(**RT.to_dict())
    assert load_checkpoint(tmp_path, _cfg(tmp_path), same, _template())["hpo_state"].outer_step == 1


def test_checkpoint_of_an_older_format_is_not_used(tmp_path):
    save_checkpoint(tmp_path, _advanced(1), _cfg(tmp_path), RT, _rows(1), [], [], 1.0)
    man = json.loads((tmp_path / CHECKPOINT).read_text())
    man["format"] = 1
    (tmp_path / CHECKPOINT).write_text(json.dumps(man))
    with pytest.raises(CheckpointRejected, match="format 1 of another glocal version"):
        load_checkpoint(tmp_path, _cfg(tmp_path), RT, _template())


def _corrupt(kind, run: Path, marker: Path):
    man = json.loads((run / CHECKPOINT).read_text())
    npz = run / man["arrays"]
    if kind == "truncated npz":
        npz.write_bytes(npz.read_bytes()[:100])
    elif kind == "garbage npz":
        npz.write_bytes(b"\x00garbage" * 50)
    elif kind == "truncated manifest":
        (run / CHECKPOINT).write_text((run / CHECKPOINT).read_text()[:40])
    elif kind == "manifest not a mapping":
        (run / CHECKPOINT).write_text("[1, 2]")
    elif kind == "missing key":
        del man["sha256"]
        (run / CHECKPOINT).write_text(json.dumps(man))
    elif kind == "rows not a list":
        man["rows"] = 7
        (run / CHECKPOINT).write_text(json.dumps(man))
    elif kind == "path outside the run":
        man["arrays"] = "../../etc/passwd"
        (run / CHECKPOINT).write_text(json.dumps(man))
    elif kind in ("pickled object array", "wrong shape"):
        # a digest that matches: the manifest is as writable as the arrays, so the loader must not trust types
        with open(npz, "wb") as f:
            bad = np.array([Payload(marker)], dtype=object) if kind == "pickled object array" else np.zeros(5, np.float32)
            np.savez(f, **{f"state_{i:04d}": bad for i in range(man["n_state"])})
        import hashlib

        man["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
        (run / CHECKPOINT).write_text(json.dumps(man))


@pytest.mark.parametrize("kind", ["truncated npz", "garbage npz", "truncated manifest", "manifest not a mapping",
                                  "missing key", "rows not a list", "path outside the run", "pickled object array",
                                  "wrong shape"])
def test_damaged_checkpoint_is_rejected_in_one_line(tmp_path, kind):
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run, _advanced(2), _cfg(run), RT, _rows(2), [np.ones(2)], [], 3.0)
    _corrupt(kind, run, marker)
    with pytest.raises(CheckpointRejected) as err:
        load_checkpoint(run, _cfg(run), RT, _template())
    msg = str(err.value)
    assert "corrupt" in msg and "\n" not in msg
    assert not marker.exists()


def _small(out, method="none", **kw):
    base = dict(dataset="fashion_mnist", method=method, steps=30, tau=10, sigma=6, m=3, batch_size=32, lr0=0.1,
                momentum0=0.5, val_fraction=0.01, eval_every=1, checkpoint_every=1, data_dir=".", out=str(out))
    base.update(kw)
    return from_mapping(base)


@pytest.fixture
def tiny_data(monkeypatch):
    """Replace the dataset by 352 random 28x28 images (train 256 / val 32 / test 64): seconds, not minutes."""
    from glocal_cli import train as train_mod
    from glocal_cli.data.splits import Splits

    rng = np.random.default_rng(0)
    x = rng.random((352, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 352).astype(np.int32)
    splits = Splits(x[:256], y[:256], x[256:288], y[256:288], x[288:], y[288:], np.zeros(1, np.float32),
                    np.ones(1, np.float32), 10, "fashion_mnist")
    monkeypatch.setattr(train_mod, "load_splits", lambda cfg, datasets=None: splits)


def test_legacy_pickle_never_opened_and_corrupt_checkpoint_reported(tmp_path, tiny_data):
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "checkpoint.pkl", "wb") as f:
        pickle.dump(Payload(marker), f)
    (run / CHECKPOINT).write_text("{garbage")
    notes = []
    metrics = run_training(_small(run, steps=20, eval_every=0), Progress(note=notes.append))
    assert metrics["status"] == "complete"
    assert not marker.exists()
    assert any("checkpoint.pkl" in n and "ignoring" in n for n in notes), notes
    assert any(n.startswith("checkpoint not used, starting from window 0:") and "corrupt" in n for n in notes), notes


def test_interrupt_keeps_checkpoint_and_resume_with_absolute_path_is_exact(tmp_path, monkeypatch, tiny_data):
    whole = run_training(_small(tmp_path / "whole", eval_every=0))
    monkeypatch.chdir(tmp_path)

    windows = []

    def ctrl_c(n):  # called after every window, before anything is fetched from the device
        windows.append(n)
        if len(windows) == 2:
            raise KeyboardInterrupt

    # checkpoint_every=3: the Ctrl-C checkpoint is written by the interrupt handler itself,
    # after fetching the windows the loop had not looked at yet
    with pytest.raises(Interrupted, match="interrupted at window 2; checkpoint kept"):
        run_training(_small("split", checkpoint_every=3, eval_every=0), Progress(advance=ctrl_c))
    assert json.loads((tmp_path / "split" / CHECKPOINT).read_text())["outer_step"] == 2
    notes = []
    resumed = run_training(_small(tmp_path / "split", checkpoint_every=3, eval_every=0), Progress(note=notes.append))
    assert any(n.startswith("resuming from window 2") for n in notes), notes
    assert resumed["test_accuracy"] == whole["test_accuracy"] and resumed["test_loss"] == whole["test_loss"]
    a = (tmp_path / "whole" / "history.csv").read_text().splitlines()
    b = (tmp_path / "split" / "history.csv").read_text().splitlines()
    drop_seconds = lambda lines: [",".join(c for i, c in enumerate(ln.split(",")) if i != lines[0].split(",").index("seconds")) for ln in lines]  # noqa: E731
    assert drop_seconds(a) == drop_seconds(b)
    assert not (tmp_path / "split" / CHECKPOINT).exists() and not list((tmp_path / "split").glob("checkpoint.*"))


def test_a_run_records_the_commit_it_started_from(tmp_path, monkeypatch, tiny_data):
    """The checkout may move on while a run trains (a commit lands during an hour-long run): metrics.json
    names the code the process loaded, taken when the run starts, not the HEAD of when it ends."""
    from glocal_cli import provenance

    trained = []  # HEAD moves once the first window has run
    monkeypatch.setattr(provenance, "collect", lambda with_devices=True: {"commit": ("b" if trained else "a") * 40,
                                                                          "dirty": bool(trained)})
    metrics = run_training(_small(tmp_path / "run", checkpoint_every=0, eval_every=0), Progress(advance=trained.append))
    assert metrics["status"] == "complete" and metrics["provenance"] == {"commit": "a" * 40, "dirty": False}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["provenance"]["commit"] == "a" * 40


# ------------------------------------------------------------------ 3: exit codes


def _main(args, capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(args)
    out, err = capsys.readouterr()
    return ex.value.code, out, [ln for ln in err.splitlines() if ln.strip()]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), Interrupted("interrupted at window 3; checkpoint kept in x")])
def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys, tmp_path, exc):
    from glocal_cli.commands import train as train_command

    def boom(cfg, **kw):
        raise exc

    monkeypatch.setattr(train_command, "run", boom)
    code, _, err = _main(["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")], capsys)
    assert code == 130
    assert len(err) == 1 and err[0].startswith("interrupted"), err


@pytest.mark.slow
@needs_data
def test_sigint_real_process_exits_130_and_resumes(tmp_path):
    """A real Ctrl-C (SIGINT) to `glocal train`: exit 130, checkpoint kept, `&&` stops, resume completes."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "glocal_cli.cli", "train", "--data-dir", str(DATA), "--out", str(out), "--steps", "200",
            "--tau", "10", "--sigma", "6", "--m", "3", "--batch-size", "32", "--val-fraction", "0.01",
            "--checkpoint-every", "1", "--method", "none"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # a shell that started pytest in the background ignores SIGINT in its children: restore the default
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (out / CHECKPOINT).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert [ln for ln in err.splitlines() if ln.strip()][-1].startswith("interrupted")
    assert (out / CHECKPOINT).exists()
    res = subprocess.run(args, capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "resuming from window" in res.stdout, res.stdout + res.stderr


# ------------------------------------------------------------------ 4: bad values


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--outer-lr", "nan"], "outer_lr must be a finite number > 0, got nan"),
        (["train", "--method", "global", "--global-outer-steps", "-1"], "global_outer_steps must be >= 1"),
        (["train", "--dmd-tol", "-1"], "dmd_tol must be a finite number > 0"),
        (["train", "--val-batch", "-7"], "val_batch must be -1"),
        (["train", "--val-chunk", "-1"], "--val-chunk must be >= 0 (0: auto), got -1"),
        (["train", "--val-precision", "float16"], "'--val-precision': 'float16' is not one of 'float32', 'bfloat16'"),
        (["train", "--val-grad", "sideways"], "'--val-grad': 'sideways' is not one of 'auto', 'reverse', 'forward'"),
        (["train", "--dmd-rank-rtol", "inf"], "dmd_rank_rtol must be in [0, 1)"),
        (["train", "--sigma", "0", "--method", "local"], "sigma must be >= 1"),
        (["train", "--imbalance-factor", "0.5"], "--imbalance-factor must be a finite number > 1"),
        (["train", "--out", "/dev/null/run"], "--out /dev/null/run: cannot create a folder there"),
        (["train", "--out", "afile"], "--out afile: exists and is not a folder"),
        (["download", "mnist", "--source", "SRC", "--out", "/dev/null/run"], "--out /dev/null/run: cannot create"),
        (["download", "mnist", "--source", "SRC", "--out", "afile"], "--out afile: exists and is not a folder"),
        (["report", "--runs", ".", "--out", "/dev/null/run"], "--out /dev/null/run: cannot create"),
        (["report", "--runs", ".", "--out", "afile"], "--out afile: exists and is not a folder"),
        (["train", "--params", "typo.yaml"], "unknown top-level key(s) profil"),
    ],
)
def test_bad_values_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "typo.yaml").write_text("profil: paper\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    src = str(DATA) if DATA else str(tmp_path)
    args = [a.replace("SRC", src) for a in args]
    if args[0] == "train":
        args += ["--data-dir", src]
    code, _, err = _main(args, capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ------------------------------------------------------------------ 5: tensorflow-datasets


def test_tfds_download_path_imports_and_runs_offline(tmp_path, network_ok):
    """`glocal download NAME` (source tfds) through the command's own import, under tfds mock data."""
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")
    from glocal_cli.data import prepare

    tfds = prepare._import_tfds()  # what `glocal download` uses
    # DatasetBuilder.code_path (needed by download_and_prepare for checksums) imports importlib_resources
    assert type(tfds.builder("mnist")).code_path is not None
    from glocal_cli.commands import download as stage

    with tfds.testing.mock_data(num_examples=5):
        path = stage.run(name="mnist", source="tfds", out=tmp_path / "raw")
    assert json.loads(path.with_suffix(".json").read_text())["splits"]["train"]["count"] == 5


# ------------------------------------------------------------------ 6: offline pipeline records "not run"


def test_missing_dataset_is_recorded_not_run_and_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    code, _, err = _main(["download", "cifar10", "--source", str(src), "--out", "raw"], capsys)
    assert code == 2 and "missing file cifar-10-python.tar.gz" in err[0]  # without --missing-ok: an error
    with pytest.raises(SystemExit) as ex:
        cli.main(["download", "cifar10", "--source", str(src), "--out", "raw", "--missing-ok"])
        raise SystemExit(0)
    assert ex.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"not run: cifar10 not found in {src}; put cifar-10-python.tar.gz there or set data.source: tfds" in out
    assert json.loads((tmp_path / "raw" / "cifar10.json").read_text())["status"] == "not run"

    from glocal_cli.data import load_dataset

    with pytest.raises(DataNotAvailable):
        load_dataset("cifar10", tmp_path / "raw")
    with pytest.raises(SystemExit) as ex:
        cli.main(["imbalance", "--dataset", "cifar10", "--factor", "50", "--data-dir", "raw", "--out", "imb", "--missing-ok"])
        raise SystemExit(0)
    assert ex.value.code == 0 and (tmp_path / "imb" / "cifar10_lt50_seed0.npz").is_file()
    for task, model, family in (("optimizer", "wrn28_2", "cifar"), ("reweight", "wrn16_2", "reweight")):
        for method in ("local", "glocal"):  # as dvc.yaml: the seeds of a setting in one command
            with pytest.raises(SystemExit) as ex:
                cli.main(["train", "--task", task, "--model", model, "--dataset", "cifar10", "--method", method,
                          "--data-dir", "raw", "--seeds", "0,1", "--out", f"runs/{family}/{method}-seed{{seed}}",
                          "--seeds-summary", f"runs/{family}/{method}-seeds.json", "--missing-ok"])
                raise SystemExit(0)
            assert ex.value.code == 0
            for seed in (0, 1):
                metrics = json.loads((tmp_path / "runs" / family / f"{method}-seed{seed}" / "metrics.json").read_text())
                assert metrics["status"] == "not run" and "cifar10 not found" in metrics["failure"]
                assert (tmp_path / "runs" / family / f"{method}-seed{seed}" / "history.csv").is_file()
            summary = json.loads((tmp_path / "runs" / family / f"{method}-seeds.json").read_text())
            assert summary == {"seeds": [0, 1], "runs": [
                {"seed": s, "run_dir": f"runs/{family}/{method}-seed{s}", "status": "not run", "test_accuracy": None}
                for s in (0, 1)]}
    code, _, err = _main(["train", "--model", "wrn28_2", "--dataset", "cifar10", "--data-dir", "raw",
                          "--out", "runs/x"], capsys)
    assert code == 2 and "cifar10 is not available" in err[0]
    code, _, err = _main(["train", "--model", "wrn28_2", "--dataset", "cifar10", "--data-dir", "raw", "--missing-ok",
                          "--seeds", "0,1", "--out", "runs/y{seed}", "--seeds-summary", "runs"], capsys)
    assert code == 2 and err == ["error: --seeds-summary runs: is a folder; give a file name, e.g. runs/setting-seeds.json"]
    assert not (tmp_path / "runs" / "y0").exists()

    from glocal_cli.report import build_report

    build_report(tmp_path / "runs", tmp_path / "results")
    acc = (tmp_path / "results" / "tables" / "accuracy_cifar.md").read_text()
    assert "| cifar10 | 0.001 | not run | not run |" in acc
    t3 = (tmp_path / "results" / "tables" / "table3_imbalanced.md").read_text()
    assert "| cifar10 | 50 | not run |" in t3
    headline = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert headline["not_run"] == 8 and len(headline) <= 10


def test_dvc_yaml_declares_source_dependency_and_small_metrics():
    import yaml

    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "${data.source}" in dvc["download"]["do"]["deps"]
    for name in ("download", "imbalance"):
        cmd = (dvc[name].get("do") or dvc[name])["cmd"]
        assert "--missing-ok" in cmd
    for name in ("train", "global", "ablation", "evidence", "train_lt", "train_lt_wd", "train_cifar", "train_reweight",
                 "baselines"):
        assert "--missing-ok" in dvc[name]["cmd"]
        assert "metrics" not in dvc[name]  # per-run metrics.json: outputs, not 100 metric columns
    for name in ("train", "evidence", "train_lt", "train_lt_wd", "train_cifar", "train_reweight", "baselines"):
        # all seeds of a setting in one command, one run folder each; the stage declares the group's summary
        assert "seed" not in dvc[name]["matrix"] and "item.seed" not in dvc[name]["cmd"]
        assert "--seeds ${grid." in dvc[name]["cmd"] and "/seed{seed} --seeds-summary" in dvc[name]["cmd"]
        # the setting's folder (seed<k>/ runs and seeds.json), one output DVC keeps between runs (resume)
        out = dvc[name]["outs"][0]
        folder = next(iter(out))
        assert dvc[name]["cmd"].endswith(f"--seeds-summary {folder}/seeds.json") and out[folder]["persist"] is True
    metrics = [m for st in dvc.values() for m in (st.get("do") or st).get("metrics", [])]
    assert [next(iter(m)) if isinstance(m, dict) else m for m in metrics] == ["results/metrics.json"]
    assert {"data/runs/cifar", "data/runs/reweight"} <= set(dvc["report"]["deps"])


# ------------------------------------------------------------------ 7: smaller items


def test_train_writes_where_report_reads():
    import inspect

    assert TrainConfig().run_dir().parts[:2] == ("data", "runs")
    default_runs = inspect.signature(cli.report).parameters["runs"].default.default
    assert Path(default_runs) == Path("data/runs")


def test_train_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
        raise SystemExit(0)
    out = "".join(c for c in capsys.readouterr().out if c not in "│╭╮╰╯─")  # rich's panel borders
    text = " ".join(out.split())
    for needle in ("windows between test-set evaluations (0: only at the end) (default 20)",
                   "windows between checkpoints (0: never) (default 20)", "(default 1e-10)", "unset: data/runs/",
                   "without --params no params file is read"):
        assert needle in text, needle


def test_second_run_into_same_out_refuses(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with run_lock(out):
        code, stdout, err = _main(["train", "--data-dir", str(tmp_path), "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1 and "in use by another glocal train" in err[0], err
    assert stdout == ""  # refused before printing anything
    assert sorted(p.name for p in out.iterdir()) == [".glocal.lock"]
    with run_lock(out):  # released after the first holder: a resumed run can take it
        pass


def test_interrupted_and_user_error_are_distinct():
    assert Interrupted.exit_code == 130 and UserError.exit_code == 2
