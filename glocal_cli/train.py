"""One training run with HPO: data, task, outer loop, evaluation, checkpoints, outputs.

Outputs in the run directory (all written atomically):

* ``metrics.json``: status (``complete``, ``diverged``, or ``collapsed`` when the
  task's health check fails, e.g. a meta MLP whose weights all fell to ~0), final test / validation
  accuracy and loss, wall, compile and training time, the mean steady window time
  (``window_s``: after the compiling window, host work included), DMD fallbacks, final
  hyperparameters, the seeds trained in the same program (``seeds_in_program``) and the
  devices they were split over (``seed_devices``), the config;
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
import dataclasses
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
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import numpy as np

from glocal_cli import atomic, provenance
from glocal_cli.config import TrainConfig
from glocal_cli.data import load_dataset
from glocal_cli.data.imbalance import make_long_tailed
from glocal_cli.data.splits import Splits, make_splits, splits_from_indices
from glocal_cli.errors import Interrupted, UserError
from glocal_cli.hpo import HPOState, WindowRecord
from glocal_cli.seeds import SeedGroupRunner, stack_states
from glocal_cli.settings import parse_list
from glocal_cli.tasks import Task, build_task

CHECKPOINT = "checkpoint.json"  # manifest; the arrays are in checkpoint.<outer step>.npz
CHECKPOINT_FORMAT = 1
LEGACY_CHECKPOINT = "checkpoint.pkl"  # pickle checkpoints of older versions: never opened
LOCK = ".glocal.lock"
MAX_COMPONENTS = 8  # per-component history columns up to this many hyperparameters


def load_splits(cfg: TrainConfig, datasets: Optional[dict] = None) -> Splits:
    """Train / validation / test arrays for the config's task.

    ``datasets``: a dict kept by the caller across calls (the seeds of a group): the
    dataset is read once per ``(name, data_dir)`` and split for each seed.
    """
    cache = {} if datasets is None else datasets
    key = (cfg.dataset, str(cfg.data_dir))
    if key not in cache:
        cache[key] = load_dataset(cfg.dataset, cfg.data_dir)
    ds = cache[key]
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


def _with_defaults(saved: dict, defaults: dict) -> dict:
    """``saved`` with the settings it lacks (added since it was written) at their defaults, nested sections too.

    A setting introduced after a checkpoint was written did not exist for that run,
    so the run had its default behaviour; the checkpoint stays usable when the new
    setting is left at its default, and is rejected when it is not.
    """
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


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
                    hypergrads: List[np.ndarray], seconds: float, group: Optional[dict] = None) -> None:
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
        "group": atomic.plain(group or {}),
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
    saved_cfg = _with_defaults(saved_cfg, type(cfg)().to_dict())
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
        group = manifest.get("group", {})
        if not isinstance(group, dict):
            raise ValueError("group is not a mapping")
        if not isinstance(rows, list) or len(rows) != outer_step or outer_step < 1:
            raise ValueError("history rows do not match the outer step")
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointRejected(f"{path} is corrupt ({type(e).__name__}: {str(e)[:80]})") from None
    inner, phi, outer = jax.tree_util.tree_unflatten(treedef, [jax.device_put(a) for a in restored])
    hs = HPOState(inner, phi, outer, outer_step)
    return {"hpo_state": hs, "rows": rows, "eigs": eigs, "hypergrads": hypergrads, "seconds": seconds,
            "group": group}


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


SYNC_SECONDS = 2.0  # the longest the loop runs ahead of the host records (progress) without a reason to sync


def parse_seeds(text: str) -> List[int]:
    """``"0,1,2"`` (commas and/or spaces, brackets allowed) -> ``[0, 1, 2]``; a one-line :class:`UserError` otherwise."""
    seeds = parse_list(text, "seeds", int, separators=r"[,\s]+")
    if min(seeds) < 0:
        raise UserError(f"--seeds must be integers >= 0, e.g. 0,1,2; got {text!r}")
    return seeds


def seed_configs(cfg: TrainConfig, seeds: Optional[Sequence[int]] = None) -> List[TrainConfig]:
    """One config per seed: ``cfg`` with ``hpo.seed`` set and the seed's own run directory.

    ``seeds`` None: ``[cfg.seed]``. With ``--out``: a ``{seed}`` in it is replaced by the
    seed; without one, several seeds go to ``<out>/seed<k>``. Without ``--out`` each seed
    gets the default folder (:meth:`TrainConfig.run_dir`), exactly as a single-seed run.
    """
    seeds = [cfg.seed] if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise UserError("--seeds must name at least one seed, e.g. 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {','.join(map(str, seeds))} repeats a seed")
    out = []
    for s in seeds:
        c = dataclasses.replace(cfg, hpo=dataclasses.replace(cfg.hpo, seed=s))
        if cfg.out:
            if "{seed}" in cfg.out:
                c = dataclasses.replace(c, out=cfg.out.replace("{seed}", str(s)))
            elif len(seeds) > 1:
                c = dataclasses.replace(c, out=str(Path(cfg.out) / f"seed{s}"))
        out.append(c)
    return out


def run_training(cfg: TrainConfig, progress: Optional[Progress] = None, stop_after: Optional[int] = None) -> dict:
    """Run (or resume) one training run; returns the metrics dict also written to ``metrics.json``.

    ``stop_after``: stop after that many outer steps in total, leaving the
    checkpoint (used to test resuming; also a way to run in slices).

    Raises :class:`~glocal_cli.errors.Interrupted` on Ctrl-C (KeyboardInterrupt),
    after saving a checkpoint at the last completed window.
    """
    return run_seeds(seed_configs(cfg), progress, stop_after)[0]


def run_seeds(cfgs: Sequence[TrainConfig], progress: Optional[Progress] = None,
              stop_after: Optional[int] = None) -> List[dict]:
    """Run (or resume) the seeds of one setting in one program; one metrics dict per seed.

    ``cfgs`` (from :func:`seed_configs`) differ only in the seed and the run
    directory. Methods none / local / glocal run all seeds as one vmapped, jitted
    window (:class:`~glocal_cli.seeds.SeedGroupRunner`); global and sgld run the
    seeds one after the other. Every seed's folder gets exactly the outputs of a
    single-seed run, and a checkpoint in each folder; the group resumes when all
    of them are at the same window (else every seed starts from window 0).
    """
    progress = progress or Progress()
    cfgs = list(cfgs)
    dirs = [c.run_dir() for c in cfgs]
    if len({os.path.abspath(d) for d in dirs}) != len(dirs):
        raise UserError(f"two seeds would write the same folder ({', '.join(map(str, dirs))}); put {{seed}} in --out")
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for d in dirs:
            stack.enter_context(run_lock(d))
        return _run_group(cfgs, progress, stop_after)


@dataclasses.dataclass
class SeedRun:
    """Host-side record of one seed of a run group: its data, task and history so far."""

    cfg: TrainConfig
    splits: Splits
    task: Task
    rows: List[dict] = dataclasses.field(default_factory=list)
    eigs: List[np.ndarray] = dataclasses.field(default_factory=list)
    hypergrads: List[np.ndarray] = dataclasses.field(default_factory=list)
    status: str = "running"  # running | diverged | collapsed
    failure: str = ""
    outer_steps: int = 0  # where a failed seed stopped

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir()

    def copy(self) -> "SeedRun":
        return dataclasses.replace(self, rows=list(self.rows), eigs=list(self.eigs), hypergrads=list(self.hypergrads))

    def group_info(self, seeds: List[int]) -> dict:
        return {"seeds": seeds, "status": self.status, "failure": self.failure, "outer_steps": self.outer_steps}


class _Snapshot(NamedTuple):
    """The loop's state, replaced in one assignment (a Ctrl-C never sees half of it).

    ``runs`` hold the rows up to ``gs.outer_step - len(pending)``; ``pending`` are the
    windows since, still on the device.
    """

    gs: HPOState
    runs: tuple
    pending: tuple


def _resume(runs: List[SeedRun], runner: SeedGroupRunner, gs: HPOState, progress: Progress):
    """``(state, seconds before)`` from the seeds' checkpoints, or the fresh state when there is none."""
    seeds = [r.cfg.seed for r in runs]
    found = []
    for s, r in enumerate(runs):
        try:
            found.append(load_checkpoint(r.run_dir, r.cfg, runner.slice(gs, s)))
        except CheckpointRejected as e:
            progress.note(f"checkpoint not used, starting from window 0: {e}")
            found.append(None)
    present = [c for c in found if c is not None]
    if not present:
        return gs, 0.0
    steps = {c["hpo_state"].outer_step for c in present}
    same_group = all(list(c["group"].get("seeds", [r.cfg.seed])) == seeds for r, c in zip(runs, found) if c)
    if len(present) < len(found) or len(steps) > 1 or not same_group:
        progress.note(f"checkpoints of seeds {','.join(map(str, seeds))} are not of one group at one window "
                      f"(windows {sorted(steps)}); starting every seed from window 0")
        return gs, 0.0
    for r, c in zip(runs, found):
        r.rows, r.eigs, r.hypergrads = c["rows"], c["eigs"], c["hypergrads"]
        r.status = str(c["group"].get("status", "running"))
        r.failure = str(c["group"].get("failure", ""))
        r.outer_steps = int(c["group"].get("outer_steps", 0))
    gs = stack_states([c["hpo_state"] for c in found], found[0]["hpo_state"].outer_step)
    where = runs[0].run_dir / CHECKPOINT if len(runs) == 1 else f"{len(runs)} seeds"
    progress.note(f"resuming from window {gs.outer_step} of {runner.cfg.outer_steps} ({where})")
    return gs, max(c["seconds"] for c in found)


