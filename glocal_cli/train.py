"""One training run with HPO: the seeds' data and tasks, the window loop, evaluation and outputs.

Outputs in the run directory (all written atomically):

* ``metrics.json``: status (``complete``, ``diverged``, or ``collapsed`` when the
  task's health check fails, e.g. a meta MLP whose weights all fell to ~0), final test / validation
  accuracy and loss, wall, compile and training time, the mean steady window time
  (``window_s``: after the compiling window, host work included), DMD fallbacks, final
  hyperparameters, the seeds trained in the same program (``seeds_in_program``) and the
  devices they were split over (``seed_devices``), the backend choices resolved once at the
  run's start (``runtime``, :mod:`glocal_cli.runtime`), the config;
* ``history.csv``: one row a window (outer step): φ and the hyperparameter
  values, local and used hypergradient, validation loss, test accuracy every
  ``eval_every`` windows; for glocal the estimator's diagnostics (estimator,
  selected eigenvalues and their number, spectral radius, rank, residual,
  norm of the discarded imaginary part, fallback and its reason);
* ``dmd.npz``: per-window DMD eigenvalues and recorded local hypergradients
  (glocal, ``q <= 32``), for the eigenvalue figure;
* ``checkpoint.json`` + ``checkpoint.<step>.npz`` while the run is in progress
  (:mod:`glocal_cli.checkpoint`): a killed run started again with the same config
  under the same runtime resumes from it and ends with the same result as an
  uninterrupted run.
* ``.glocal.lock``: held while a run writes the folder (a second run refuses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import time
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Sequence

import jax
import numpy as np

from glocal_cli import atomic, provenance
from glocal_cli.checkpoint import (CHECKPOINT, LEGACY_CHECKPOINT, CheckpointRejected, load_checkpoint,
                                   remove_checkpoint, save_checkpoint)
from glocal_cli.config import TrainConfig
from glocal_cli.data import load_dataset
from glocal_cli.data.imbalance import make_long_tailed
from glocal_cli.data.splits import Splits, make_splits, splits_from_indices
from glocal_cli.errors import Interrupted, UserError
from glocal_cli.history import history_row, rows_to_csv
from glocal_cli.hpo import HPOState
from glocal_cli.methods import WindowRecord
from glocal_cli.runner import SeedGroupRunner
from glocal_cli.runtime import Runtime
from glocal_cli.runtime import resolve as resolve_runtime
from glocal_cli.seeds import stack_states
from glocal_cli.settings import parse_list
from glocal_cli.tasks import Task, build_task
from glocal_cli.windows import estimate_counts

LOCK = ".glocal.lock"


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
    directory. Every method runs all seeds as one vmapped, jitted window
    (:class:`~glocal_cli.runner.SeedGroupRunner`; global: each chunk of its retraining).
    Every seed's folder gets exactly the outputs of a
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
    windows since (:class:`~glocal_cli.methods.WindowRecord`, leaves ``[S, ...]``), still on the device.
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
            found.append(load_checkpoint(r.run_dir, r.cfg, runner.runtime, runner.slice(gs, s)))
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


def _record_window(r: SeedRun, rec: WindowRecord, next_phi, test_acc: Optional[float], keep_hg: bool) -> None:
    """Append one seed's window to its history; a non-finite window makes it ``diverged``, a φ that fails
    the task's health check ``collapsed`` (its rows stop there)."""
    hp = r.task.hyperparams(rec.phi) if rec.finite else {}
    r.rows.append(atomic.plain(history_row(rec, hp, test_acc)))
    if rec.dmd is not None:
        r.eigs.append(np.asarray(rec.dmd.eigenvalues))
        if keep_hg:
            r.hypergrads.append(rec.hypergrads)
    if not rec.finite:
        r.status, r.outer_steps = "diverged", rec.outer_step
        r.failure = f"non-finite parameters or hypergradient at outer step {rec.outer_step} (inner step {rec.step})"
        return
    unhealthy = r.task.health(np.asarray(next_phi)) if r.task.health is not None else ""
    if unhealthy:  # e.g. a collapsed meta MLP: a failure status, never a result
        r.status, r.outer_steps = "collapsed", rec.outer_step
        r.failure = f"{unhealthy} (after outer step {rec.outer_step}, inner step {rec.step})"


