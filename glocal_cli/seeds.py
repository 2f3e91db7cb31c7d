"""The seed axis: stacking, slicing and splitting the seeds of one setting over devices.

A seed fixes a run's data split, initialization and minibatch order (and
``sgld``'s noise); every other setting is shared. :class:`~glocal_cli.runner.SeedGroupRunner`
stacks the per-seed inner states, data, hyperparameters and outer-optimizer states
along a leading ``[S]`` axis and advances all seeds by one window with a single
``jax.vmap``-ed, jitted call (:func:`over_seeds`): one program, one compilation and one
data load for all seeds. What that buys depends on the device: on an H200 five LeNet
seeds took 2.35× (none), 3.0× (local) and 4.3× (glocal) the window of one with
block-diagonal convolutions (``conv_batching="blockdiag"``, measured with the
batching rule this replaced; 3.5–4.9× with JAX's grouped ones; one seed already keeps
the GPU 85 % busy; docs/performance.md), on a CPU about S×.

One seed (``S = 1``) runs the unbatched function (the axis is dropped inside
the jitted call and restored), so a single run is exactly what it was alone.

Seeds across devices: given several devices, the seed axis is split over a one-axis
:class:`jax.sharding.Mesh` (axis ``"seeds"``): every ``[S, ...]`` array is placed with
``NamedSharding(mesh, PartitionSpec("seeds"))`` and the window runs under
:func:`jax.shard_map`, so each device advances its own block of seeds with the
one-device program of that block (no communication between devices).
:func:`seed_layout` chooses how many devices and whether to pad: each device gets
``k = ceil(S / min(D, S))`` seeds (the fewest any layout can give it), on as few devices
as that needs; when ``S`` is not a multiple of ``k`` the last device's block is filled
with copies of the last seed. Padding seeds cost compute only on a device that would
otherwise wait; they appear in no record a caller reads per seed and write nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glocal_cli.hpo import HPOState

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
    """One :class:`HPOState` per seed -> the group's (leaves ``[S, ...]``) at ``outer_step``; :func:`slice_state` inverts it."""
    return HPOState(*(stack_trees([getattr(st, k) for st in states]) for k in ("inner", "phi", "outer")), outer_step,
                    stack_trees([st.aux for st in states]))


def slice_state(gs: HPOState, s: int) -> HPOState:
    """Seed ``s``'s :class:`HPOState` of a stacked one (:func:`stack_states` inverted)."""
    return HPOState(seed_slice(gs.inner, s), seed_slice(gs.phi, s), seed_slice(gs.outer, s), gs.outer_step,
                    seed_slice(gs.aux, s))


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