def _flush(snap: _Snapshot, runner: SeedGroupRunner, cfg: TrainConfig, seconds: float) -> tuple:
    """The seeds' records with the pending windows added (fetched from the device in one transfer).

    A seed whose window is non-finite becomes ``diverged``, one whose φ fails the
    task's health check ``collapsed``; their rows stop there. The test set is
    evaluated when the last pending window is an evaluation window.
    """
    host = jax.device_get([w.arrays for w in snap.pending])
    runs = [r.copy() for r in snap.runs]
    n_outer = runner.cfg.outer_steps
    per_window = seconds / max(len(snap.pending), 1)
    keep_hg = runner.cfg.method == "glocal" and snap.gs.phi.shape[-1] <= 32
    for i, (w, a) in enumerate(zip(snap.pending, host)):
        last_pending = i == len(snap.pending) - 1
        for s, r in enumerate(runs):
            if r.status != "running":
                continue
            rec = WindowRecord(
                outer_step=w.outer_step, step=w.step, phi=np.asarray(a.phi[s], np.float64),
                hypergrad_local=np.asarray(a.hypergrad_local[s], np.float64),
                hypergrad_used=np.asarray(a.hypergrad_used[s], np.float64), val_loss=float(a.val_loss[s]),
                finite=bool(a.finite[s]), dmd=None if w.estimates is None else w.estimates[s],
                hypergrads=np.asarray(a.hypergrads[s], np.float64), seconds=per_window)
            test_acc = None
            if (rec.finite and last_pending and cfg.eval_every
                    and (w.outer_step % cfg.eval_every == 0 or w.outer_step == n_outer)):
                params = r.task.params_of(runner.slice(snap.gs, s).inner)
                test_acc = runs[0].task.evaluate(params, r.splits.test_x, r.splits.test_y)["accuracy"]
            hp = r.task.hyperparams(rec.phi) if rec.finite else {}
            r.rows.append(atomic.plain(history_row(rec, hp, test_acc)))
            if rec.dmd is not None:
                r.eigs.append(np.asarray(rec.dmd.eigenvalues))
                if keep_hg:
                    r.hypergrads.append(rec.hypergrads)
            if not rec.finite:
                r.status, r.outer_steps = "diverged", w.outer_step
                r.failure = f"non-finite parameters or hypergradient at outer step {w.outer_step} (inner step {w.step})"
                continue
            unhealthy = r.task.health(np.asarray(a.phi_next[s])) if r.task.health is not None else ""
            if unhealthy:  # e.g. a collapsed meta MLP: a failure status, never a result
                r.status, r.outer_steps = "collapsed", w.outer_step
                r.failure = f"{unhealthy} (after outer step {w.outer_step}, inner step {w.step})"
    return tuple(runs)