def _flush(snap: _Snapshot, runner: SeedGroupRunner, cfg: TrainConfig, seconds: float) -> tuple:
    """The seeds' records with the pending windows added (fetched from the device in one transfer).

    The test set is evaluated when the last pending window is an evaluation window.
    """
    host = jax.device_get(snap.pending)
    runs = [r.copy() for r in snap.runs]
    n_outer = runner.cfg.outer_steps
    per_window = seconds / max(len(snap.pending), 1)
    keep_hg = runner.method.name == "glocal" and snap.gs.phi.shape[-1] <= 32
    for i, win in enumerate(host):
        last_pending = i == len(host) - 1
        evaluate = last_pending and cfg.eval_every and (win.outer_step % cfg.eval_every == 0 or win.outer_step == n_outer)
        for s, r in enumerate(runs):
            if r.status != "running":
                continue
            rec = win.seed(s)._replace(seconds=per_window)
            test_acc = None
            if rec.finite and evaluate:
                params = r.task.params_of(runner.slice(snap.gs, s).inner)
                test_acc = runs[0].task.evaluate(params, r.splits.test_x, r.splits.test_y)["accuracy"]
            _record_window(r, rec, rec.phi_next, test_acc, keep_hg)
    return tuple(runs)


def _save_group(snap: _Snapshot, runner: SeedGroupRunner, seconds: float) -> None:
    seeds = [r.cfg.seed for r in snap.runs]
    for s, r in enumerate(snap.runs):
        save_checkpoint(r.run_dir, runner.slice(snap.gs, s), r.cfg, runner.runtime, r.rows, r.eigs, r.hypergrads,
                        seconds, group=r.group_info(seeds))


def _build_group(cfgs: List[TrainConfig], progress: Progress):
    """``(runs, runner)``: each seed's data and task, and the group's runner under one resolved runtime."""
    for c in cfgs:
        if (c.run_dir() / LEGACY_CHECKPOINT).exists():
            progress.note(f"ignoring {c.run_dir() / LEGACY_CHECKPOINT} (pickle checkpoint of an older version, never opened)")
    runtime = resolve_runtime(cfgs[0].resolved_hpo(), cfgs[0])
    runs, datasets = [], {}
    for c in cfgs:
        splits = load_splits(c, datasets)
        runs.append(SeedRun(c, splits, build_task(c, splits, runtime)))
    return runs, make_runner(cfgs, [r.task.problem for r in runs], runtime)


def make_runner(cfgs: Sequence[TrainConfig], problems: Sequence, runtime: Runtime) -> SeedGroupRunner:
    """The runner of a group of seeds (``cfgs``, one problem each) under ``runtime``: what ``glocal train``
    runs, and what ``glocal bench`` times (it builds its runners here too)."""
    cfg = cfgs[0]
    return SeedGroupRunner(list(problems), [c.resolved_hpo() for c in cfgs], conv_batching_max=cfg.conv_batching_max,
                           devices=cfg.resolved_seed_devices(), runtime=runtime)


class _Clock:
    """The loop's times: the compiling first window, the steady windows after it, the time before a resume."""

    def __init__(self, before: float):
        self.start, self.before, self.n_run = time.perf_counter(), before, 0
        self.first_s = self.first_end = math.nan

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start

    def window_done(self, gs, t0: float) -> None:
        self.n_run += 1
        if self.n_run == 1:  # the compiling window, timed to the end
            jax.block_until_ready(gs)
            self.first_end = time.perf_counter()
            self.first_s = self.first_end - t0

    def summary(self) -> dict:
        """``wall_s``, ``compile_s`` (the first window less a steady one) and ``window_s`` (the steady window)."""
        end = time.perf_counter()
        n = self.n_run
        compile_s = max(self.first_s - (end - self.first_end) / (n - 1), 0.0) if n > 2 else math.nan
        window_s = (end - self.first_end) / (n - 1) if n > 1 else math.nan
        return {"wall_s": self.before + end - self.start, "compile_s": compile_s, "window_s": window_s}


def _interrupted(snap: _Snapshot, runner: SeedGroupRunner, cfg: TrainConfig, clock: _Clock, t_flush: float,
                 saved_step: int, runs: List[SeedRun]) -> Interrupted:
    """On Ctrl-C: flush and checkpoint what is done; the one-line :class:`Interrupted` to raise."""
    if snap.pending:
        snap = _Snapshot(snap.gs, _flush(snap, runner, cfg, time.perf_counter() - t_flush), ())
    if cfg.checkpoint_every and snap.gs.outer_step > saved_step:
        _save_group(snap, runner, clock.elapsed())
        saved_step = snap.gs.outer_step
    where = runs[0].run_dir / CHECKPOINT if len(runs) == 1 else f"the {len(runs)} seeds' folders"
    if saved_step > 0 and (runs[0].run_dir / CHECKPOINT).exists():
        return Interrupted(f"interrupted at window {saved_step}; checkpoint kept in {where}, "
                           "run the same command again to resume")
    return Interrupted("interrupted before the first checkpoint; nothing to resume")


