"""The one window path: a method's window over the seeds of a group; a single run is a group of one.

:class:`SeedGroupRunner` advances S seeds of one setting (problems that differ only in
``init_state``, ``data`` and ``batches``) by one outer step: the method's device-side
window (:meth:`~glocal_cli.methods.Method.window`) runs as one ``jax.vmap``-ed (and, on
several devices, ``shard_map``-ed) jitted program over the stacked seeds
(:func:`~glocal_cli.seeds.over_seeds`), then the method's optional host step (glocal's
estimator, global's retraining loop). ``glocal train``, ``glocal bench`` and ``glocal
verify`` all run this path; :class:`HPORunner` is the same runner for one seed with
per-seed states and records.

The compiled programs are cached by their static arguments (the method, which compares
by its functions and settings, the seed count and the device mesh), so runners built on
the same problem share them without patching each other.

Example::

    runner = SeedGroupRunner([task.problem for task in tasks], [cfg0, cfg1])
    gs = runner.init([task.phi0 for task in tasks])   # HPOState, leaves [S, ...]
    while not runner.done(gs):
        gs, rec = runner.run_window(gs)               # rec.val_loss: [S]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glocal_cli.hpo import HPOConfig, HPOState, InnerProblem
from glocal_cli.methods import Carry, HypergradToEnd, Method, WindowRecord, chunk_fn, make_method, tangents_to_end
from glocal_cli.models.conv import SEED_AXIS
from glocal_cli.runtime import Runtime, resolve
from glocal_cli.seeds import (CONV_BATCHINGS, DEFAULT_CONV_BATCHING_MAX, MESH_AXIS, over_seeds, seed_layout,
                              slice_state, stack_states, stack_trees)


@functools.lru_cache(maxsize=128)
def _program(key: tuple, n_seeds: int, mesh: Optional[Mesh], axis_name: Optional[str]) -> Callable:
    """:func:`~glocal_cli.seeds.over_seeds` of the function ``key`` names, one compiled function per static arguments."""
    owner, fn = key
    return over_seeds(fn if owner is None else fn.__get__(owner), n_seeds, mesh, axis_name)


def _key(fn: Callable) -> tuple:
    """A cache key of ``fn`` that compares a bound method by its object's value (Python compares a bound
    method's object by identity): ``(object, function)``, or ``(None, fn)``."""
    owner = getattr(fn, "__self__", None)
    return (None, fn) if owner is None else (owner, fn.__func__)