def _save_group(snap: _Snapshot, runner: SeedGroupRunner, seconds: float) -> None:
    seeds = [r.cfg.seed for r in snap.runs]
    for s, r in enumerate(snap.runs):
        save_checkpoint(r.run_dir, runner.slice(snap.gs, s), r.cfg, r.rows, r.eigs, r.hypergrads, seconds,
                        group=r.group_info(seeds))


def _run_group(cfgs: List[TrainConfig], progress: Progress, stop_after: Optional[int]) -> List[dict]:
    t_start = time.perf_counter()
    for c in cfgs:
        if (c.run_dir() / LEGACY_CHECKPOINT).exists():
            progress.note(f"ignoring {c.run_dir() / LEGACY_CHECKPOINT} (pickle checkpoint of an older version, never opened)")
    runs, datasets = [], {}
    for c in cfgs:
        splits = load_splits(c, datasets)
        runs.append(SeedRun(c, splits, build_task(c, splits)))
    cfg = cfgs[0]
    runner = SeedGroupRunner([r.task.problem for r in runs], [c.resolved_hpo() for c in cfgs],
                             cfgs[0].resolved_conv_batching(), cfgs[0].conv_batching_max,
                             devices=cfg.resolved_seed_devices())
    hpo_cfg = runner.cfg
    gs, seconds_before = _resume(runs, runner, runner.init([r.task.phi0 for r in runs]), progress)

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - t_start

    is_global = hpo_cfg.method == "global"
    steps_per_outer = hpo_cfg.steps if is_global else hpo_cfg.tau
    progress.start(hpo_cfg.outer_steps * steps_per_outer, gs.outer_step * steps_per_outer)
    snap = _Snapshot(gs, tuple(runs), ())
    saved_step, n_run, first_s, t_first_end = gs.outer_step, 0, math.nan, math.nan
    t_flush = time.perf_counter()
    try:
        while not runner.done(snap.gs) and any(r.status == "running" for r in snap.runs):
            t0 = time.perf_counter()
            gs, win = runner.run_window(snap.gs, on_chunk=progress.advance if is_global else None)
            snap = _Snapshot(gs, snap.runs, snap.pending + (win,))
            if not is_global:
                progress.advance(steps_per_outer)
            n_run += 1
            k, done_now = gs.outer_step, runner.done(gs)
            stop_now = stop_after is not None and k >= stop_after and not done_now
            eval_now = bool(cfg.eval_every) and (k % cfg.eval_every == 0 or done_now)
            ckpt_now = bool(cfg.checkpoint_every) and (k % cfg.checkpoint_every == 0 or stop_now)
            if n_run == 1:  # the compiling window, timed to the end
                jax.block_until_ready(gs)
                t_first_end = time.perf_counter()
                first_s = t_first_end - t0
            now = time.perf_counter()
            if (done_now or stop_now or eval_now or ckpt_now or win.estimates is not None or n_run == 1
                    or now - t_flush >= SYNC_SECONDS):
                snap = _Snapshot(gs, _flush(snap, runner, cfg, now - t_flush), ())
                t_flush = time.perf_counter()
                live = [r for r in snap.runs if r.status == "running"] or list(snap.runs)
                last = live[0].rows[-1]
                progress.update({"lr": last.get("lr"), "val_loss": last["val_loss"], "window": k})
                if ckpt_now:
                    _save_group(snap, runner, elapsed())
                    saved_step = k
                if stop_now:
                    return [{"status": "stopped", "outer_step": k} for _ in runs]
    except KeyboardInterrupt:
        if snap.pending:
            snap = _Snapshot(snap.gs, _flush(snap, runner, cfg, time.perf_counter() - t_flush), ())
        if cfg.checkpoint_every and snap.gs.outer_step > saved_step:
            _save_group(snap, runner, elapsed())
            saved_step = snap.gs.outer_step
        where = runs[0].run_dir / CHECKPOINT if len(runs) == 1 else f"the {len(runs)} seeds' folders"
        if saved_step > 0 and (runs[0].run_dir / CHECKPOINT).exists():
            raise Interrupted(f"interrupted at window {saved_step}; checkpoint kept in {where}, "
                              "run the same command again to resume") from None
        raise Interrupted("interrupted before the first checkpoint; nothing to resume") from None

    t_end = time.perf_counter()
    compile_s = math.nan
    if n_run > 2:
        compile_s = max(first_s - (t_end - t_first_end) / (n_run - 1), 0.0)
    wall = seconds_before + t_end - t_start
    # the loop's steady window (this process, after the compiling one): training plus every host-side cost
    window_s = (t_end - t_first_end) / (n_run - 1) if n_run > 1 else math.nan
    seeds = [r.cfg.seed for r in snap.runs]
    return [_finish(r, runner, runner.slice(snap.gs, s), wall, compile_s, window_s, seeds, snap.runs[0].task)
            for s, r in enumerate(snap.runs)]


