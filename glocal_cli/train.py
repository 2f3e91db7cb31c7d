"""One training run with HPO: data, task, outer loop, evaluation, checkpoints, outputs.

Outputs in the run directory (all written atomically):

* ``metrics.json``: status (``complete``, ``diverged``, or ``collapsed`` when the
  task's health check fails, e.g. a meta MLP whose weights all fell to ~0), final test / validation
  accuracy and loss, wall, compile and training time, DMD fallbacks, final
  hyperparameters, the config;
* ``history.csv``: one row a window (outer step): φ and the hyperparameter
  values, local and used hypergradient, validation loss, test accuracy every
  ``eval_every`` windows, DMD spectral radius / rank / residual / fallback;
* ``dmd.npz``: per-window DMD eigenvalues and recorded local hypergradients
  (glocal, ``q <= 32``), for the eigenvalue figure;
* ``checkpoint.pkl``: the :class:`~glocal_cli.hpo.HPOState` and history so far;
  a killed run started again with the same config resumes from it and ends
  with the same result as an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import math
import pickle
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import jax
import numpy as np

from glocal_cli import atomic
from glocal_cli.config import TrainConfig
from glocal_cli.data import load_dataset
from glocal_cli.data.imbalance import make_long_tailed
from glocal_cli.data.splits import Splits, make_splits, splits_from_indices
from glocal_cli.errors import UserError
from glocal_cli.hpo import HPORunner, HPOState, WindowRecord
from glocal_cli.tasks import Task, build_task

CHECKPOINT = "checkpoint.pkl"
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
    row["dmd_spectral_radius"] = "" if d is None else d.spectral_radius
    row["dmd_rank"] = "" if d is None else d.rank
    row["dmd_residual"] = "" if d is None else d.residual
    row["dmd_n_unit"] = "" if d is None else d.n_unit
    row["dmd_fallback"] = "" if d is None else int(d.fallback)
    row["dmd_reason"] = "" if d is None else d.reason
    row["seconds"] = rec.seconds
    return row


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


def _save_checkpoint(path: Path, hs: HPOState, extra: dict) -> None:
    payload = {"hpo_state": jax.device_get(hs), **extra}
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(payload, f)


def _load_checkpoint(path: Path, cfg: TrainConfig) -> Optional[dict]:
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    except Exception:  # a corrupt checkpoint is ignored, never fatal
        return None
    if payload.get("config") != cfg.to_dict():
        return None
    return payload


class Progress:
    """Progress callbacks (the CLI shows a rich bar; tests pass nothing)."""

    def __init__(self, start: Callable[[int, int], None] | None = None, advance=None, update=None):
        self.start = start or (lambda total, done: None)
        self.advance = advance or (lambda n: None)
        self.update = update or (lambda info: None)


def run_training(cfg: TrainConfig, progress: Optional[Progress] = None, stop_after: Optional[int] = None) -> dict:
    """Run (or resume) one training run; returns the metrics dict also written to ``metrics.json``.

    ``stop_after``: stop after that many outer steps in total, leaving the
    checkpoint (used to test resuming; also a way to run in slices).
    """
    cfg.validate()
    progress = progress or Progress()
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    splits = load_splits(cfg)
    task: Task = build_task(cfg, splits)
    hpo_cfg = cfg.hpo()
    runner = HPORunner(task.problem, hpo_cfg)

    ckpt_path = run_dir / CHECKPOINT
    ckpt = _load_checkpoint(ckpt_path, cfg)
    if ckpt is not None:
        hs = ckpt["hpo_state"]
        hs = HPOState(jax.device_put(hs.inner), jax.device_put(hs.phi), jax.device_put(hs.outer), hs.outer_step)
        rows, eig_list, hg_list = ckpt["rows"], ckpt["eigs"], ckpt["hypergrads"]
        seconds_before = ckpt["seconds"]
    else:
        hs = runner.init(task.phi0)
        rows, eig_list, hg_list, seconds_before = [], [], [], 0.0

    steps_per_outer = hpo_cfg.steps if cfg.method == "global" else cfg.tau
    progress.start(hpo_cfg.outer_steps * steps_per_outer, hs.outer_step * steps_per_outer)
    status, failure = "complete", ""
    window_times: List[float] = []
    q = task.phi0.shape[0]
    keep_hypergrads = cfg.method == "glocal" and q <= 32

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
        rows.append(history_row(rec, hp, test_acc))
        if rec.dmd is not None:
            eig_list.append(np.asarray(rec.dmd.eigenvalues))
            if keep_hypergrads:
                hg_list.append(np.asarray(rec.hypergrads))
        progress.update({"lr": hp.get("lr"), "val_loss": rec.val_loss, "window": rec.outer_step})
        if not rec.finite:
            status = "diverged"
            failure = f"non-finite parameters or hypergradient at outer step {rec.outer_step} (inner step {rec.step})"
            break
        unhealthy = task.health(np.asarray(hs.phi)) if task.health is not None else ""
        if unhealthy:  # e.g. a collapsed meta MLP: a failure status, never a result
            status, failure = "collapsed", f"{unhealthy} (after outer step {rec.outer_step}, inner step {rec.step})"
            break
        done_now = runner.done(hs)
        stop_now = stop_after is not None and hs.outer_step >= stop_after and not done_now
        if cfg.checkpoint_every and (hs.outer_step % cfg.checkpoint_every == 0 or stop_now):
            elapsed = seconds_before + time.perf_counter() - t_start
            extra = dict(config=cfg.to_dict(), rows=rows, eigs=eig_list, hypergrads=hg_list, seconds=elapsed)
            _save_checkpoint(ckpt_path, hs, extra)
        if stop_now:
            return {"status": "stopped", "outer_step": hs.outer_step}

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
    if ckpt_path.exists():
        ckpt_path.unlink()
    return metrics


def check_data_dir(cfg: TrainConfig) -> None:
    """A one-line error when the data folder is missing (before any work)."""
    if not Path(cfg.data_dir).exists():
        raise UserError(
            f"--data-dir {cfg.data_dir} does not exist: run `glocal download {cfg.dataset}` "
            "or point --data-dir at a folder of the original files"
        )