class SeedGroupRunner:
    """The outer loop of S seeds of one setting, as one program.

    Args:
      problems: one :class:`~glocal_cli.hpo.InnerProblem` per seed. They must differ only
        in ``init_state``, ``data`` and ``batches`` (same model, same step function up to
        its seed-dependent arrays, same shapes): the step and validation functions of
        ``problems[0]`` run for every seed.
      cfgs: the seeds' :class:`HPOConfig` (equal but for ``seed``).
      conv_batching: how the window batches the seeds' convolutions
        (``models.conv.seed_conv``, the models' ``conv_impl="lax"``): ``"grouped"``
        (JAX's grouped convolutions) or ``"blockdiag"`` (one ungrouped convolution with a
        block-diagonal kernel: the vmap over seeds is named ``models.conv.SEED_AXIS``).
        Default: ``runtime.conv_batching``.
      conv_batching_max: "blockdiag" only for at most this many seeds per device, else grouped.
      devices: the devices the seed axis is split over (:func:`~glocal_cli.seeds.seed_layout`
        says how many are used and whether the seeds are padded); None or one device:
        the default device, one program.
      runtime: the resolved backend choices (:mod:`glocal_cli.runtime`); default: resolved
        from ``cfgs[0]`` on the default backend.

    With several devices the stacked state and the records have a leading axis of
    ``n_padded`` (>= ``n_seeds``): rows ``n_seeds ..`` are padding (copies of the last
    seed), for the caller to ignore.
    """

    def __init__(self, problems: Sequence[InnerProblem], cfgs: Sequence[HPOConfig],
                 conv_batching: Optional[str] = None, conv_batching_max: int = DEFAULT_CONV_BATCHING_MAX,
                 devices: Optional[Sequence[Any]] = None, runtime: Optional[Runtime] = None):
        if not problems or len(problems) != len(cfgs):
            raise ValueError(f"need one config per problem, got {len(problems)} problems and {len(cfgs)} configs")
        strip = lambda c: dataclasses.replace(c, seed=0)  # noqa: E731
        if any(strip(c) != strip(cfgs[0]) for c in cfgs):
            raise ValueError("the seeds of a group must share every setting but the seed")
        ref = jax.tree_util.tree_structure((problems[0].init_state, problems[0].data))
        for p in problems[1:]:
            if jax.tree_util.tree_structure((p.init_state, p.data)) != ref:
                raise ValueError("the seeds' inner states or data differ in structure")
        self.problems, self.cfgs, self.cfg = list(problems), list(cfgs), cfgs[0]
        self.runtime = runtime or resolve(self.cfg)
        conv_batching = conv_batching or self.runtime.conv_batching
        if conv_batching not in CONV_BATCHINGS:
            raise ValueError(f"conv_batching must be one of {', '.join(CONV_BATCHINGS)}, got {conv_batching!r}")
        self.method: Method = make_method(problems[0], self.cfg, self.runtime)
        self.n_seeds = len(problems)
        n_dev, self.n_padded = seed_layout(self.n_seeds, len(devices)) if devices else (1, self.n_seeds)
        #: the seed mesh (None: one device, no sharding); seeds are padded to n_padded with copies of the last
        self.mesh = Mesh(np.asarray(list(devices)[:n_dev]), (MESH_AXIS,)) if n_dev > 1 else None
        self.sharding = None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec(MESH_AXIS))
        self._pad = np.minimum(np.arange(self.n_padded), self.n_seeds - 1)  # padded row -> seed it copies
        blockdiag = conv_batching == "blockdiag" and 1 < self.n_padded // n_dev <= conv_batching_max
        self.seed_axis = SEED_AXIS if blockdiag else None  # named: seed_conv batches block-diagonally
        data = problems[0].data
        self.data = None if data is None else self.place(stack_trees([p.data for p in problems]))

    # ------------------------------------------------------------------ layout

    @property
    def n_devices(self) -> int:
        """Devices the seed axis is split over (1: the default device only)."""
        return 1 if self.mesh is None else int(self.mesh.devices.size)

    @property
    def tx(self):
        return self.method.tx

    def pad(self, x):
        """``[S, ...]`` -> ``[n_padded, ...]`` (rows past S copy the last seed); the identity without padding."""
        return x if self.n_padded == self.n_seeds else x[self._pad]

    def place(self, tree):
        """A pytree of ``[S, ...]`` (or already ``[n_padded, ...]``) arrays padded and split over the seed mesh.

        The identity without a mesh; a no-op for arrays already placed.
        """
        if self.mesh is None:
            return tree

        def pad(x):
            x = x if isinstance(x, jax.Array) else np.asarray(x)
            if x.shape[0] == self.n_padded:
                return x
            if x.shape[0] != self.n_seeds:
                raise ValueError(f"leading axis {x.shape[0]}, expected {self.n_seeds} seeds")
            return x[self._pad]

        return jax.device_put(jax.tree_util.tree_map(pad, tree), self.sharding)

    def placed(self, gs: HPOState) -> HPOState:
        """``gs`` (e.g. restacked from checkpoints, leaves ``[S, ...]``) padded and split over the seed mesh."""
        if self.mesh is None:
            return gs
        inner, phi, outer, aux = self.place((gs.inner, gs.phi, gs.outer, gs.aux))
        return HPOState(inner, phi, outer, gs.outer_step, aux)

    def program(self, fn: Callable, seed_axis: bool = False) -> Callable:
        """``fn`` (per seed, pure) compiled over the group's seeds (vmapped; sharded on a mesh).

        ``seed_axis``: name the vmap :data:`~glocal_cli.models.conv.SEED_AXIS` when the
        group batches its convolutions block-diagonally (the windows that train the model).
        """
        return _program(_key(fn), self.n_padded, self.mesh, self.seed_axis if seed_axis else None)

    def batches(self, start: int, n: int) -> np.ndarray:
        """``[S, n, ...]`` minibatches of every seed for inner steps ``start .. start + n - 1`` (``[n_padded, ...]`` padded)."""
        return self.pad(np.stack([np.asarray(p.batches(start, n)) for p in self.problems]))

    def inputs(self, outer_step: int):
        """The window's host inputs of every seed (:meth:`~glocal_cli.methods.Method.inputs`), stacked and padded."""
        per_seed = [self.method.inputs(p, c, outer_step) for p, c in zip(self.problems, self.cfgs)]
        return jax.tree_util.tree_map(lambda *xs: self.pad(np.stack([np.asarray(x) for x in xs])), *per_seed)

    # ------------------------------------------------------------------ the loop

    def init(self, phi0s: Sequence[Any]) -> HPOState:
        """Stacked :class:`HPOState` (leaves ``[S, ...]``; ``[n_padded, ...]`` on several devices) from one ``phi0 [q]`` per seed."""
        states = []
        for p, phi0 in zip(self.problems, phi0s):
            phi = jnp.asarray(phi0, dtype=jax.tree_util.tree_leaves(p.init_state)[0].dtype)
            states.append(HPOState(p.init_state, phi, self.tx.init(phi), 0, self.method.init_aux(p, phi)))
        return self.placed(stack_states(states, 0))

    def done(self, gs: HPOState) -> bool:
        return gs.outer_step >= self.cfg.outer_steps

    def inner_steps_done(self, gs: HPOState) -> int:
        return self.method.steps_done(gs.outer_step)

    def slice(self, gs: HPOState, s: int) -> HPOState:
        """Seed ``s``'s :class:`HPOState`."""
        return slice_state(gs, s)

    def run_window(self, gs: HPOState, on_chunk: Optional[Callable[[int], None]] = None):
        """Advance every seed by one outer step. Returns ``(new state, WindowRecord)`` (leaves ``[S, ...]``).

        Nothing is synchronized with the host unless the method has a host step (glocal
        fetches the ``[S, σ, q]`` recorded hypergradients for its estimator). ``on_chunk(n)``
        is called after each chunk of ``n`` inner steps that a host loop runs (global's
        retraining: progress within a long outer step); a device window reports nothing.
        """
        gs = self.placed(gs)
        m = self.method
        carry = Carry(gs.inner, gs.phi, gs.outer, gs.aux)
        meta = dict(outer_step=gs.outer_step + 1, step=m.steps_done(gs.outer_step + 1))
        rec = None
        if m.window is not None:
            carry, rec = self.program(m.window, seed_axis=True)(carry, self.inputs(gs.outer_step), self.data)
            rec = rec._replace(**meta)
        if m.host is not None:
            carry, rec = m.host(self, carry, rec, on_chunk)
            rec = rec._replace(**meta)
        return HPOState(carry.inner, carry.phi, carry.outer, gs.outer_step + 1, carry.aux), rec

    def tangents_to_end(self, gs_inner, phi, start: int, **kw) -> HypergradToEnd:
        """:func:`~glocal_cli.methods.tangents_to_end` for this group (leading ``[S]`` axes)."""
        return tangents_to_end(self, gs_inner, phi, start, **kw)


