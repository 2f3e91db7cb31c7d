"""One training run with HPO: data, task, outer loop, evaluation, checkpoints, outputs.

Outputs in the run directory (all written atomically):

* ``metrics.json``: status (``complete``, ``diverged``, or ``collapsed`` when the
  task's health check fails, e.g. a meta MLP whose weights all fell to ~0), final test / validation
  accuracy and loss, wall, compile and training time, DMD fallbacks, final
  hyperparameters, the config;
* ``history.csv``: one row a window (outer step): φ and the hyperparameter
  values, local and used hypergradient, validation loss, test accuracy every
  ``eval_every`` windows; for glocal the estimator's diagnostics (estimator,
  selected eigenvalues and their number, spectral radius, rank, residual,
  norm of the discarded imaginary part, fallback and its reason);
* ``dmd.npz``: per-window DMD eigenvalues and recorded local hypergradients
  (glocal, ``q <= 32``), for the eigenvalue figure;
* ``checkpoint.json`` + ``checkpoint.<step>.npz`` while the run is in progress:
  the :class:`~glocal_cli.hpo.HPOState` arrays (npz, read with
  ``allow_pickle=False``) and a JSON manifest with the config, the history so far
  and the arrays' sha256. A killed run started again with the same config
  resumes from it and ends with the same result as an uninterrupted run. No
  pickle is ever read; a ``checkpoint.pkl`` of an older version is ignored.
* ``.glocal.lock``: held while a run writes the folder (a second run refuses).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import jax
import numpy as np

from glocal_cli import atomic
from glocal_cli.config import TrainConfig
from glocal_cli.data import load_dataset
from glocal_cli.data.imbalance import make_long_tailed
from glocal_cli.data.splits import Splits, make_splits, splits_from_indices
from glocal_cli.errors import Interrupted, UserError
from glocal_cli.hpo import HPORunner, HPOState, WindowRecord
from glocal_cli.tasks import Task, build_task

CHECKPOINT = "checkpoint.json"  # manifest; the arrays are in checkpoint.<outer step>.npz
CHECKPOINT_FORMAT = 1
LEGACY_CHECKPOINT = "checkpoint.pkl"  # pickle checkpoints of older versions: never opened
LOCK = ".glocal.lock"
MAX_COMPONENTS = 8  # per-component history columns up to this many hyperparameters


def load_splits(cfg: TrainConfig) -> Splits:
    """Train / validation / test arrays for the config's task."""
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.task == "reweight":
        train_idx, val_idx = make_long_tailed(
            ds, cfg.imbalance_factor, cfg.seed, n_val=cfg.reweight_val, exponent=cfg.imbalance_exponent
        )
        return splits_from_indices(ds, train_idx, val_idx)
    return make_splits(ds, cfg.seed, cfg.val_fraction)


def history_row(rec: WindowRecord, hyperparams: Dict[str, float], test_acc: Optional[float]) -> dict:
    """A flat dict for ``history.csv`` from a window record."""
    q = rec.phi.shape[0]
    row = {"outer_step": rec.outer_step, "step": rec.step, "val_loss": rec.val_loss}
    row.update({k: v for k, v in hyperparams.items()})
    if q <= MAX_COMPONENTS:
        for i in range(q):
            row[f"phi_{i}"] = float(rec.phi[i])
            row[f"h_local_{i}"] = float(rec.hypergrad_local[i])
            row[f"h_used_{i}"] = float(rec.hypergrad_used[i])
    row["h_local_norm"] = float(np.linalg.norm(rec.hypergrad_local))
    row["h_used_norm"] = float(np.linalg.norm(rec.hypergrad_used))
    row["test_accuracy"] = "" if test_acc is None else test_acc
    d = rec.dmd
    row["estimator"] = "" if d is None else d.estimator
    row["dmd_selected"] = "" if d is None else format_eigenvalues(d.selected)
    row["dmd_n_selected"] = "" if d is None else d.n_selected
    row["dmd_n_unit"] = row["dmd_n_selected"]  # the former name, read by older reports
    row["dmd_selection"] = "" if d is None else d.selection
    row["dmd_spectral_radius"] = "" if d is None or not math.isfinite(d.spectral_radius) else d.spectral_radius
    row["dmd_rank"] = "" if d is None else d.rank
    row["dmd_residual"] = "" if d is None or not math.isfinite(d.residual) else d.residual
    row["dmd_imag_norm"] = "" if d is None else d.imag_norm
    row["dmd_fallback"] = "" if d is None else int(d.fallback)
    row["dmd_reason"] = "" if d is None else d.reason
    row["seconds"] = rec.seconds
    return row


