"""Several seeds of one setting trained in one jitted program.

A seed fixes a run's data split, initialization and minibatch order (and
``sgld``'s noise); every other setting is shared. :class:`SeedGroupRunner`
stacks the per-seed inner states, data, hyperparameters and outer-optimizer
states along a leading ``[S]`` axis and advances all seeds by one window with a
single ``jax.vmap``-ed, jitted call: one program, one compilation and one data
load for all seeds. What that buys depends on the device: on an H200 five LeNet
seeds took 2.35× (none), 3.0× (local) and 4.3× (glocal) the window of one with
block-diagonal convolutions (``conv_batching="blockdiag"``, measured with the
batching rule this replaced; 3.5–4.9× with JAX's grouped ones; one seed already keeps
the GPU 85 % busy; docs/performance.md), on a CPU about S×.

* ``none`` / ``local``: the window *and* the outer update are one fused call
  (:func:`fused_window`); nothing comes back to the host, so a caller that does
  not look at the :class:`GroupWindow` never waits for the device.
* ``glocal``: the window is one vmapped call; the estimator (Hankel DMD, NumPy
  on the host) runs per seed on the ``[S, σ, q]`` recorded hypergradients; the
  outer update is a second vmapped call.
* ``global`` / ``sgld``: the seeds run one after the other through
  :class:`~glocal_cli.hpo.HPORunner` (their windows are long or carry per-seed
  noise keys); the group interface is the same.

One seed (``S = 1``) runs the unbatched functions (the axis is dropped inside
the jitted call and restored), so a single run is exactly what it was alone.
A seed whose window is non-finite keeps its φ and outer state (as
:meth:`HPORunner.run_window` does); the caller records it as diverged.

Seeds across devices (none / local / glocal): given several ``devices``, the seed
axis is split over a one-axis :class:`jax.sharding.Mesh` (axis ``"seeds"``): every
``[S, ...]`` array is placed with ``NamedSharding(mesh, PartitionSpec("seeds"))``
and the window runs under :func:`jax.shard_map`, so each device advances its own
block of seeds with the one-device program of that block (no communication
between devices). :func:`seed_layout` chooses how many devices and whether to
pad: each device gets ``k = ceil(S / min(D, S))`` seeds (the fewest any layout
can give it), on as few devices as that needs; when ``S`` is not a multiple of
``k`` the last device's block is filled with copies of the last seed. Padding
seeds cost compute only on a device that would otherwise wait; they appear in no
record a caller reads per seed (:meth:`SeedGroupRunner.slice` ``s < n_seeds``,
``estimates``) and write nothing. One device (the default) is the program above,
unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glocal_cli.estimators import Estimate
from glocal_cli.hpo import HPOConfig, HPORunner, HPOState, InnerProblem, outer_update
from glocal_cli import hypergrad
from glocal_cli.hypergrad import choose_mode
from glocal_cli.models.conv import SEED_AXIS

FUSED_METHODS = ("none", "local", "glocal")  # vmapped over seeds; global / sgld run seed after seed
CONV_BATCHINGS = ("grouped", "blockdiag")  # how the seeds' convolutions (conv_impl="lax") are batched
DEFAULT_CONV_BATCHING_MAX = 8  # the most seeds batched block-diagonally (the kernel grows with the square)
MESH_AXIS = "seeds"  # the device-mesh axis the seed axis is split over


def seed_layout(n_seeds: int, n_devices: int) -> tuple:
    """``(devices used, padded seed count)`` of ``n_seeds`` seeds on at most ``n_devices`` devices.

    Each device gets ``k = ceil(S / min(D, S))`` seeds, the fewest possible (the
    window's time is that of ``k`` seeds on one device), on ``ceil(S / k)`` devices,
    the fewest that give ``k``; the seed axis is padded to ``k`` times that. E.g.
    ``(4, 4) -> (4, 4)``, ``(3, 4) -> (3, 3)``, ``(3, 2) -> (2, 4)``, ``(5, 4) -> (3, 6)``,
    ``(6, 4) -> (3, 6)``, ``(S, 1) -> (1, S)``.
    """
    if n_seeds < 1 or n_devices < 1:
        raise ValueError(f"need at least one seed and one device, got {n_seeds} seeds and {n_devices} devices")
    per_device = -(-n_seeds // min(n_devices, n_seeds))
    used = -(-n_seeds // per_device)
    return used, used * per_device


def stack_trees(trees: Sequence[Any]):
    """Pytrees of equal structure -> one pytree whose leaves have a leading ``[S]`` axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def seed_slice(tree, s: int):
    """The ``s``-th seed of a stacked pytree (leading ``[S]`` axis removed)."""
    return jax.tree_util.tree_map(lambda x: x[s], tree)


def stack_states(states: Sequence[HPOState], outer_step: int) -> HPOState:
    """One :class:`HPOState` per seed -> the group's (leaves ``[S, ...]``) at ``outer_step``; :meth:`SeedGroupRunner.slice` inverts it."""
    return HPOState(*(stack_trees([getattr(st, k) for st in states]) for k in ("inner", "phi", "outer")), outer_step)


def _batched(fn: Callable, n_seeds: int, axis_name: Optional[str] = None) -> Callable:
    """``vmap(fn, axis_name=axis_name)`` over a leading axis of ``n_seeds``; for one seed ``fn`` itself
    (axis dropped and restored, no axis named)."""
    if n_seeds > 1:
        return jax.vmap(fn, axis_name=axis_name)

    def one(*args):
        out = fn(*jax.tree_util.tree_map(lambda x: x[0], args))
        return jax.tree_util.tree_map(lambda x: x[None], out)

    return one


def over_seeds(fn: Callable, n_seeds: int, mesh: Optional[Mesh] = None, axis_name: Optional[str] = None) -> Callable:
    """``jit(vmap(fn, axis_name=axis_name))`` over a leading seed axis of every argument and output.

    For ``n_seeds == 1`` the unbatched ``fn`` runs inside the jitted call (the
    axis is removed from the inputs and restored on the outputs, no axis is named),
    so a single seed computes exactly what ``jit(fn)`` computes.
    ``axis_name=models.conv.SEED_AXIS`` makes the models' ``seed_conv`` batch the
    seeds' convolutions block-diagonally (within each device's block of seeds).

    ``mesh``: a one-axis mesh (axis :data:`MESH_AXIS`) of D devices, ``n_seeds`` a
    multiple of D. Every argument and output is split along its seed axis
    (``NamedSharding(mesh, PartitionSpec("seeds"))``; host arrays are transferred
    so) and each device runs the function above on its ``n_seeds / D`` seeds
    (:func:`jax.shard_map`: no communication between devices).
    """
    if mesh is None:
        return jax.jit(_batched(fn, n_seeds, axis_name))
    n_dev = mesh.devices.size
    if n_seeds % n_dev:
        raise ValueError(f"{n_seeds} seeds do not split evenly over {n_dev} devices (pad them: seed_layout)")
    spec = PartitionSpec(MESH_AXIS)
    # check_vma off: the blocks never communicate, and a scan carry started from constants
    # (zeros) would otherwise have to be marked as varying over the mesh axis by hand.
    body = jax.shard_map(_batched(fn, n_seeds // n_dev, axis_name), mesh=mesh, in_specs=spec, out_specs=spec,
                         check_vma=False)
    sharding = NamedSharding(mesh, spec)
    return jax.jit(body, in_shardings=sharding, out_shardings=sharding)


class GroupStep(NamedTuple):
    """What one window of all seeds produced; every leaf has a leading ``[S]`` axis.

    Device arrays until the caller fetches them (``jax.device_get``).

    Attributes:
      phi: ``[S, q]`` φ used in the window.
      phi_next: ``[S, q]`` φ after the outer update (unchanged where not finite / ``none``).
      hypergrad_local: ``[S, q]`` the last local hypergradient (zeros for ``none``).
      hypergrad_used: ``[S, q]`` what the outer optimizer got.
      val_loss: ``[S]`` validation loss at the window's end (NaN for ``none``).
      finite: ``[S]`` inner state and hypergradient finite.
      hypergrads: ``[S, n_record, q]`` the recorded local hypergradients.
    """

    phi: Any
    phi_next: Any
    hypergrad_local: Any
    hypergrad_used: Any
    val_loss: Any
    finite: Any
    hypergrads: Any


@dataclasses.dataclass
class GroupWindow:
    """One outer step of all seeds: arrays (:class:`GroupStep`) and, for glocal, the per-seed estimates."""

    outer_step: int  # 1-based index of the completed outer step
    step: int  # inner steps done in the current training run
    arrays: GroupStep
    estimates: Optional[List[Estimate]] = None  # glocal: one per seed


def fused_window(problem: InnerProblem, cfg: HPOConfig, tx, q: int) -> Callable:
    """Per-seed ``(inner, phi [q], outer, batches [τ, ...], data) -> (inner, phi, outer, GroupStep)``.

    ``none``: τ plain steps; ``local``: a window recording ``h_τ`` followed by
    the outer update with it; ``glocal``: the window recording the last σ
    hypergradients, *without* the update (the estimator runs on the host).
    Pure; vmap and jit it (:func:`over_seeds`).
    """
    method = cfg.method
    mode = choose_mode(q, cfg.grad_mode)
    n_record = cfg.n_record

    def fn(inner, phi, outer, batches, data):
        if method == "none":
            new, finite = hypergrad.train_window(problem.step, inner, phi, batches, data)
            zeros = jnp.zeros((q,), phi.dtype)
            rec = GroupStep(phi, phi, zeros, zeros, jnp.asarray(jnp.nan, phi.dtype), finite, jnp.zeros((0, q), phi.dtype))
            return new, phi, outer, rec
        if mode == "forward":
            out = hypergrad.forward_window(problem.step, problem.val_loss, inner, phi, batches, n_record, None, data,
                                           cfg.resolved_val_batch(n_record), cfg.resolved_val_grad())
        else:
            out = hypergrad.reverse_window(problem.step, problem.val_loss, inner, phi, batches, n_record, data)
        h = out.hypergrads[-1]
        finite = out.finite & jnp.all(jnp.isfinite(h))
        if method == "glocal":
            rec = GroupStep(phi, phi, h, h, out.val_losses[-1], finite, out.hypergrads)
            return out.state, phi, outer, rec
        phi_next, outer_next = outer_update(tx, phi, outer, h, finite)
        rec = GroupStep(phi, phi_next, h, h, out.val_losses[-1], finite, out.hypergrads)
        return out.state, phi_next, outer_next, rec

    return fn


class SeedGroupRunner:
    """The outer loop of S seeds of one setting, as one program.

    Args:
      problems: one :class:`~glocal_cli.hpo.InnerProblem` per seed. They must
        differ only in ``init_state``, ``data`` and ``batches`` (same model, same
        step function up to its seed-dependent arrays, same shapes): the step
        and validation functions of ``problems[0]`` run for every seed.
      cfgs: the seeds' :class:`HPOConfig` (equal but for ``seed``).
      conv_batching: how the fused window batches the seeds' convolutions
        (``models.conv.seed_conv``, the models' ``conv_impl="lax"``): ``"grouped"``
        (JAX's grouped convolutions) or ``"blockdiag"`` (one ungrouped convolution
        with a block-diagonal kernel: the vmap over seeds is named
        ``models.conv.SEED_AXIS``; ``glocal train`` chooses it on a GPU; 2.35×
        instead of 3.5× one seed's window for five LeNet seeds on an H200).
      conv_batching_max: "blockdiag" only for at most this many seeds per device, else grouped.
      devices: the devices the seed axis is split over (none / local / glocal;
        :func:`seed_layout` says how many are used and whether the seeds are
        padded); None or one device: the default device, today's one program.
        ``glocal train`` passes ``--seed-devices`` (default: every local device).

    With several devices the stacked state and the window's arrays have a leading
    axis of ``n_padded`` (>= ``n_seeds``): rows ``n_seeds ..`` are padding (copies of
    the last seed), for the caller to ignore.

    Example::

        runner = SeedGroupRunner([task.problem for task in tasks], [cfg0, cfg1])
        gs = runner.init([task.phi0 for task in tasks])   # HPOState, leaves [S, ...]
        while not runner.done(gs):
            gs, win = runner.run_window(gs)               # win.arrays.val_loss: [S]
    """

    def __init__(self, problems: Sequence[InnerProblem], cfgs: Sequence[HPOConfig], conv_batching: str = "grouped",
                 conv_batching_max: int = DEFAULT_CONV_BATCHING_MAX, devices: Optional[Sequence[Any]] = None):
        if not problems or len(problems) != len(cfgs):
            raise ValueError(f"need one config per problem, got {len(problems)} problems and {len(cfgs)} configs")
        if conv_batching not in CONV_BATCHINGS:
            raise ValueError(f"conv_batching must be one of {', '.join(CONV_BATCHINGS)}, got {conv_batching!r}")
        strip = lambda c: dataclasses.replace(c, seed=0)  # noqa: E731
        if any(strip(c) != strip(cfgs[0]) for c in cfgs):
            raise ValueError("the seeds of a group must share every setting but the seed")
        ref = jax.tree_util.tree_structure((problems[0].init_state, problems[0].data))
        for p in problems[1:]:
            if jax.tree_util.tree_structure((p.init_state, p.data)) != ref:
                raise ValueError("the seeds' inner states or data differ in structure")
        self.problems = list(problems)
        self.cfgs = list(cfgs)
        self.cfg = cfgs[0]
        self.n_seeds = len(problems)
        first = HPORunner(problems[0], cfgs[0])  # the others share its compiled windows
        self.runners = [first] + [first.with_config(c, p) for p, c in zip(problems[1:], cfgs[1:])]
        self.tx = self.runners[0].tx
        self.estimator = self.runners[0].estimator
        self.fused = self.cfg.method in FUSED_METHODS
        n_dev, self.n_padded = seed_layout(self.n_seeds, len(devices)) if devices and self.fused else (1, self.n_seeds)
        #: the seed mesh (None: one device, no sharding); seeds are padded to n_padded with copies of the last
        self.mesh = Mesh(np.asarray(list(devices)[:n_dev]), (MESH_AXIS,)) if n_dev > 1 else None
        self.sharding = None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec(MESH_AXIS))
        self._pad = np.minimum(np.arange(self.n_padded), self.n_seeds - 1)  # padded row -> seed it copies
        per_device = self.n_padded // n_dev
        blockdiag = conv_batching == "blockdiag" and 1 < per_device <= conv_batching_max
        self.seed_axis = SEED_AXIS if blockdiag else None  # named: seed_conv batches block-diagonally
        self.data = None
        if self.fused and problems[0].data is not None:
            self.data = self.place(stack_trees([p.data for p in problems]))
        self._window = self._update = None

    @property
    def n_devices(self) -> int:
        """Devices the seed axis is split over (1: the default device only)."""
        return 1 if self.mesh is None else int(self.mesh.devices.size)

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

    def _compiled(self, q: int):
        if self._window is None:
            fn = fused_window(self.problems[0], self.cfg, self.tx, q)
            self._window = over_seeds(fn, self.n_padded, self.mesh, self.seed_axis)
            update = lambda phi, outer, h, ok: outer_update(self.tx, phi, outer, h, ok)  # noqa: E731
            self._update = over_seeds(update, self.n_padded, self.mesh)
        return self._window, self._update

    def init(self, phi0s: Sequence[Any]) -> HPOState:
        """Stacked :class:`HPOState` (leaves ``[S, ...]``; ``[n_padded, ...]`` on several devices) from one ``phi0 [q]`` per seed."""
        return self.placed(stack_states([r.init(p) for r, p in zip(self.runners, phi0s)], 0))

    def placed(self, gs: HPOState) -> HPOState:
        """``gs`` (e.g. restacked from checkpoints, leaves ``[S, ...]``) padded and split over the seed mesh (:meth:`place`)."""
        if self.mesh is None:
            return gs
        return HPOState(*self.place((gs.inner, gs.phi, gs.outer)), gs.outer_step)

    def done(self, gs: HPOState) -> bool:
        return self.runners[0].done(gs)

    def inner_steps_done(self, gs: HPOState) -> int:
        return self.runners[0].inner_steps_done(gs)

    def slice(self, gs: HPOState, s: int) -> HPOState:
        """Seed ``s``'s :class:`HPOState`."""
        return HPOState(seed_slice(gs.inner, s), seed_slice(gs.phi, s), seed_slice(gs.outer, s), gs.outer_step)

    def batches(self, start: int, n: int) -> np.ndarray:
        """``[S, n, ...]`` minibatches of every seed for inner steps ``start .. start + n - 1`` (``[n_padded, ...]`` padded)."""
        b = np.stack([np.asarray(p.batches(start, n)) for p in self.problems])
        return b if self.n_padded == self.n_seeds else b[self._pad]

    def run_window(self, gs: HPOState, on_chunk: Optional[Callable[[int], None]] = None):
        """Advance every seed by one outer step. Returns ``(new state, GroupWindow)``.

        For ``none`` / ``local`` nothing is synchronized with the host; ``glocal``
        fetches the ``[S, σ, q]`` recorded hypergradients for its estimator.
        """
        cfg = self.cfg
        if not self.fused:
            return self._sequential(gs, on_chunk)
        gs = self.placed(gs)
        q = gs.phi.shape[-1]
        window, update = self._compiled(q)
        start = gs.outer_step * cfg.tau
        inner, phi, outer, rec = window(gs.inner, gs.phi, gs.outer, self.batches(start, cfg.tau), self.data)
        estimates = None
        if cfg.method == "glocal":
            h_all, finite = jax.device_get((rec.hypergrads, rec.finite))  # one transfer
            h_all = np.asarray(h_all, np.float64)
            estimates = [self.estimator(h_all[s], cfg.steps - start - cfg.tau) for s in range(self.n_seeds)]
            used = np.stack([np.asarray(e.value, np.float64) for e in estimates])  # [S, q], recorded as is
            if self.n_padded > self.n_seeds:  # padding seeds take their seed's estimate (never recorded)
                used = used[self._pad]
            grad = jnp.asarray(np.where(finite[:, None], used, 0.0), gs.phi.dtype)
            phi, outer = update(gs.phi, gs.outer, *self.place((grad, jnp.asarray(finite))))
            rec = rec._replace(phi_next=phi, hypergrad_used=used)
        if on_chunk is not None:
            on_chunk(cfg.tau)
        new = HPOState(inner, phi, outer, gs.outer_step + 1)
        return new, GroupWindow(gs.outer_step + 1, start + cfg.tau, rec, estimates)

    def _sequential(self, gs: HPOState, on_chunk):
        """``global`` / ``sgld``: each seed's :meth:`HPORunner.run_window`, restacked."""
        states, recs = [], []
        for s, r in enumerate(self.runners):
            new, rec = r.run_window(self.slice(gs, s), on_chunk if s == 0 else None)
            states.append(new)
            recs.append(rec)
        q = gs.phi.shape[-1]
        n_rec = max(len(r.hypergrads) for r in recs)

        def padded(h):
            h = np.asarray(h, np.float64).reshape(-1, q)
            return np.concatenate([np.full((n_rec - len(h), q), np.nan), h]) if len(h) < n_rec else h

        arrays = GroupStep(
            phi=np.stack([r.phi for r in recs]),
            phi_next=np.stack([np.asarray(st.phi, np.float64) for st in states]),
            hypergrad_local=np.stack([r.hypergrad_local for r in recs]),
            hypergrad_used=np.stack([r.hypergrad_used for r in recs]),
            val_loss=np.array([r.val_loss for r in recs]),
            finite=np.array([r.finite for r in recs]),
            hypergrads=np.stack([padded(r.hypergrads) for r in recs]),
        )
        return stack_states(states, gs.outer_step + 1), GroupWindow(gs.outer_step + 1, recs[0].step, arrays, None)