def _finish(r: SeedRun, runner: SeedGroupRunner, hs: HPOState, wall: float, compile_s: float, window_s: float,
            seeds: List[int], evaluator: Task) -> dict:
    """Write one seed's ``history.csv``, ``dmd.npz`` and ``metrics.json``; remove its checkpoint."""
    status = "complete" if r.status == "running" else r.status
    if status != "complete":
        hs = hs._replace(outer_step=r.outer_steps)
    params = r.task.params_of(hs.inner)
    final_ok = status == "complete"
    nan = {"loss": math.nan, "accuracy": math.nan, "balanced_accuracy": math.nan}
    test = evaluator.evaluate(params, r.splits.test_x, r.splits.test_y) if final_ok else nan
    val = evaluator.evaluate(params, r.splits.val_x, r.splits.val_y) if final_ok else nan
    fallbacks = [row["dmd_reason"] for row in r.rows if row.get("dmd_fallback") == 1]
    metrics = {
        "status": status,
        "failure": r.failure,
        "test_accuracy": test["accuracy"],
        "test_balanced_accuracy": test["balanced_accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "wall_s": wall,
        "compile_s": compile_s,
        "train_s": wall - (compile_s if np.isfinite(compile_s) else 0.0),
        "window_s": window_s,
        "outer_steps": int(hs.outer_step),
        "inner_steps": int(runner.inner_steps_done(hs)),
        "dmd_fallbacks": len(fallbacks),
        "dmd_fallback_reasons": {x: fallbacks.count(x) for x in sorted(set(fallbacks))},
        "dmd_windows": __import__("glocal_cli.windows", fromlist=["*"]).estimate_counts(r.rows),  # one line: train.py is being split
        "hyperparams": r.task.hyperparams(np.asarray(hs.phi)) if final_ok else {},
        "seeds_in_program": seeds,
        "seed_devices": runner.n_devices,
        "device": jax.devices()[0].device_kind,
        "config": r.cfg.to_dict(),
        "provenance": provenance.collect(),
    }
    run_dir = r.run_dir
    atomic.write_text(run_dir / "history.csv", rows_to_csv(r.rows))
    if r.eigs:
        r_max = max(len(e) for e in r.eigs)
        eigs = np.full((len(r.eigs), r_max), np.nan + 0j, np.complex128)
        for i, e in enumerate(r.eigs):
            eigs[i, : len(e)] = e
        arrays = {"eigenvalues": eigs}
        if r.hypergrads:
            arrays["hypergrads"] = np.stack(r.hypergrads)
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
        "provenance": provenance.collect(),
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