def format_eigenvalues(eigs: np.ndarray) -> str:
    """``[k]`` complex eigenvalues as ``"0.98+0.01j;0.98-0.01j"`` (6 significant digits), ``""`` when empty."""
    return ";".join(f"{complex(z).real:.6g}{complex(z).imag:+.6g}j" for z in np.asarray(eigs).ravel())


def rows_to_csv(rows: List[dict]) -> str:
    """CSV text with the union of the rows' keys (first-seen order)."""
    fields: List[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def comparable_config(cfg_dict: dict) -> dict:
    """A config dict with ``data_dir`` and ``out`` as absolute normalised paths.

    Two invocations of the same run (``--out runs/a`` and ``--out $PWD/runs/a``)
    compare equal.
    """
    d = dict(cfg_dict)
    for key in ("data_dir", "out"):
        if d.get(key):
            d[key] = os.path.normpath(os.path.abspath(str(d[key])))
    return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _state_leaves(hs: HPOState) -> list:
    """The array leaves of an :class:`HPOState` without ``outer_step`` (a Python int)."""
    return jax.tree_util.tree_leaves((hs.inner, hs.phi, hs.outer))


def save_checkpoint(run_dir: Path, hs: HPOState, cfg: TrainConfig, rows: List[dict], eigs: List[np.ndarray],
                    hypergrads: List[np.ndarray], seconds: float) -> None:
    """Write a checkpoint without pickle: arrays in ``checkpoint.<step>.npz``, the rest in ``checkpoint.json``.

    The arrays file is written first under a new name; the JSON manifest (config,
    outer step, history rows, the arrays file's name and sha256) is then replaced
    atomically, and older arrays files are removed. A kill at any point leaves
    either the previous or the new checkpoint, never a mixed one.
    """
    arrays = {f"state_{i:04d}": np.asarray(x) for i, x in enumerate(jax.device_get(_state_leaves(hs)))}
    arrays.update({f"eig_{i:06d}": np.asarray(e) for i, e in enumerate(eigs)})
    arrays.update({f"hg_{i:06d}": np.asarray(h) for i, h in enumerate(hypergrads)})
    name = f"checkpoint.{int(hs.outer_step)}.npz"
    atomic.save_npz(run_dir / name, **arrays)
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "config": comparable_config(cfg.to_dict()),
        "outer_step": int(hs.outer_step),
        "arrays": name,
        "sha256": _sha256(run_dir / name),
        "n_state": len(_state_leaves(hs)),
        "n_eigs": len(eigs),
        "n_hypergrads": len(hypergrads),
        "rows": atomic.plain(rows),
        "seconds": float(seconds),
    }
    atomic.write_text(run_dir / CHECKPOINT, json.dumps(manifest))
    for old in run_dir.glob("checkpoint.*.npz"):
        if old.name != name:
            old.unlink()


def remove_checkpoint(run_dir: Path) -> None:
    """Delete the manifest and every arrays file of a finished run."""
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    for old in run_dir.glob("checkpoint.*.npz"):
        old.unlink()


class CheckpointRejected(Exception):
    """A checkpoint present but not usable; the message says why in one line."""