class HPORunner:
    """The outer loop of one method on one :class:`InnerProblem`: a :class:`SeedGroupRunner` of one seed.

    Holds only immutable configuration; the evolving state is the :class:`HPOState`
    passed in and returned (per seed, no seed axis). The outer optimizer is
    ``cfg.outer_optimizer`` (a name or any ``optax.GradientTransformation``).

    Example::

        runner = HPORunner(problem, HPOConfig(method="glocal", steps=200, tau=20, sigma=10, m=4))
        hs = runner.init(phi0)                   # phi0: [q]
        while not runner.done(hs):
            hs, record = runner.run_window(hs)   # record.hypergrad_used: [q]
    """

    def __init__(self, problem: InnerProblem, cfg: HPOConfig, runtime: Optional[Runtime] = None):
        self.problem, self.cfg = problem, cfg
        self.group = SeedGroupRunner([problem], [cfg], runtime=runtime)
        self.runtime, self.method = self.group.runtime, self.group.method

    @property
    def tx(self):
        return self.method.tx

    @property
    def estimator(self):
        """glocal's estimator ``(h [σ, q], steps_left) -> Estimate`` (None for the other methods)."""
        return getattr(self.method, "estimator", None)

    def with_config(self, cfg: HPOConfig, problem: Optional[InnerProblem] = None) -> "HPORunner":
        """A runner with another config and / or problem (another seed's ``init_state``, ``data`` or
        ``batches``) under the same runtime; it shares every compiled program that does not depend on them."""
        return HPORunner(self.problem if problem is None else problem, cfg, self.runtime)

    def init(self, phi0) -> HPOState:
        """Outer state at the start of a run from ``phi0 [q]``."""
        return slice_state(self.group.init([phi0]), 0)

    def done(self, hs: HPOState) -> bool:
        return self.group.done(hs)

    def inner_steps_done(self, hs: HPOState) -> int:
        return self.group.inner_steps_done(hs)

    def run_window(self, hs: HPOState, on_chunk: Optional[Callable[[int], None]] = None):
        """Advance by one outer step. Returns ``(new HPOState, WindowRecord)`` (host NumPy record)."""
        gs, rec = self.group.run_window(stack_states([hs], hs.outer_step), on_chunk)
        return slice_state(gs, 0), rec.seed(0)

    def window_fn(self, n_record: int, mode: str = "forward") -> Callable:
        """The jitted window ``(state, phi [q], batches [τ, ...], data, tangents=None) -> WindowOutput``
        recording the last ``n_record`` local hypergradients (``hypergrads [n_record, q]``)."""
        return _single(chunk_fn(self.method, n_record, mode))

    def hypergrad_to_end(self, inner, phi, start: int, on_chunk: Optional[Callable[[int], None]] = None,
                         record=None, on_record: Optional[Callable[[int, np.ndarray], None]] = None) -> HypergradToEnd:
        """``h_T`` from ``inner`` at inner step ``start`` with φ fixed (:func:`~glocal_cli.methods.tangents_to_end`
        for one seed): ``(state, hypergrads [1, q], val_loss, finite, steps_done)``; ``on_record(k, h [n, q])``."""
        stacked = stack_trees([inner]), jnp.asarray(phi)[None]
        per_seed = None if on_record is None else (lambda k, h: on_record(k, h[0]))
        end = self.group.tangents_to_end(*stacked, start, on_chunk=on_chunk, record=record, on_record=per_seed)
        val = float(end.val_loss[0])
        return HypergradToEnd(jax.tree_util.tree_map(lambda x: x[0], end.state), end.hypergrads[0], val,
                              bool(end.finite[0]), end.steps_done)


@functools.lru_cache(maxsize=128)
def _single(fn: Callable) -> Callable:
    return jax.jit(fn)


def run(problem: InnerProblem, cfg: HPOConfig, phi0) -> tuple[HPOState, List[WindowRecord]]:
    """Run a whole method to the end (no checkpoints); stops at the first non-finite window."""
    runner = HPORunner(problem, cfg)
    hs = runner.init(phi0)
    records: List[WindowRecord] = []
    while not runner.done(hs):
        hs, rec = runner.run_window(hs)
        records.append(rec)
        if not rec.finite:
            break
    return hs, records