def _run_group(cfgs: List[TrainConfig], progress: Progress, stop_after: Optional[int]) -> List[dict]:
    prov = provenance.collect()  # the code this process loaded: the checkout may move on while it trains
    runs, runner = _build_group(cfgs, progress)
    cfg = cfgs[0]
    gs, seconds_before = _resume(runs, runner, runner.init([r.task.phi0 for r in runs]), progress)
    clock = _Clock(seconds_before)
    per_outer = runner.method.steps_per_outer
    progress.start(runner.cfg.outer_steps * per_outer, gs.outer_step * per_outer)
    snap = _Snapshot(gs, tuple(runs), ())
    saved_step, t_flush = gs.outer_step, time.perf_counter()
    try:
        while not runner.done(snap.gs) and any(r.status == "running" for r in snap.runs):
            t0 = time.perf_counter()
            chunks = []  # inner steps a host loop reported inside the window (global's retraining)
            gs, win = runner.run_window(snap.gs, on_chunk=lambda n: (chunks.append(n), progress.advance(n)))
            snap = _Snapshot(gs, snap.runs, snap.pending + (win,))
            progress.advance(per_outer - sum(chunks))
            clock.window_done(gs, t0)
            k, done_now = gs.outer_step, runner.done(gs)
            stop_now = stop_after is not None and k >= stop_after and not done_now
            ckpt_now = bool(cfg.checkpoint_every) and (k % cfg.checkpoint_every == 0 or stop_now)
            if _flush_now(cfg, k, done_now, stop_now or ckpt_now, win, clock, t_flush):
                snap = _Snapshot(gs, _flush(snap, runner, cfg, time.perf_counter() - t_flush), ())
                t_flush = time.perf_counter()
                live = [r for r in snap.runs if r.status == "running"] or list(snap.runs)
                last = live[0].rows[-1]
                progress.update({"lr": last.get("lr"), "val_loss": last["val_loss"], "window": k})
                if ckpt_now:
                    _save_group(snap, runner, clock.elapsed())
                    saved_step = k
                if stop_now:
                    return [{"status": "stopped", "outer_step": k} for _ in runs]
    except KeyboardInterrupt:
        raise _interrupted(snap, runner, cfg, clock, t_flush, saved_step, runs) from None
    times = clock.summary()
    seeds = [r.cfg.seed for r in snap.runs]
    return [_finish(r, runner, runner.slice(snap.gs, s), times, seeds, snap.runs[0].task, prov)
            for s, r in enumerate(snap.runs)]


def _flush_now(cfg: TrainConfig, k: int, done: bool, save: bool, win: WindowRecord, clock: _Clock,
               t_flush: float) -> bool:
    """Whether the loop fetches the pending windows now: at the end, before a checkpoint or a stop, at an
    evaluation window, after a host step (its record is on the host already), after the compiling window,
    or when the records (progress) lag more than :data:`SYNC_SECONDS`."""
    evaluate = bool(cfg.eval_every) and (k % cfg.eval_every == 0 or done)
    return (done or save or evaluate or win.dmd is not None or clock.n_run == 1
            or time.perf_counter() - t_flush >= SYNC_SECONDS)


def _finish(r: SeedRun, runner: SeedGroupRunner, hs: HPOState, times: dict, seeds: List[int], evaluator: Task,
            prov: dict) -> dict:
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
    compile_s = times["compile_s"]
    metrics = {
        "status": status,
        "failure": r.failure,
        "test_accuracy": test["accuracy"],
        "test_balanced_accuracy": test["balanced_accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "wall_s": times["wall_s"],
        "compile_s": compile_s,
        "train_s": times["wall_s"] - (compile_s if np.isfinite(compile_s) else 0.0),
        "window_s": times["window_s"],  # the loop's steady window (after the compiling one), host work included
        "outer_steps": int(hs.outer_step),
        "inner_steps": int(runner.inner_steps_done(hs)),
        "dmd_fallbacks": len(fallbacks),
        "dmd_fallback_reasons": {x: fallbacks.count(x) for x in sorted(set(fallbacks))},
        "dmd_windows": estimate_counts(r.rows),  # how each window's estimate was made (tol / nearest / fallback ...)
        "hyperparams": r.task.hyperparams(np.asarray(hs.phi)) if final_ok else {},
        "seeds_in_program": seeds,
        "seed_devices": runner.n_devices,
        "device": jax.devices()[0].device_kind,
        "runtime": runner.runtime.to_dict(),
        "config": r.cfg.to_dict(),
        "provenance": prov,
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