def load_checkpoint(run_dir: Path, cfg: TrainConfig, template: HPOState) -> Optional[dict]:
    """The checkpoint of ``run_dir`` for ``cfg``, or None when there is none.

    Nothing in the files chooses a type: the arrays are read with
    ``allow_pickle=False`` after their sha256 is checked against the manifest,
    and poured into the tree structure of ``template`` (``runner.init(phi0)``),
    leaf by leaf with matching shape and dtype. Raises :class:`CheckpointRejected`
    (one line) when the checkpoint is corrupt or was written by another config.
    """
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("unknown format")
        saved_cfg = manifest["config"]
        if not isinstance(saved_cfg, dict):
            raise ValueError("config is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointRejected(f"{path} is corrupt ({type(e).__name__}: {str(e)[:80]})") from None
    current = comparable_config(cfg.to_dict())
    differ = sorted(k for k in set(current) | set(saved_cfg) if current.get(k) != saved_cfg.get(k))
    if differ:
        raise CheckpointRejected(f"{path} was written by another config (differs in: {', '.join(differ)})")
    try:
        name = str(manifest["arrays"])
        if not re.fullmatch(r"checkpoint\.\d+\.npz", name):
            raise ValueError(f"bad arrays file name {name!r}")
        npz = run_dir / name
        if _sha256(npz) != manifest["sha256"]:
            raise ValueError(f"sha256 of {name} does not match the manifest")
        leaves, treedef = jax.tree_util.tree_flatten((template.inner, template.phi, template.outer))
        n_state, n_eigs, n_hg = int(manifest["n_state"]), int(manifest["n_eigs"]), int(manifest["n_hypergrads"])
        if n_state != len(leaves):
            raise ValueError(f"{n_state} state arrays, the model has {len(leaves)}")
        with np.load(npz, allow_pickle=False) as z:
            restored = []
            for i, ref in enumerate(leaves):
                a = z[f"state_{i:04d}"]
                ref = np.asarray(ref)
                if a.shape != ref.shape or a.dtype != ref.dtype:
                    raise ValueError(f"state array {i}: {a.dtype}{list(a.shape)}, expected {ref.dtype}{list(ref.shape)}")
                restored.append(a)
            eigs = [z[f"eig_{i:06d}"] for i in range(n_eigs)]
            hypergrads = [z[f"hg_{i:06d}"] for i in range(n_hg)]
        outer_step = int(manifest["outer_step"])
        rows = manifest["rows"]
        seconds = float(manifest["seconds"])
        if not isinstance(rows, list) or len(rows) != outer_step or outer_step < 1:
            raise ValueError("history rows do not match the outer step")
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointRejected(f"{path} is corrupt ({type(e).__name__}: {str(e)[:80]})") from None
    inner, phi, outer = jax.tree_util.tree_unflatten(treedef, [jax.device_put(a) for a in restored])
    hs = HPOState(inner, phi, outer, outer_step)
    return {"hpo_state": hs, "rows": rows, "eigs": eigs, "hypergrads": hypergrads, "seconds": seconds}


class Progress:
    """Progress callbacks (the CLI shows a rich bar; tests pass nothing).

    ``note(text)`` receives one-line messages (resuming, checkpoint not used).
    """

    def __init__(self, start: Callable[[int, int], None] | None = None, advance=None, update=None, note=None):
        self.start = start or (lambda total, done: None)
        self.advance = advance or (lambda n: None)
        self.update = update or (lambda info: None)
        self.note = note or (lambda text: None)


def check_not_locked(run_dir: Path) -> None:
    """Raise the one-line :class:`UserError` of :func:`run_lock` now if another run holds ``run_dir``.

    Creates nothing; used before printing anything (the lock itself is taken by :func:`run_training`).
    """
    lock_path = Path(run_dir) / LOCK
    if not lock_path.is_file():
        return
    with run_lock(Path(run_dir)):
        pass


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive lock on ``run_dir`` (file ``.glocal.lock``) for the duration of a run.

    A second run into the same folder raises a one-line :class:`UserError`
    instead of writing beside the first. The lock is released by the OS if the
    process dies (kill -9 included), so a killed run can be resumed at once.
    """
    lock_path = run_dir / LOCK
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"--out {run_dir} is in use by another glocal train (lock {lock_path}); "
                            "wait for it or choose another --out") from None
        yield
    finally:
        os.close(fd)


def run_training(cfg: TrainConfig, progress: Optional[Progress] = None, stop_after: Optional[int] = None) -> dict:
    """Run (or resume) one training run; returns the metrics dict also written to ``metrics.json``.

    ``stop_after``: stop after that many outer steps in total, leaving the
    checkpoint (used to test resuming; also a way to run in slices).

    Raises :class:`~glocal_cli.errors.Interrupted` on Ctrl-C (KeyboardInterrupt),
    after saving a checkpoint at the last completed window.
    """
    progress = progress or Progress()
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        return _run_locked(cfg, progress, stop_after, run_dir)


def _run_locked(cfg: TrainConfig, progress: Progress, stop_after: Optional[int], run_dir: Path) -> dict:
    t_start = time.perf_counter()
    if (run_dir / LEGACY_CHECKPOINT).exists():
        progress.note(f"ignoring {run_dir / LEGACY_CHECKPOINT} (pickle checkpoint of an older version, never opened)")

    splits = load_splits(cfg)
    task: Task = build_task(cfg, splits)
    hpo_cfg = cfg.resolved_hpo()
    runner = HPORunner(task.problem, hpo_cfg)

    hs = runner.init(task.phi0)
    rows, eig_list, hg_list, seconds_before = [], [], [], 0.0
    try:
        ckpt = load_checkpoint(run_dir, cfg, hs)
    except CheckpointRejected as e:
        progress.note(f"checkpoint not used, starting from window 0: {e}")
        ckpt = None
    if ckpt is not None:
        hs = ckpt["hpo_state"]
        rows, eig_list, hg_list = ckpt["rows"], ckpt["eigs"], ckpt["hypergrads"]
        seconds_before = ckpt["seconds"]
        progress.note(f"resuming from window {hs.outer_step} of {hpo_cfg.outer_steps} ({run_dir / CHECKPOINT})")

    steps_per_outer = hpo_cfg.steps if hpo_cfg.method == "global" else hpo_cfg.tau
    progress.start(hpo_cfg.outer_steps * steps_per_outer, hs.outer_step * steps_per_outer)
    status, failure = "complete", ""
    window_times: List[float] = []
    q = task.phi0.shape[0]
    keep_hypergrads = hpo_cfg.method == "glocal" and q <= 32

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - t_start

    # (state, len(rows), len(eigs), len(hypergrads)) at the last completed window: what Ctrl-C saves
    consistent = (hs, len(rows), len(eig_list), len(hg_list))
    saved_step = hs.outer_step
    try:
        while not runner.done(hs):
            t0 = time.perf_counter()
            hs, rec = runner.run_window(hs, on_chunk=progress.advance)
            rec.seconds = time.perf_counter() - t0
            window_times.append(rec.seconds)
            test_acc = None
            last = runner.done(hs) or not rec.finite
            if rec.finite and cfg.eval_every and (rec.outer_step % cfg.eval_every == 0 or last):
                test_acc = task.evaluate(task.params_of(hs.inner), splits.test_x, splits.test_y)["accuracy"]
            hp = task.hyperparams(np.asarray(rec.phi)) if rec.finite else {}
            rows.append(atomic.plain(history_row(rec, hp, test_acc)))
            if rec.dmd is not None:
                eig_list.append(np.asarray(rec.dmd.eigenvalues))
                if keep_hypergrads:
                    hg_list.append(np.asarray(rec.hypergrads))
            if not rec.finite:
                status = "diverged"
                failure = f"non-finite parameters or hypergradient at outer step {rec.outer_step} (inner step {rec.step})"
                break
            unhealthy = task.health(np.asarray(hs.phi)) if task.health is not None else ""
            if unhealthy:  # e.g. a collapsed meta MLP: a failure status, never a result
                status, failure = "collapsed", f"{unhealthy} (after outer step {rec.outer_step}, inner step {rec.step})"
                break
            consistent = (hs, len(rows), len(eig_list), len(hg_list))
            progress.update({"lr": hp.get("lr"), "val_loss": rec.val_loss, "window": rec.outer_step})
            done_now = runner.done(hs)
            stop_now = stop_after is not None and hs.outer_step >= stop_after and not done_now
            if cfg.checkpoint_every and (hs.outer_step % cfg.checkpoint_every == 0 or stop_now):
                save_checkpoint(run_dir, hs, cfg, rows, eig_list, hg_list, elapsed())
                saved_step = hs.outer_step
            if stop_now:
                return {"status": "stopped", "outer_step": hs.outer_step}
    except KeyboardInterrupt:
        c_hs, n_rows, n_eigs, n_hg = consistent
        if cfg.checkpoint_every and c_hs.outer_step > saved_step:
            save_checkpoint(run_dir, c_hs, cfg, rows[:n_rows], eig_list[:n_eigs], hg_list[:n_hg], elapsed())
            saved_step = c_hs.outer_step
        if saved_step > 0 and (run_dir / CHECKPOINT).exists():
            raise Interrupted(f"interrupted at window {saved_step}; checkpoint kept in {run_dir / CHECKPOINT}, "
                              "run the same command again to resume") from None
        raise Interrupted("interrupted before the first checkpoint; nothing to resume") from None

    wall = seconds_before + time.perf_counter() - t_start
    if len(window_times) > 2:
        compile_s = max(window_times[0] - float(np.median(window_times[1:])), 0.0)
    else:
        compile_s = float("nan")
    params = task.params_of(hs.inner)
    final_ok = status == "complete"
    nan = {"loss": math.nan, "accuracy": math.nan, "balanced_accuracy": math.nan}
    test = task.evaluate(params, splits.test_x, splits.test_y) if final_ok else nan
    val = task.evaluate(params, splits.val_x, splits.val_y) if final_ok else nan
    fallbacks = [r["dmd_reason"] for r in rows if r.get("dmd_fallback") == 1]
    metrics = {
        "status": status,
        "failure": failure,
        "test_accuracy": test["accuracy"],
        "test_balanced_accuracy": test["balanced_accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "wall_s": wall,
        "compile_s": compile_s,
        "train_s": wall - (compile_s if np.isfinite(compile_s) else 0.0),
        "outer_steps": int(hs.outer_step),
        "inner_steps": int(runner.inner_steps_done(hs)),
        "dmd_fallbacks": len(fallbacks),
        "dmd_fallback_reasons": {r: fallbacks.count(r) for r in sorted(set(fallbacks))},
        "hyperparams": task.hyperparams(np.asarray(hs.phi)) if final_ok else {},
        "device": jax.devices()[0].device_kind,
        "config": cfg.to_dict(),
    }
    atomic.write_text(run_dir / "history.csv", rows_to_csv(rows))
    if eig_list:
        r_max = max(len(e) for e in eig_list)
        eigs = np.full((len(eig_list), r_max), np.nan + 0j, np.complex128)
        for i, e in enumerate(eig_list):
            eigs[i, : len(e)] = e
        arrays = {"eigenvalues": eigs}
        if hg_list:
            arrays["hypergrads"] = np.stack(hg_list)
        atomic.save_npz(run_dir / "dmd.npz", **arrays)
    atomic.write_json(run_dir / "metrics.json", metrics)
    remove_checkpoint(run_dir)
    return metrics


def write_not_run(cfg: TrainConfig, reason: str) -> dict:
    """Record a run that could not start because its dataset is unavailable.

    Writes ``metrics.json`` (status ``"not run"``, the reason, the config) and a
    ``history.csv`` with only a header, so the pipeline's declared outputs exist
    and the report shows "not run". Returns the metrics dict.
    """
    run_dir = cfg.run_dir()
    metrics = {
        "status": "not run",
        "failure": reason,
        "test_accuracy": math.nan,
        "test_loss": math.nan,
        "val_accuracy": math.nan,
        "val_loss": math.nan,
        "outer_steps": 0,
        "inner_steps": 0,
        "dmd_fallbacks": 0,
        "hyperparams": {},
        "config": cfg.to_dict(),
    }
    atomic.write_text(run_dir / "history.csv", "outer_step,step,lr,val_loss,test_accuracy\n")
    atomic.write_json(run_dir / "metrics.json", metrics)
    return metrics


def check_data_dir(cfg: TrainConfig) -> None:
    """A one-line error when the data folder is missing (before any work)."""
    if not Path(cfg.data_dir).exists():
        raise UserError(
            f"--data-dir {cfg.data_dir} does not exist: run `glocal download {cfg.dataset}` "
            "or point --data-dir at a folder of the original files"
        )
